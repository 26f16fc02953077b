// A uPlot chart: time series (x in seconds) or categories drawn as bars.

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { timeRange } from './chartspec';

export interface Series {
  label: string;
  color: string;
  values: (number | null)[];
}

export function Chart({
  x,
  series,
  height = 220,
  bars = false,
  categories,
  label,
}: {
  x: number[];
  series: Series[];
  height?: number;
  bars?: boolean;
  categories?: string[];
  label: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = Math.max(240, el.clientWidth);
    const opts: uPlot.Options = {
      width,
      height,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: categories ? { time: false } : { time: true, range: (_u, min, max) => timeRange(min, max) },
      },
      axes: [
        categories
          ? { values: (_u, ticks) => ticks.map((t) => (categories[t] ?? '').slice(0, 18)), gap: 4 }
          : {},
        { size: 56 },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          fill: bars ? s.color + 'cc' : s.color + '22',
          width: bars ? 0 : 2,
          paths: bars ? uPlot.paths.bars!({ size: [0.6, 64] }) : undefined,
          points: { show: x.length < 3 },
        })),
      ],
    };
    const u = new uPlot(opts, [x, ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(240, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
    };
  }, [JSON.stringify([x, series, categories]), height, bars]);
  return <div class="chart" ref={box} role="img" aria-label={label} />;
}
