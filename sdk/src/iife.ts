// Entry of `sdk.js`, the script-tag build: puts the SDK at `window.sightflow`,
// replacing the snippet's stub and replaying the calls it queued.

import { createSightflow } from './client.js';
import { install } from './stub.js';

let origin: string | undefined;
try {
  const src = (document.currentScript as HTMLScriptElement | null)?.src;
  if (src) origin = new URL(src).origin;
} catch {
  // no script element (injected by eval, or a worker): the page's origin it is
}

install(window as { sightflow?: unknown }, createSightflow(origin));
