// A funnel's steps as the Funnels page shows them.

import type { Row } from './api';

export interface Step {
  step: number;
  name: string;
  entered: number;
  conversion: number;
  dropped: number;
  dropShare: number;
}

/** The steps of one funnel in order, with the drop-off from the step before each. */
export function funnelSteps(rows: Row[]): Step[] {
  const sorted = [...rows].sort((a, b) => Number(a.step) - Number(b.step));
  const first = Number(sorted[0]?.entered ?? 0);
  return sorted.map((r, i) => {
    const entered = Number(r.entered ?? 0);
    const before = i === 0 ? entered : Number(sorted[i - 1].entered ?? 0);
    return {
      step: Number(r.step),
      name: String(r.step_name ?? `step ${r.step}`),
      entered,
      conversion: r.conversion_rate !== undefined && r.conversion_rate !== null ? Number(r.conversion_rate) : first ? entered / first : 0,
      dropped: Math.max(0, before - entered),
      dropShare: before ? Math.max(0, before - entered) / before : 0,
    };
  });
}
