import { describe, expect, it } from 'vitest';
import { atLeast, lit, objects, roleIn, type Me } from '../src/api';
import { appendPoint, chartOf, schemaOf, timeRange } from '../src/chartspec';
import * as f from '../src/format';
import { badNumber, day, listedSince, rangeStart, sessionFilters, sessionSearch, sessionsApi, spanOf } from '../src/filters';
import { funnelSteps } from '../src/funnel';
import { buckets, extent, heatPoints, ramp, scrollBands } from '../src/heat';
import { LiveRows } from '../src/live';
import { bucketFor, dashboardNumbers, since, within } from '../src/sql';
import { buildMarkers, errorsOf, noRecording, pageSnapshot, position, type RrEvent } from '../src/timeline';

describe('format', () => {
  it('counts, percentages and durations', () => {
    expect(f.int(1234567)).toBe('1,234,567');
    expect(f.int(null)).toBe('–');
    expect(f.int('12')).toBe('12');
    expect(f.pct(0.5)).toBe('50.0 %');
    expect(f.pct(1)).toBe('100 %');
    expect(f.pct(0)).toBe('0 %');
    expect(f.duration(850)).toBe('850 ms');
    expect(f.duration(4200)).toBe('4.2 s');
    expect(f.duration(42_000)).toBe('42 s');
    expect(f.duration(185_000)).toBe('3m 05s');
    expect(f.duration(3_720_000)).toBe('1h 02m');
    expect(f.duration(2 * 86_400_000 + 3 * 3_600_000)).toBe('2d 3h');
    expect(f.clock(0)).toBe('0:00');
    expect(f.clock(65_400)).toBe('1:05');
    expect(f.clock(3_661_000)).toBe('1:01:01');
  });

  it('reads timestamps as UTC when they name no zone', () => {
    expect(f.toMs('2026-01-02T03:04:05.678')).toBe(Date.UTC(2026, 0, 2, 3, 4, 5, 678));
    expect(f.toMs('2026-01-02 03:04:05')).toBe(Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(f.toMs('2026-01-02T03:04:05Z')).toBe(Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(f.toMs('2026-01-02T03:04:05+01:00')).toBe(Date.UTC(2026, 0, 2, 2, 4, 5));
    expect(f.toMs(12)).toBe(12);
    expect(f.toMs('nope')).toBeNull();
    expect(f.toMs(null)).toBeNull();
  });

  it('says how fresh the data is', () => {
    expect(f.freshness(10_000, 9_880)).toEqual({ text: '120 ms behind', level: 'fresh' });
    expect(f.freshness(10_000, 7_000).level).toBe('fresh');
    expect(f.freshness(20_000, 5_000).level).toBe('lagging');
    expect(f.freshness(100_000, 5_000).level).toBe('stale');
    expect(f.freshness(100_000, null).text).toBe('no data yet');
    expect(f.freshness(1000, 5000).text).toBe('0 ms behind');
    expect(f.ago(100_000, 99_500)).toBe('just now');
    expect(f.ago(100_000, 40_000)).toBe('1 min ago');
    expect(f.shortUrl('https://shop.test/a?b')).toBe('shop.test/a?b');
    expect(f.list('[9f94, 0ab1]')).toEqual(['9f94', '0ab1']);
    expect(f.list('[]')).toEqual([]);
    expect(f.list([1, 2])).toEqual(['1', '2']);
    expect(f.list(null)).toEqual([]);
  });
});

describe('live rows', () => {
  it('keeps the multiset the snapshot and diffs describe', () => {
    const l = new LiveRows();
    l.reset(['id', 'n'], [['a', 1], ['b', 2]], 10);
    const added = l.apply(
      [
        { diff: -1, row: ['a', 1] },
        { diff: 1, row: ['a', 2] },
        { diff: 1, row: ['c', 1] },
        { diff: 1, row: ['c', 1] },
      ],
      20,
    );
    expect(added).toEqual([['a', 2], ['c', 1], ['c', 1]]);
    expect(l.all().sort()).toEqual([['a', 2], ['b', 2], ['c', 1], ['c', 1]].sort());
    l.apply([{ diff: -1, row: ['c', 1] }, { diff: -1, row: ['zzz', 0] }], 15);
    expect(l.objects().filter((r) => r.id === 'c')).toHaveLength(1);
    expect(l.asOf).toBe(20);
    l.reset(['id'], [['x']], 30);
    expect(l.objects()).toEqual([{ id: 'x' }]);
  });

  it('says which rows a reset brought that were not there before', () => {
    const l = new LiveRows();
    expect(l.reset(['id'], [['a'], ['b']], 1)).toEqual([['a'], ['b']]);
    // After falling behind: b left, c came (twice), a stayed; no diff said so.
    expect(l.reset(['id'], [['a'], ['c'], ['c']], 2)).toEqual([['c'], ['c']]);
    expect(l.reset(['id'], [['a'], ['c'], ['c']], 3)).toEqual([]);
  });

  it('takes rows as objects, as the server sends them', () => {
    const l = new LiveRows();
    l.reset(['url', 'n'], [{ url: '/a', n: 1 }], 1);
    const added = l.apply([{ diff: -1, row: { url: '/a', n: 1 } }, { diff: 1, row: { url: '/a', n: 2 } }], 2);
    expect(l.shape(added)).toEqual([{ url: '/a', n: 2 }]);
    expect(l.objects()).toEqual([{ url: '/a', n: 2 }]);
  });
});

describe('api helpers', () => {
  it('rows, roles and literals', () => {
    expect(objects(['a', 'b'], [[1, 2]])).toEqual([{ a: 1, b: 2 }]);
    const me: Me = { principal: 'ann', grants: [{ project: 'shop', role: 'viewer' }, { project: null, role: 'member' }] };
    expect(roleIn(me, 'shop')).toBe('member');
    expect(roleIn({ principal: 'x', grants: [{ project: 'a', role: 'admin' }] }, 'b')).toBeNull();
    expect(atLeast('viewer', 'member')).toBe(false);
    expect(atLeast('owner', 'member')).toBe(true);
    expect(atLeast(null, 'viewer')).toBe(false);
    expect(lit("it's")).toBe("'it''s'");
  });
});

describe('filters', () => {
  it('round-trip through the URL and become API parameters', () => {
    const q = new URLSearchParams('range=7d&url=/pricing&has=rage,bogus,errors&browser=Chrome&min_duration_s=30&sort=clicks&order=asc&live=true');
    const flt = sessionFilters(q);
    expect(flt.has).toEqual(['rage', 'errors']);
    expect(flt.sort).toBe('clicks');
    expect(sessionSearch(flt, { project: 'shop' })).toBe(
      '?range=7d&url=%2Fpricing&browser=Chrome&min_duration_s=30&has=rage%2Cerrors&live=true&sort=clicks&order=asc&project=shop',
    );
    const api = new URL(sessionsApi(flt, { project: 'shop', now: 1_000_000_000_000, limit: 25, cursor: 'ab' }), 'http://x');
    expect(api.pathname).toBe('/api/v1/sessions');
    const p = Object.fromEntries(api.searchParams);
    expect(p).toMatchObject({ project: 'shop', from: String(1_000_000_000_000 - 7 * 86_400_000), url: '*/pricing*', has: 'rage,errors', browser: 'Chrome', min_duration_ms: '30000', live: 'true', sort: 'clicks', order: 'asc', limit: '25', cursor: 'ab' });
    expect(sessionFilters(new URLSearchParams('sort=drop table')).sort).toBe('started_at');
    expect(sessionSearch(sessionFilters(new URLSearchParams('')))).toBe('');
  });

  it('ranges and bad numbers', () => {
    expect(rangeStart('all', 5)).toBeNull();
    expect(rangeStart('1h', 10_000_000)).toBe(10_000_000 - 3_600_000);
    expect(rangeStart('garbage', 100_000_000)).toBe(100_000_000 - 86_400_000);
    expect(badNumber('12', 'x')).toBeNull();
    expect(badNumber('', 'x')).toBeNull();
    expect(badNumber('ten', 'Minimum duration')).toContain('"ten"');
    expect(day('2026-12-01')).toBe(new Date(2026, 11, 1).getTime());
    expect(day('12/01/2026')).toBeNull();
    expect(spanOf('custom', '2026-12-01', '2026-12-02', 0)).toEqual({ start: new Date(2026, 11, 1).getTime(), end: new Date(2026, 11, 3).getTime() });
    expect(spanOf('1h', undefined, undefined, 7_200_000)).toEqual({ start: 3_600_000, end: null });
    const custom = sessionFilters(new URLSearchParams('range=custom&from=2026-12-01&to=2026-12-01'));
    expect(sessionSearch(custom)).toBe('?range=custom&from=2026-12-01&to=2026-12-01');
    const q = new URL(sessionsApi(custom, { project: 'p', now: 0, limit: 1 }), 'http://x').searchParams;
    expect([q.get('from'), q.get('to')]).toEqual([String(new Date(2026, 11, 1).getTime()), String(new Date(2026, 11, 2).getTime())]);
  });
});

describe('sql', () => {
  it('ranges and buckets', () => {
    expect(since('ts', null)).toBe('');
    expect(since('ts', 1234.7)).toBe(' AND ts >= to_timestamp_millis(1234)');
    expect(bucketFor(3_600_000)).toBe(60_000);
    expect(bucketFor(86_400_000)).toBe(3_600_000);
    expect(bucketFor(365 * 86_400_000)).toBe(7 * 86_400_000);
    expect(dashboardNumbers("o'k", { start: null, end: null })).toContain("project = 'o''k'");
    expect(within('ts', { start: 1, end: 2 })).toBe(' AND ts >= to_timestamp_millis(1) AND ts < to_timestamp_millis(2)');
    expect(within('ts', { start: null, end: null })).toBe('');
  });
});

const ev = (type: number, timestamp: number, data: unknown = {}): RrEvent => ({ type, timestamp, data });

describe('timeline', () => {
  const events: RrEvent[] = [
    ev(4, 1000, { href: 'https://s.test/a?x=1', width: 1280, height: 800 }),
    ev(2, 1001, { node: {} }),
    ev(3, 1500, { source: 2, type: 2, x: 1, y: 1 }),
    ev(3, 1600, { source: 2, type: 1 }),
    ev(6, 2000, { plugin: 'rrweb/console@1', payload: { level: 'error', payload: ['"Uncaught TypeError: x is undefined"'] } }),
    ev(6, 2100, { plugin: 'rrweb/console@1', payload: { level: 'error', payload: ['"handled"'] } }),
    ev(5, 2500, { tag: 'error', payload: { message: 'boom' } }),
    ev(4, 3000, { href: 'https://s.test/b' }),
    ev(3, 9000, { source: 3 }),
  ];

  it('finds uncaught errors only', () => {
    expect(errorsOf(events)).toEqual([
      { ts: 2000, message: 'Uncaught TypeError: x is undefined' },
      { ts: 2500, message: 'boom' },
    ]);
  });

  it('places markers at their offset, clamped, in time order', () => {
    const m = buildMarkers(
      [
        { kind: 'page_view', ts: '1970-01-01T00:00:01.000', url: 'https://s.test/a' },
        { kind: 'rage_click', ts: '1970-01-01T00:00:01.500', clicks: 4, selector: 'button#buy' },
        { kind: 'page_view', ts: '1970-01-01T00:00:03.000', url: 'https://s.test/b' },
        { kind: 'quick_back', ts: '1970-01-01T00:01:00.000', url: 'https://s.test/b', dwell_ms: 900 },
        { kind: 'unknown', ts: '1970-01-01T00:00:01.000' },
      ],
      events,
    );
    expect(m.map((x) => [x.kind, x.t])).toEqual([
      ['page_view', 0],
      ['rage_click', 500],
      ['click', 500],
      ['error', 1000],
      ['error', 1500],
      ['page_view', 2000],
      ['quick_back', 8000],
    ]);
    expect(m[1].label).toBe('Rage click ×4 on button#buy');
    expect(position(500, 8000)).toBe(6.25);
    expect(position(9000, 8000)).toBe(100);
    expect(position(1, 0)).toBe(0);
  });

  it('cuts the events that rebuild one page', () => {
    const page = pageSnapshot(events, 'https://s.test/a');
    expect(page?.map((e) => e.timestamp)).toEqual([1000, 1001, 1500, 1600, 2000, 2100, 2500]);
    expect(pageSnapshot(events, 'https://s.test/b')).toBeNull(); // no FullSnapshot after its Meta
    expect(pageSnapshot(events, 'https://s.test/c')).toBeNull();
  });
});

describe('heat', () => {
  const cells = [
    { viewport_bucket: 1024, cell_x: 2, cell_y: 3, count: 4 },
    { viewport_bucket: 1440, cell_x: 2, cell_y: 3, count: 1 },
    { viewport_bucket: 1440, cell_x: 10, cell_y: 40, count: 2 },
    { viewport_bucket: 0, cell_x: 0, cell_y: 0, count: 0 },
  ];

  it('turns cells into points at their centres, merged across buckets', () => {
    const all = heatPoints(cells);
    expect(all.total).toBe(7);
    expect(all.max).toBe(5);
    expect(all.points).toContainEqual([40, 56, 5]);
    const one = heatPoints(cells, '1440');
    expect(one.total).toBe(3);
    expect(one.points).toEqual([
      [40, 56, 1],
      [168, 648, 2],
    ]);
    expect(buckets(cells)).toEqual(['0', '1024', '1440']);
    expect(extent(cells)).toEqual({ width: 176, height: 656 });
  });

  it('scroll bands are shares of the top band', () => {
    const b = scrollBands([
      { cell_x: 0, cell_y: 0, count: 10 },
      { cell_x: 0, cell_y: 1, count: 5 },
      { cell_x: 1, cell_y: 1, count: 1 },
    ]);
    expect(b).toEqual([
      { y: 0, height: 16, sessions: 10, share: 1 },
      { y: 16, height: 16, sessions: 6, share: 0.6 },
    ]);
    expect(ramp(0)).toEqual([59, 130, 246]);
    expect(ramp(1)).toEqual([239, 68, 68]);
    expect(ramp(2)).toEqual([239, 68, 68]);
  });
});

describe('funnels and charts', () => {
  it('drop-off between steps', () => {
    const s = funnelSteps([
      { step: 2, step_name: '/pricing', entered: 40, conversion_rate: 0.4 },
      { step: 1, step_name: '/', entered: 100, conversion_rate: 1 },
      { step: 3, step_name: '/signup', entered: 10, conversion_rate: null },
    ]);
    expect(s.map((x) => [x.name, x.entered, x.dropped])).toEqual([
      ['/', 100, 0],
      ['/pricing', 40, 60],
      ['/signup', 10, 30],
    ]);
    expect(s[1].dropShare).toBe(0.6);
    expect(s[2].conversion).toBe(0.1);
  });

  it('a chart from a result: times make a series, text makes bars', () => {
    const t = chartOf(['day', 'n'], [
      { day: '2026-01-02T00:00:00', n: 3 },
      { day: '2026-01-01T00:00:00', n: 1 },
    ]);
    expect(t?.kind).toBe('time');
    expect(t?.x).toEqual([Date.UTC(2026, 0, 1) / 1000, Date.UTC(2026, 0, 2) / 1000]);
    expect(t?.series[0].values).toEqual([1, 3]);
    const b = chartOf(['url', 'views', 'label'], [{ url: '/a', views: 5, label: 'x' }]);
    expect(b).toMatchObject({ kind: 'bars', categories: ['/a'], series: [{ label: 'views', values: [5] }] });
    expect(chartOf(['url'], [{ url: '/a' }])).toBeNull();
    expect(chartOf(['a', 'b'], [])).toBeNull();
    expect(schemaOf([{ table_name: 't', column_name: 'a' }, { table_name: 't', column_name: 'b' }])).toEqual({ t: ['a', 'b'] });
  });
});

it('a time chart of one point spans a minute around it, not years', () => {
  expect(timeRange(1_800_000_000, 1_800_000_000)).toEqual([1_799_999_970, 1_800_000_030]);
  expect(timeRange(10, 20)).toEqual([10, 20]);
});

it('a live series keeps one point per second, the newest value', () => {
  let s = { x: [] as number[], y: [] as number[] };
  for (const [x, y] of [[100, 1], [100, 2], [101, 3], [101, 4], [102, 5]]) s = appendPoint(s, x, y, 2);
  expect(s).toEqual({ x: [101, 102], y: [4, 5] });
});

describe('days', () => {
  it('counts in words', () => {
    expect(f.days(1)).toBe('1 day');
    expect(f.days(30)).toBe('30 days');
    expect(f.days(3650)).toBe('3,650 days');
  });
  it('says how long something is kept in days when whole, else as a duration', () => {
    expect(f.span(30 * 86_400_000)).toBe('30 days');
    expect(f.span(86_400_000)).toBe('1 day');
    expect(f.span(36 * 3_600_000)).toBe('1d 12h');
    expect(f.span(600_000)).toBe('10m 00s');
  });
});

describe('listedSince', () => {
  const day = 86_400_000;
  const now = 100 * day;
  it('names the oldest end a list holds when the range reaches past the retention', () => {
    expect(listedSince({ start: null, end: null }, 30 * day, now)).toBe(70 * day);
    expect(listedSince({ start: now - 40 * day, end: null }, 30 * day, now)).toBe(70 * day);
  });
  it('is null when the range is within it, or sessions are kept', () => {
    expect(listedSince({ start: now - 7 * day, end: null }, 30 * day, now)).toBeNull();
    expect(listedSince({ start: null, end: null }, 0, now)).toBeNull();
    expect(listedSince({ start: null, end: null }, undefined, now)).toBeNull();
  });
});

describe('noRecording', () => {
  const day = 86_400_000;
  it("names the project's retention when the session ended before it", () => {
    const old = { started_at: new Date(Date.now() - 10 * day).toISOString(), duration_ms: 60_000 };
    expect(noRecording({ name: 'shop', retention_days: 7 }, old)).toMatch(/^Recordings of shop are kept 7 days \(Settings\); this session ended /);
  });
  it("names the server's retention when the project has none of its own", () => {
    const kept = { recordings_ms: 30 * day };
    const old = { started_at: new Date(Date.now() - 40 * day).toISOString(), duration_ms: 60_000 };
    expect(noRecording({ name: 'shop', retention_days: 0, kept }, old)).toMatch(
      /^Recordings of shop are kept 30 days \(the server's retention\); this session ended /,
    );
    const recent = { started_at: new Date(Date.now() - 10 * day).toISOString(), duration_ms: 60_000 };
    expect(noRecording({ name: 'shop', retention_days: 0, kept }, recent)).toMatch(/replay quota/);
    expect(noRecording({ name: 'shop', retention_days: 7, kept }, recent)).toMatch(/kept 7 days \(Settings\)/);
  });
  it('otherwise says what else leaves a recording out', () => {
    const recent = { started_at: new Date(Date.now() - day).toISOString(), duration_ms: 60_000 };
    expect(noRecording({ name: 'shop', retention_days: 7 }, recent)).toMatch(/replay quota/);
    const old = { started_at: new Date(Date.now() - 10 * day).toISOString(), duration_ms: 60_000 };
    expect(noRecording({ name: 'shop', retention_days: 0 }, old)).toMatch(/replay quota/);
    expect(noRecording({ name: 'shop' }, {})).toMatch(/replay quota/);
  });
});
