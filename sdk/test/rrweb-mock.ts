// A stand-in for rrweb's `record` (and web-vitals) that the client tests drive by
// hand. Each suite does `vi.mock('@rrweb/record', () => rrwebModule())` and
// `vi.mock('web-vitals', () => vitalsModule())`.

/* eslint-disable @typescript-eslint/no-explicit-any */
export const rr = {
  /** The options of the last `record` call. */
  opts: undefined as any,
  emit: undefined as undefined | ((e: any) => void),
  records: 0,
  stops: 0,
  snapshots: 0,
  reset() {
    this.opts = this.emit = undefined;
    this.records = this.stops = this.snapshots = 0;
  },
};

export const vitals: Record<string, (m: { value: number }) => void> = {};

let clock = 1_800_000_000_000;
export const tick = () => (clock += 10);

const meta = () => ({ type: 4, data: { href: location.href, width: 1280, height: 800 }, timestamp: tick() });
const full = () => ({ type: 2, data: { node: { type: 0, childNodes: [], id: 1 }, initialOffset: { left: 0, top: 0 } }, timestamp: tick() });

export function rrwebModule() {
  const record = (o: any) => {
    rr.records++;
    rr.opts = o;
    rr.emit = o.emit;
    // Like rrweb on a loaded document: Meta and FullSnapshot before `record` returns.
    o.emit(meta());
    o.emit(full());
    return () => {
      rr.stops++;
      rr.emit = undefined;
    };
  };
  record.takeFullSnapshot = () => {
    if (!rr.emit) throw new Error('please take full snapshot after start recording');
    rr.snapshots++;
    rr.emit(meta());
    rr.emit(full());
  };
  return { record };
}

export function vitalsModule() {
  const on = (name: string) => (cb: (m: { value: number }) => void) => {
    vitals[name] = cb;
  };
  return { onLCP: on('lcp'), onCLS: on('cls'), onINP: on('inp'), onTTFB: on('ttfb'), onFCP: on('fcp') };
}
