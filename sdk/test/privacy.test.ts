import { afterEach, describe, expect, test, vi } from 'vitest';
import { createSightflow } from '../src/client';
import { alwaysMasked, DEFAULT_BLOCK, DEFAULT_MASK_TEXT, maskInputFn } from '../src/privacy';
import type { Options, Sightflow } from '../src/types';
import { MemStorage, scriptedFetch } from './helpers';
import { rr } from './rrweb-mock';

vi.mock('@rrweb/record', async () => (await import('./rrweb-mock')).rrwebModule());
vi.mock('web-vitals', async () => (await import('./rrweb-mock')).vitalsModule());

const live: Sightflow[] = [];
afterEach(() => live.splice(0).forEach((s) => s.stop()));

/** The options the client hands to rrweb's `record`. */
function recordOptions(extra: Partial<Options> = {}) {
  rr.reset();
  const sf = createSightflow();
  live.push(sf);
  sf.init({
    projectKey: 'pk',
    fetch: scriptedFetch().fetch,
    indexedDB: null,
    localStorage: new MemStorage(),
    sessionStorage: new MemStorage(),
    ...extra,
  });
  return rr.opts;
}

function el(html: string): HTMLElement {
  const d = document.createElement('div');
  d.innerHTML = html;
  document.body.appendChild(d);
  return d.firstElementChild as HTMLElement;
}

describe('record options', () => {
  test('defaults: every input masked, passwords too, default mask and block selectors, no canvas or fonts', () => {
    const o = recordOptions();
    expect(o.maskAllInputs).toBe(true);
    expect(o.maskInputOptions).toEqual({ password: true });
    expect(o.maskTextSelector).toBe(DEFAULT_MASK_TEXT + ', [contenteditable]:not([contenteditable="false"])');
    expect(o.blockSelector).toBe(DEFAULT_BLOCK);
    expect(o.recordCanvas).toBe(false);
    expect(o.collectFonts).toBe(false);
    expect(o.inlineImages).toBe(false);
    expect(o.sampling).toEqual({ mousemove: 50, scroll: 150, input: 'last' });
    expect(o.slimDOMOptions).toBe(true);
    expect(o.recordAfter).toBe('DOMContentLoaded');
    expect(typeof o.maskInputFn).toBe('function');
    expect(typeof o.emit).toBe('function');
  });

  test('configured selectors replace the defaults', () => {
    const o = recordOptions({ maskTextSelector: '.pii', blockSelector: '#chat', recordCanvas: true });
    expect(o.maskTextSelector).toBe('.pii, [contenteditable]:not([contenteditable="false"])');
    expect(o.blockSelector).toBe('#chat');
    expect(o.recordCanvas).toBe(true);
  });

  test('maskAllInputs: false still masks passwords (rrweb then uses maskInputOptions)', () => {
    const o = recordOptions({ maskAllInputs: false, unmaskInputSelector: '*' });
    expect(o.maskAllInputs).toBe(false);
    expect(o.maskInputOptions).toEqual({ password: true });
    expect(o.maskTextSelector).toBe(DEFAULT_MASK_TEXT);
    expect(o.maskInputFn('hunter2', el('<input type="password" class="x">'))).toBe('*******');
  });

  test('the maskInputFn handed to rrweb unmasks only the opted-in, non-password fields', () => {
    const fn = recordOptions({ unmaskInputSelector: '.sf-unmask, [name=q]' }).maskInputFn;
    expect(fn('shoes', el('<input type="search" name="q">'))).toBe('shoes');
    expect(fn('Berlin', el('<input class="sf-unmask">'))).toBe('Berlin');
    expect(fn('Ada Lovelace', el('<input name="fullname">'))).toBe('************');
    expect(fn('hunter2', el('<input type="password" class="sf-unmask">'))).toBe('*******');
    expect(fn('hunter2', el('<input type="text" data-rr-is-password="true" class="sf-unmask">'))).toBe('*******');
    expect(fn('4111', el('<input autocomplete="cc-number" class="sf-unmask">'))).toBe('****');
    expect(fn('123456', el('<input autocomplete="one-time-code" class="sf-unmask">'))).toBe('******');
    expect(fn('note', el('<textarea class="sf-unmask"></textarea>'))).toBe('note');
  });
});

describe('maskInputFn', () => {
  test('without an unmask selector everything is masked, length kept', () => {
    const fn = maskInputFn();
    expect(fn('secret value', el('<input class="sf-unmask">'))).toBe('************');
    expect(fn('', el('<input>'))).toBe('');
  });

  test('an invalid selector or a missing element unmasks nothing', () => {
    expect(maskInputFn('[[nope')('abc', el('<input>'))).toBe('***');
    expect(maskInputFn('*')('abc', undefined as unknown as HTMLElement)).toBe('***');
    expect(alwaysMasked(null)).toBe(true);
  });

  test('a field that was a password stays masked after a show-password toggle', () => {
    const input = el('<input type="password" class="sf-unmask">') as HTMLInputElement;
    input.type = 'text';
    input.setAttribute('data-rr-is-password', 'true');
    expect(maskInputFn('.sf-unmask')('hunter2', input)).toBe('*******');
  });
});
