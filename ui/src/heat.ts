// Heat aggregation: the view's 16 px cells (document coordinates) as points for the
// overlay, and the scroll-depth bands.

export const CELL_PX = 16;

export interface Cell {
  cell_x: number;
  cell_y: number;
  count: number;
  viewport_bucket?: number | string;
}

export interface HeatPoints {
  points: [number, number, number][];
  max: number;
  total: number;
}

/** The cells as points at their centres, merged per cell (across viewport buckets). */
export function heatPoints(cells: Cell[], bucket?: string): HeatPoints {
  const by = new Map<string, [number, number, number]>();
  let total = 0;
  for (const c of cells) {
    if (bucket !== undefined && bucket !== '' && String(c.viewport_bucket) !== bucket) continue;
    const n = Number(c.count);
    if (!(n > 0)) continue;
    total += n;
    const k = `${c.cell_x},${c.cell_y}`;
    const p = by.get(k);
    if (p) p[2] += n;
    else by.set(k, [c.cell_x * CELL_PX + CELL_PX / 2, c.cell_y * CELL_PX + CELL_PX / 2, n]);
  }
  const points = [...by.values()];
  const max = points.reduce((m, p) => Math.max(m, p[2]), 0);
  return { points, max, total };
}

/** The distinct viewport buckets of some cells, smallest first. */
export function buckets(cells: Cell[]): string[] {
  const s = new Set(cells.map((c) => String(c.viewport_bucket ?? '')));
  return [...s].filter((b) => b !== '').sort((a, b) => Number(a) - Number(b) || a.localeCompare(b));
}

/** The page height the cells reach (px). */
export function extent(cells: Cell[]): { width: number; height: number } {
  let w = 0;
  let h = 0;
  for (const c of cells) {
    w = Math.max(w, (c.cell_x + 1) * CELL_PX);
    h = Math.max(h, (c.cell_y + 1) * CELL_PX);
  }
  return { width: w, height: h };
}

/**
 * Scroll kind: the share of sessions whose deepest visible y reaches each band, as
 * rows `{y, height, share}` from the top of the page.
 */
export function scrollBands(cells: Cell[]): { y: number; height: number; sessions: number; share: number }[] {
  const rows = new Map<number, number>();
  for (const c of cells) rows.set(c.cell_y, (rows.get(c.cell_y) ?? 0) + Number(c.count));
  const ys = [...rows.keys()].sort((a, b) => a - b);
  const top = Math.max(0, ...rows.values());
  return ys.map((y) => ({
    y: y * CELL_PX,
    height: CELL_PX,
    sessions: rows.get(y) ?? 0,
    share: top ? (rows.get(y) ?? 0) / top : 0,
  }));
}

/** A colour for a share 0..1 of the hottest value (blue, green, yellow, red). */
export function ramp(share: number): [number, number, number] {
  const stops: [number, [number, number, number]][] = [
    [0, [59, 130, 246]],
    [0.4, [34, 197, 94]],
    [0.7, [234, 179, 8]],
    [1, [239, 68, 68]],
  ];
  const s = Math.min(1, Math.max(0, share));
  for (let i = 1; i < stops.length; i++) {
    const [b, cb] = stops[i];
    const [a, ca] = stops[i - 1];
    if (s <= b) {
      const f = (s - a) / (b - a);
      return [0, 1, 2].map((k) => Math.round(ca[k] + (cb[k] - ca[k]) * f)) as [number, number, number];
    }
  }
  return stops[stops.length - 1][1];
}
