// SPA navigation: `history.pushState`/`replaceState` are wrapped once per window,
// and `popstate`/`hashchange` are listened to. Listeners are told after the URL
// has changed; they decide whether it is a new page.

type Listener = () => void;

const KEY = '__sightflowNav';

interface Hub {
  listeners: Set<Listener>;
}

/** Calls `cb` after every possible change of `location.href`; returns the unsubscribe. */
export function onNavigate(win: Window, cb: Listener): () => void {
  const w = win as Window & { [KEY]?: Hub };
  let hub = w[KEY];
  if (!hub) {
    const h: Hub = (hub = { listeners: new Set() });
    const fire = () => h.listeners.forEach((l) => l());
    const hist = win.history;
    (['pushState', 'replaceState'] as const).forEach((m) => {
      const orig = hist[m];
      hist[m] = function (this: History, ...args: Parameters<History['pushState']>) {
        const r = orig.apply(this, args);
        fire();
        return r;
      };
    });
    win.addEventListener('popstate', fire);
    win.addEventListener('hashchange', fire);
    w[KEY] = h;
  }
  hub.listeners.add(cb);
  return () => hub!.listeners.delete(cb);
}
