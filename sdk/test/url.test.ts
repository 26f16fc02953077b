import { describe, expect, test } from 'vitest';
import { blocklist, DEFAULT_SCRUB_PARAMS, scrubber } from '../src/url';

const R = '[redacted]';

describe('scrubbing', () => {
  const scrub = scrubber(['order_ref', 'X-Trace']);
  const check = (input: string, expected: string) => expect(scrub(input)).toBe(expected);

  test('every default parameter is redacted, its name kept', () => {
    for (const name of DEFAULT_SCRUB_PARAMS) check(`https://a.test/p?${name}=s3cr3t&x=1`, `https://a.test/p?${name}=${R}&x=1`);
  });

  test('names match case-insensitively and percent-encoded', () => {
    check('https://a.test/?TOKEN=a&Email=b%40c.d', `https://a.test/?TOKEN=${R}&Email=${R}`);
    check('https://a.test/?api%5Fkey=zz', `https://a.test/?api%5Fkey=${R}`);
  });

  test('configured names are added to the defaults', () => {
    check('https://a.test/?order_ref=42&x-trace=abc&token=t', `https://a.test/?order_ref=${R}&x-trace=${R}&token=${R}`);
  });

  test('non-matching parameters and URLs are kept byte for byte', () => {
    check('https://a.test/', 'https://a.test/');
    check('https://a.test/p?q=shoes&page=2&tokens=1&mykey=2', 'https://a.test/p?q=shoes&page=2&tokens=1&mykey=2');
    check('https://a.test/p?flag&q=%20x+y', 'https://a.test/p?flag&q=%20x+y');
    check('/relative?keyword=x', '/relative?keyword=x');
    check('', '');
  });

  test('the fragment is scrubbed too', () => {
    check('https://a.test/cb#access_token=abc&state=xyz&token_type=bearer', `https://a.test/cb#access_token=${R}&state=xyz&token_type=bearer`);
    check('https://a.test/#/reset?code=123&step=2', `https://a.test/#/reset?code=${R}&step=2`);
    check('https://a.test/?q=1#section-2', 'https://a.test/?q=1#section-2');
    check('https://a.test/?sid=9#password=hunter2', `https://a.test/?sid=${R}#password=${R}`);
  });

  test('values end at a separator, not at a slash', () => {
    check('https://a.test/?next=/a/b?token=t', `https://a.test/?next=/a/b?token=${R}`);
    check('https://a.test/?key=a/b/c&x=1', `https://a.test/?key=${R}&x=1`);
    check('https://a.test/?key=', `https://a.test/?key=${R}`);
  });

  test('the path is never touched', () => {
    check('https://a.test/token=abc/x', 'https://a.test/token=abc/x');
  });
});

describe('blocklist', () => {
  test('globs match the full URL; RegExps anywhere', () => {
    const blocked = blocklist(['https://a.test/admin*', '*/account/*/billing', /[?&]print=1/g]);
    expect(blocked('https://a.test/admin')).toBe(true);
    expect(blocked('https://a.test/admin/users?x=1')).toBe(true);
    expect(blocked('https://a.test/x/admin')).toBe(false);
    expect(blocked('https://b.test/account/42/billing')).toBe(true);
    expect(blocked('https://b.test/account/42/billing/x')).toBe(false);
    // A global RegExp keeps lastIndex between tests; the check does not depend on it.
    expect(blocked('https://a.test/p?print=1')).toBe(true);
    expect(blocked('https://a.test/p?print=1')).toBe(true);
    expect(blocked('https://a.test/p')).toBe(false);
  });

  test('glob text is literal apart from *', () => {
    const blocked = blocklist(['https://a.test/a.b?(x)']);
    expect(blocked('https://a.test/a.b?(x)')).toBe(true);
    expect(blocked('https://a.test/aXb?(x)')).toBe(false);
    expect(blocklist()('https://a.test/')).toBe(false);
  });
});
