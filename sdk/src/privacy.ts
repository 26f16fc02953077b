// What rrweb is told to mask and block. Nothing typed leaves the page unless the
// page asked for that input explicitly, and a password never does.

export const DEFAULT_MASK_TEXT = '.sf-mask, [data-sf-mask]';
export const DEFAULT_BLOCK = '.sf-block, [data-sf-block]';
/** Editable text is typed text: masked like inputs whenever inputs are. */
const EDITABLE = '[contenteditable]:not([contenteditable="false"])';

export interface MaskOptions {
  maskAllInputs?: boolean;
  unmaskInputSelector?: string;
  maskTextSelector?: string;
  blockSelector?: string;
}

const matches = (el: Element, sel: string) => {
  try {
    return el.matches(sel);
  } catch {
    return false; // an invalid selector unmasks nothing
  }
};

/**
 * Fields that stay masked whatever the selectors say: passwords (also those that
 * rrweb saw as one before a show-password toggle), one-time codes and card data.
 */
export function alwaysMasked(el: Element | null | undefined): boolean {
  if (!el || !el.getAttribute) return true;
  const type = (el.getAttribute('type') || '').toLowerCase();
  const ac = (el.getAttribute('autocomplete') || '').toLowerCase();
  return (
    type == 'password' ||
    (el as HTMLInputElement).type == 'password' ||
    el.hasAttribute('data-rr-is-password') ||
    /password|one-time-code|cc-/.test(ac)
  );
}

/** rrweb's `maskInputFn`: every character becomes `*` unless explicitly unmasked. */
export function maskInputFn(unmask?: string): (text: string, el: HTMLElement) => string {
  return (text, el) => (unmask && !alwaysMasked(el) && matches(el, unmask) ? text : '*'.repeat(text.length));
}

/** The privacy part of rrweb's `record` options. */
export function maskOptions(o: MaskOptions) {
  const all = o.maskAllInputs !== false;
  const text = o.maskTextSelector ?? DEFAULT_MASK_TEXT;
  return {
    maskAllInputs: all,
    // rrweb uses this only when maskAllInputs is false: passwords stay masked then too.
    maskInputOptions: { password: true },
    maskInputFn: maskInputFn(o.unmaskInputSelector),
    maskTextSelector: all ? (text ? text + ', ' + EDITABLE : EDITABLE) : text || undefined,
    blockSelector: (o.blockSelector ?? DEFAULT_BLOCK) || undefined,
  };
}
