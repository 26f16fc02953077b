#!/usr/bin/env python3
"""Peers for the incremental-update benchmark: DuckDB and ClickHouse's embedded engine
(chdb) recompute every view of the contract from scratch over the Parquet files that
`sightflow-bench peers` exported, and the last recompute is compared, table by table and
row by row, with sightflow's final snapshot.

The input is the dataflow's own: one row per analytic event (`dataflows::convert`), with
the logical time the bench stamps it with (`t`). The SQL states the definitions of
`operators/src/reference.rs` and `operators/src/signals/*.rs` (their batch references),
with the thresholds of `config/default.toml`. It is written once; both engines run the
same text, with a few per-engine macros for names that differ (intDiv, toNullable,
endsWith, numbers). Each view is a table built in the engine; the recompute time is the
time to build all of them.

What is not compared, and why:
- `sessions.is_live`: whether a session may still grow is engine state. The compared
  snapshot is the complete one (the input has ended), where no session is live; a
  recompute over files has no such moment.
- Session ids are xxh3 hashes of (project, device, start) symbols. The peers name a
  session `project|device_id|started_at`; sightflow's ids are mapped to the same names
  through its `sessions` table, so every view's `session_id` is still compared.

ClickHouse lets a SELECT's aliases be read in its WHERE, so no output column is named
like an input column its own WHERE reads.

Where the definitions need order, the SQL uses the engine's processing order: a device's
events by (logical time, event time, tab symbol, seq, sub). Effective time is the running
maximum of event time; the engine restarts it after a device's state is released, which
only differs for an event older than the device's previous one arriving after a release
(late data; the peers bench feeds every event on time).

usage: peers.py DIR FILES_AT ANSWERS_DIR

FILES_AT lists (comma-separated) after how many of DIR's events-NNNN.parquet files to
recompute; the last one is compared with ANSWERS_DIR/<view>.parquet. Prints one JSON line
per engine and the first differing rows of any view that differs; exits 1 when a view
differs or an engine fails.
"""
import collections
import json
import os
import sys
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "..", "..", "config", "default.toml")

# Columns left out of the comparison (see the docstring).
EXCLUDED = {"sessions": {"is_live"}}


def params():
    c = tomllib.load(open(CONFIG, "rb"))
    e, s, sig = c["engine"], c["session"], c["signals"]
    # The session rules below use the midnight of UTC for the day boundary and rely on
    # it for the 24 h age limit (a session within one UTC day is younger than 24 h).
    if not (s["split_at_midnight"] and s["time_zone"] == "UTC" and s["max_age_ms"] >= 86_400_000):
        sys.exit("peers.py implements sessions that split at midnight UTC with max_age_ms >= 24 h")
    dead = sig["dead"]
    return {
        "tick": e["tick_ms"],
        "grace": e["state_grace_ms"],
        "late": e["late_verdict_ms"],
        "gap": s["idle_gap_ms"],
        "rage_min": sig["rage"]["min_clicks"],
        "rage_gap": sig["rage"]["max_gap_ms"],
        "rage_r2": sig["rage"]["radius_px"] ** 2,
        "mut": dead["mutation_window_ms"],
        "nav": dead["navigation_window_ms"],
        "scr": dead["scroll_window_ms"],
        "inp": dead["input_window_ms"],
        "dead_w": max(dead.values()),
        "err_w": sig["error_click"]["window_ms"],
        "qb": sig["quick_back"]["max_dwell_ms"],
        "xs_min": sig["excessive_scroll"]["min_direction_changes"],
        "xs_w": sig["excessive_scroll"]["window_ms"],
        "th_min": sig["thrashed_cursor"]["min_reversals"],
        "th_w": sig["thrashed_cursor"]["window_ms"],
        "cell": c["heatmap"]["cell_px"],
        "breakpoints": sorted(c["heatmap"]["viewport_breakpoints"]),
        "band": c["scroll_depth"]["band_pct"],
        "funnels": c.get("funnels", []),
    }


P = params()
P["dead_b"] = max(P["dead_w"], 1)
P["src"] = "{src}"
P["err_b"] = max(P["err_w"], 1)

# A device's events in processing order; a page chain is a tab's page view and what
# follows it on the tab (through session splits, which carry the page over uncounted);
# a page instance is a chain within one session.
DEV = "project, device_id"
ORDER = "t, ts, tab_sym, seq, sub"
CHAIN = "project, device_id, epoch, tab_id, pv_no"
INST = "project, device_id, epoch, tab_id, pv_no, sess_no"
PACK = 4294967296


def last_val(cond, value, part, end="CURRENT ROW", offset=2147483648):
    """The value of the last row (by ord) in the window frame where `cond` holds, or NULL:
    the maximum of ord and value packed into one integer (the same in both engines,
    unlike IGNORE NULLS)."""
    return (f"(max(CASE WHEN {cond} THEN ord * {PACK} + ({value}) + {offset} END) OVER "
            f"(PARTITION BY {part} ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND {end})"
            f" % {PACK} - {offset})")


def last_agg(value, offset=0):
    """The aggregate's last non-null `value` by ord."""
    return f"(max(CASE WHEN ({value}) IS NOT NULL THEN ord * {PACK} + ({value}) + {offset} END) % {PACK} - {offset})"


def bucket(width):
    cases = " ".join(f"WHEN {width} >= {b} THEN {b}" for b in reversed(P["breakpoints"]))
    return f"(CASE {cases} ELSE 0 END)" if cases else "0"


def tick_ceil(x):
    return f"(intDiv({x} + {P['tick'] - 1}, {P['tick']}) * {P['tick']})"


DAY = 86_400_000

# Each stage builds one table: (group, table, SQL). Tables named v_<view> are the views.
STAGES = []


def stage(group, table, sql):
    """A table built from `sql` (formatted with the parameters), or dropped (None)."""
    STAGES.append((group, table, sql if sql is None else sql.format(**P)))


# 1. The timeline: processing order, effective time, releases, sessions, pages. The
# events are sorted with all their columns once (ord); the window passes after that
# carry only the columns they read, and the others are joined back by ord.
stage("timeline", "ev", f"""
SELECT *, CAST(row_number() OVER (PARTITION BY {DEV} ORDER BY {ORDER}) AS BIGINT) AS ord FROM {{src}}
""")
TIMELINE = f"""
WITH c AS (
  -- Effective time (the running maximum of event time) and the previous event's.
  SELECT project, device_id, tab_id, ord, t, ts, kind, pv_url, width, height, page_height, scroll_x, scroll_y,
    x, y, node, url,
    max(ts) OVER (PARTITION BY {DEV} ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS eff,
    max(toNullable(ts)) OVER (PARTITION BY {DEV} ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_eff,
    lag(toNullable(t)) OVER (PARTITION BY {DEV} ORDER BY ord) AS prev_t
  FROM ev),
d AS (
  -- A device's state is released when an event arrives (logical time) after its
  -- session closed (idle gap, or the next midnight) and after the grace since the
  -- previous arrival: a new epoch, whose tabs start without pages.
  SELECT *,
    CASE WHEN prev_t IS NULL THEN 0
         WHEN t > greatest(least((intDiv(prev_eff + {{gap}}, {{tick}}) + 1) * {{tick}},
                                 {tick_ceil(f'(intDiv(prev_eff, {DAY}) + 1) * {DAY}')}),
                           {tick_ceil('prev_t + {grace}')}) THEN 1 ELSE 0 END AS released
  FROM c),
e AS (
  SELECT *,
    CASE WHEN prev_eff IS NULL OR released = 1 OR eff - prev_eff > {{gap}}
              OR intDiv(eff, {DAY}) <> intDiv(prev_eff, {DAY}) THEN 1 ELSE 0 END AS split
  FROM d),
f AS (
  SELECT *,
    sum(split) OVER (PARTITION BY {DEV} ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sess_no,
    sum(released) OVER (PARTITION BY {DEV} ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS epoch,
    max(CASE WHEN split = 1 THEN eff END) OVER (PARTITION BY {DEV} ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sess_start
  FROM e),
g AS (
  SELECT *,
    sum(CASE WHEN kind = 'page_view' THEN 1 ELSE 0 END) OVER (PARTITION BY project, device_id, epoch, tab_id ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS pv_no,
    CASE WHEN kind = 'snapshot' THEN scroll_x WHEN kind = 'scroll' AND node = 1 THEN x END AS rec_x,
    CASE WHEN kind = 'snapshot' THEN scroll_y WHEN kind = 'scroll' AND node = 1 THEN y END AS rec_y
  FROM f),
h AS (
  SELECT *,
    first_value(pv_url) OVER (PARTITION BY {CHAIN} ORDER BY ord) AS page_url,
    first_value(sess_no) OVER (PARTITION BY {CHAIN} ORDER BY ord) AS pv_sess,
    first_value(width) OVER (PARTITION BY {CHAIN} ORDER BY ord) AS pv_width,
    first_value(page_height) OVER (PARTITION BY {CHAIN} ORDER BY ord) AS pv_page_height,
    {last_val("kind IN ('resize', 'page_view')", "width", CHAIN, "1 PRECEDING")} AS width_before,
    {last_val("kind IN ('resize', 'page_view')", "width", CHAIN)} AS w_after,
    {last_val("kind IN ('resize', 'page_view')", "height", CHAIN)} AS h_after,
    coalesce({last_val("rec_x IS NOT NULL", "rec_x", CHAIN, "1 PRECEDING")}, 0) AS doc_x_before,
    coalesce({last_val("rec_y IS NOT NULL", "rec_y", CHAIN, "1 PRECEDING")}, 0) AS doc_y_before,
    coalesce({last_val("rec_y IS NOT NULL", "rec_y", CHAIN)}, 0) AS doc_y_after
  FROM g)
SELECT h.project AS project, h.device_id AS device_id, h.tab_id AS tab_id, h.t AS t, h.ord AS ord, h.eff AS eff,
  h.kind AS kind, h.sess_no AS sess_no, h.epoch AS epoch, h.sess_start AS sess_start,
  concat(h.project, '|', h.device_id, '|', CAST(h.sess_start AS VARCHAR)) AS sess_id,
  h.pv_no AS pv_no, h.page_url AS page_url, h.pv_sess AS pv_sess, h.pv_width AS pv_width,
  h.pv_page_height AS pv_page_height, h.width_before AS width_before, h.w_after AS w_after, h.h_after AS h_after,
  h.doc_x_before AS doc_x_before, h.doc_y_before AS doc_y_before, h.doc_y_after AS doc_y_after,
  h.rec_x AS rec_x, h.rec_y AS rec_y,
  CASE WHEN h.pv_no > 0 THEN h.page_url ELSE h.url END AS url_of,
  h.pv_url AS pv_url, w.path AS path, w.browser AS browser, w.os AS os, w.device_type AS device_type,
  w.country AS country, h.x AS x, h.y AS y, w.page_x AS page_x, w.page_y AS page_y, w.has_page AS has_page,
  w.has_position AS has_position, w.selector AS selector, w.tag AS tag, w.tag_sym AS tag_sym,
  w.text_field AS text_field, h.node AS node, w."offset" AS "offset", w."first" AS "first", w.message AS message,
  w.message_sym AS message_sym, w.fingerprint AS fingerprint, w.name AS name, w.user_id AS user_id,
  w.lcp_ms AS lcp_ms, w.cls_milli AS cls_milli, w.inp_ms AS inp_ms, w.ttfb_ms AS ttfb_ms, w.fcp_ms AS fcp_ms
FROM h JOIN ev w ON w.project = h.project AND w.device_id = h.device_id AND w.ord = h.ord
"""
stage("timeline", "tl", TIMELINE)
stage("timeline", "ev", None)  # dropped: tl holds what the views read

# Counted pages (a page view's own session), with what the page_views row needs. A page
# lasts to the tab's next page view in the session, or to its last event.
stage("timeline", "pages", f"""
WITH p AS (
  SELECT project, device_id, epoch, tab_id, pv_no, sess_no,
    min(sess_id) AS sess_id, min(page_url) AS url, min(eff) AS start, max(eff) AS last_own, min(ord) AS pv_ord,
    greatest(0, coalesce(max(CASE WHEN kind = 'scroll' AND node = 1 THEN y END), 0)) AS max_scroll_y,
    max(doc_y_after + h_after) AS deepest,
    argMax(w_after, ord) AS viewport_width, argMax(h_after, ord) AS viewport_height,
    min(pv_width) AS start_width, min(pv_page_height) AS page_height,
    sum(CASE WHEN kind = 'click' THEN 1 ELSE 0 END) AS clicks,
    {last_agg("lcp_ms")} AS lcp_ms, {last_agg("cls_milli")} AS cls_milli, {last_agg("inp_ms")} AS inp_ms,
    {last_agg("ttfb_ms")} AS ttfb_ms, {last_agg("fcp_ms")} AS fcp_ms
  FROM tl WHERE pv_no > 0 AND sess_no = pv_sess
  GROUP BY project, device_id, epoch, tab_id, pv_no, sess_no)
SELECT *,
  CASE WHEN lead(toNullable(sess_no)) OVER (PARTITION BY project, device_id, epoch, tab_id ORDER BY pv_no) = sess_no
       THEN greatest(last_own, lead(toNullable(start)) OVER (PARTITION BY project, device_id, epoch, tab_id ORDER BY pv_no))
       ELSE last_own END AS last
FROM p
""")

stage("sessions", "v_page_views", """
SELECT sess_id AS session_id, project, device_id, tab_id, url, start AS ts, last - start AS duration_ms,
  max_scroll_y, deepest AS deepest_visible_y, viewport_width, viewport_height, clicks,
  lcp_ms, cls_milli / 1000.0 AS cls, inp_ms, ttfb_ms, fcp_ms
FROM pages
""")

# 2. Rage clicks: a page instance's clicks split where a click comes more than max_gap
# after the previous one or either has no position; within such a run, bursts start
# greedily where a click is farther than the radius from the burst's first click (a
# recursive walk over the runs long enough to hold a burst).
stage("clicks", "rage_members", f"""
WITH RECURSIVE c0 AS (
  SELECT project, device_id, epoch, tab_id, pv_no, sess_no, sess_id, page_url, ord, eff, x, y, selector,
    CASE WHEN lag(toNullable(eff)) OVER (PARTITION BY {INST} ORDER BY ord) IS NULL
           OR eff - lag(toNullable(eff)) OVER (PARTITION BY {INST} ORDER BY ord) > {{rage_gap}}
           OR NOT has_position OR NOT lag(toNullable(has_position)) OVER (PARTITION BY {INST} ORDER BY ord)
         THEN 1 ELSE 0 END AS brk
  FROM tl WHERE kind = 'click' AND pv_no > 0),
c1 AS (
  SELECT *, sum(brk) OVER (PARTITION BY {INST} ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run
  FROM c0),
c2 AS (
  SELECT *, count(*) OVER (PARTITION BY {INST}, run) AS run_len,
    CAST(row_number() OVER (PARTITION BY {INST}, run ORDER BY ord) AS BIGINT) AS k
  FROM c1),
rc AS (SELECT * FROM c2 WHERE run_len >= {{rage_min}}),
r AS (
  SELECT project, device_id, epoch, tab_id, pv_no, sess_no, run, k,
    CAST(x AS BIGINT) AS fx, CAST(y AS BIGINT) AS fy, k AS bs
  FROM rc WHERE k = 1
  UNION ALL
  SELECT c.project, c.device_id, c.epoch, c.tab_id, c.pv_no, c.sess_no, c.run, c.k,
    CAST(CASE WHEN (c.x - r.fx) * (c.x - r.fx) + (c.y - r.fy) * (c.y - r.fy) <= {{rage_r2}} THEN r.fx ELSE c.x END AS BIGINT),
    CAST(CASE WHEN (c.x - r.fx) * (c.x - r.fx) + (c.y - r.fy) * (c.y - r.fy) <= {{rage_r2}} THEN r.fy ELSE c.y END AS BIGINT),
    CASE WHEN (c.x - r.fx) * (c.x - r.fx) + (c.y - r.fy) * (c.y - r.fy) <= {{rage_r2}} THEN r.bs ELSE c.k END
  FROM r JOIN rc c ON c.project = r.project AND c.device_id = r.device_id AND c.epoch = r.epoch
    AND c.tab_id = r.tab_id AND c.pv_no = r.pv_no AND c.sess_no = r.sess_no AND c.run = r.run AND c.k = r.k + 1),
m AS (
  SELECT rc.*, r.bs FROM rc JOIN r ON rc.project = r.project AND rc.device_id = r.device_id AND rc.epoch = r.epoch
    AND rc.tab_id = r.tab_id AND rc.pv_no = r.pv_no AND rc.sess_no = r.sess_no AND rc.run = r.run AND rc.k = r.k)
SELECT * FROM (
  SELECT m.*, count(*) OVER (PARTITION BY {INST}, run, bs) AS burst_len FROM m) b
WHERE burst_len >= {{rage_min}}
""")

stage("clicks", "v_rage_clicks", f"""
SELECT min(sess_id) AS session_id, project, min(page_url) AS url, min(eff) AS ts, argMin(x, ord) AS x,
  argMin(y, ord) AS y, count(*) AS clicks, argMin(selector, ord) AS selector, max(eff) AS end_ts
FROM rage_members GROUP BY {INST}, run, bs
""")

# 3. Dead clicks: no reaction of its session and tab after it within its window that
# arrived by its verdict's deadline; text fields are never dead. Reactions are joined by
# time bucket (the longest window), so each click meets only the events near it.
stage("clicks", "reacted", """
WITH c AS (
  SELECT project, device_id, sess_no, tab_id, ord, eff, intDiv(eff, {dead_b}) AS b,
    greatest(intDiv(eff + {dead_w} + {tick} - 1, {tick}) * {tick}, t + {late}) AS deadline
  FROM tl WHERE kind = 'click' AND NOT text_field),
r AS (
  SELECT project, device_id, sess_no, tab_id, ord, eff, t, kind, intDiv(eff, {dead_b}) AS b
  FROM tl WHERE kind IN ('mutation', 'page_view', 'scroll', 'input')),
rb AS (SELECT *, b AS jb FROM r UNION ALL SELECT *, b - 1 AS jb FROM r)
SELECT DISTINCT c.project AS project, c.device_id AS device_id, c.ord AS ord
FROM c JOIN rb ON rb.project = c.project AND rb.device_id = c.device_id AND rb.sess_no = c.sess_no
  AND rb.tab_id = c.tab_id AND rb.jb = c.b
WHERE rb.ord > c.ord AND rb.t <= c.deadline
  AND rb.eff - c.eff <= CASE rb.kind WHEN 'mutation' THEN {mut} WHEN 'page_view' THEN {nav}
                                     WHEN 'scroll' THEN {scr} ELSE {inp} END
""")

stage("clicks", "v_dead_clicks", """
SELECT c.sess_id AS session_id, c.project AS project, c.url_of AS url, c.eff AS ts, c.x AS x, c.y AS y,
  c.selector AS selector, c.tag AS tag
FROM tl c LEFT JOIN reacted r ON r.project = c.project AND r.device_id = c.device_id AND r.ord = c.ord
WHERE c.kind = 'click' AND NOT c.text_field AND r.ord IS NULL
""")

# 4. Error clicks: the first uncaught error after the click on its session, tab and page
# view within the window.
stage("clicks", "v_error_clicks", """
WITH c AS (
  SELECT project, device_id, sess_no, tab_id, pv_no, ord, eff, intDiv(eff, {err_b}) AS b
  FROM tl WHERE kind = 'click'),
e AS (
  SELECT project, device_id, sess_no, tab_id, pv_no, ord, eff, message, intDiv(eff, {err_b}) AS b
  FROM tl WHERE kind = 'error'),
eb AS (SELECT *, b AS jb FROM e UNION ALL SELECT *, b - 1 AS jb FROM e),
pairs AS (
  SELECT c.project AS project, c.device_id AS device_id, c.ord AS ord,
    argMin(eb.message, eb.ord) AS message, argMin(eb.eff, eb.ord) AS error_ts
  FROM c JOIN eb ON eb.project = c.project AND eb.device_id = c.device_id AND eb.sess_no = c.sess_no
    AND eb.tab_id = c.tab_id AND eb.pv_no = c.pv_no AND eb.jb = c.b
  WHERE eb.ord > c.ord AND eb.eff - c.eff <= {err_w}
  GROUP BY c.project, c.device_id, c.ord)
SELECT k.sess_id AS session_id, k.project AS project, k.url_of AS url, k.eff AS ts, k.selector AS selector,
  p.message AS message, k.x AS x, k.y AS y, p.error_ts AS error_ts
FROM pairs p JOIN tl k ON k.project = p.project AND k.device_id = p.device_id AND k.ord = p.ord
""")

# 5. Quick backs: counted page views A, B, A of one session and tab where B lasted (to
# the second A) at most max_dwell.
stage("episodes", "v_quick_backs", """
SELECT sess_id AS session_id, project, b_url AS url, b_start AS ts, c_start - b_start AS dwell_ms, a_url AS from_url
FROM (
  SELECT sess_id, project, url AS c_url, start AS c_start,
    lag(toNullable(url), 2) OVER w AS a_url,
    lag(toNullable(url), 1) OVER w AS b_url,
    lag(toNullable(start), 1) OVER w AS b_start
  FROM pages
  WINDOW w AS (PARTITION BY project, device_id, sess_no, tab_id ORDER BY pv_ord)) q
WHERE a_url = c_url AND b_url <> c_url AND c_start - b_start <= {qb}
""")


def episodes(changes, minimum, window):
    """Episodes over `changes` (a query of page instances' changes: INST columns, ord,
    tm, in list order by ord): windows of `minimum` consecutive changes within `window`
    ms, a window merging into the episode when its first change is not after the
    episode's last."""
    first = "tm" if minimum <= 1 else f"lag(toNullable(tm), {minimum - 1}) OVER (PARTITION BY {INST} ORDER BY ord)"
    return f"""
e1 AS (
  SELECT *, CAST(row_number() OVER (PARTITION BY {INST} ORDER BY ord) AS BIGINT) AS ci, {first} AS first_tm
  FROM {changes}),
e2 AS (SELECT * FROM e1 WHERE first_tm IS NOT NULL AND tm - first_tm <= {window}),
e3 AS (SELECT *, lag(toNullable(tm)) OVER (PARTITION BY {INST} ORDER BY ci) AS prev_end FROM e2),
e4 AS (
  SELECT *, sum(CASE WHEN prev_end IS NULL OR first_tm > prev_end THEN 1 ELSE 0 END)
    OVER (PARTITION BY {INST} ORDER BY ci ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ep
  FROM e3)
SELECT min(sess_id) AS session_id, project, min(page_url) AS url, argMin(first_tm, ci) AS ts,
  max(ci) - min(ci) + {minimum} AS reversals, argMax(tm, ci) AS end_ts
FROM e4 GROUP BY {INST}, ep
"""


# 6. Excessive scrolling: direction changes of each node's y on a page instance.
stage("episodes", "v_excessive_scrolls", f"""
WITH s AS (
  SELECT project, device_id, epoch, tab_id, pv_no, sess_no, sess_id, page_url, node, ord, eff,
    sign(y - lag(toNullable(y)) OVER (PARTITION BY {INST}, node ORDER BY ord)) AS d
  FROM tl WHERE kind = 'scroll' AND pv_no > 0),
s2 AS (
  SELECT *, {last_val("d <> 0", "d", INST + ", node", "1 PRECEDING")} AS ld FROM s),
ch AS (
  SELECT project, device_id, epoch, tab_id, pv_no, sess_no, sess_id, page_url, ord, eff AS tm
  FROM s2 WHERE d <> 0 AND ld IS NOT NULL AND d <> ld),
{episodes("ch", P["xs_min"], P["xs_w"])}
""".replace("{", "{{").replace("}", "}}"))

# 7. Thrashed cursor: horizontal reversals of a page instance's mouse positions, at the
# time of the turning position.
stage("episodes", "v_thrashed_cursors", f"""
WITH m AS (
  SELECT project, device_id, epoch, tab_id, pv_no, sess_no, sess_id, page_url, ord, x,
    eff + greatest(-5000, least(0, "offset")) AS mat
  FROM tl WHERE kind = 'move' AND pv_no > 0),
m2 AS (
  SELECT *, sign(x - lag(toNullable(x)) OVER (PARTITION BY {INST} ORDER BY ord)) AS d,
    lag(toNullable(mat)) OVER (PARTITION BY {INST} ORDER BY ord) AS turn
  FROM m),
m3 AS (
  SELECT *, lag(toNullable(d)) OVER (PARTITION BY {INST} ORDER BY ord) AS ld FROM m2 WHERE d <> 0),
ch AS (
  SELECT project, device_id, epoch, tab_id, pv_no, sess_no, sess_id, page_url, ord, turn AS tm
  FROM m3 WHERE ld IS NOT NULL AND d <> ld),
{episodes("ch", P["th_min"], P["th_w"])}
""".replace("{", "{{").replace("}", "}}"))

# 8. Sessions: the timeline's counts and the signals' per session.
stage("sessions", "v_sessions", """
WITH s AS (
  SELECT project, device_id, sess_no, min(sess_id) AS session_id, min(eff) AS started_at, max(eff) AS ended_at,
    sum(CASE WHEN kind = 'page_view' THEN 1 ELSE 0 END) AS page_views,
    sum(CASE WHEN kind <> 'move' OR "first" THEN 1 ELSE 0 END) AS events,
    sum(CASE WHEN kind = 'click' THEN 1 ELSE 0 END) AS clicks,
    sum(CASE WHEN kind = 'error' THEN 1 ELSE 0 END) AS errors,
    argMin(url_of, CASE WHEN url_of <> '' THEN ord END) AS entry_url,
    argMax(url_of, CASE WHEN url_of <> '' THEN ord END) AS exit_url,
    argMin(browser, CASE WHEN kind = 'page_view' AND browser <> '' THEN ord END) AS browser,
    argMin(os, CASE WHEN kind = 'page_view' AND os <> '' THEN ord END) AS os,
    argMin(device_type, CASE WHEN kind = 'page_view' AND device_type <> '' THEN ord END) AS device_type,
    argMin(country, CASE WHEN kind = 'page_view' AND country <> '' THEN ord END) AS country,
    count(DISTINCT tab_id) AS tabs,
    argMax(user_id, CASE WHEN kind = 'identify' THEN ord END) AS user_id
  FROM tl GROUP BY project, device_id, sess_no),
rg AS (SELECT session_id, count(*) AS n FROM v_rage_clicks GROUP BY session_id),
dd AS (SELECT session_id, count(*) AS n FROM v_dead_clicks GROUP BY session_id),
ec AS (SELECT session_id, count(*) AS n FROM v_error_clicks GROUP BY session_id),
qb AS (SELECT session_id, count(*) AS n FROM v_quick_backs GROUP BY session_id),
xs AS (SELECT session_id, count(*) AS n FROM v_excessive_scrolls GROUP BY session_id),
th AS (SELECT session_id, count(*) AS n FROM v_thrashed_cursors GROUP BY session_id)
SELECT s.session_id AS session_id, s.project AS project, s.device_id AS device_id, s.started_at AS started_at,
  s.ended_at AS ended_at, s.ended_at - s.started_at AS duration_ms, s.page_views AS page_views,
  s.events AS events, s.clicks AS clicks, coalesce(rg.n, 0) AS rage_clicks, coalesce(dd.n, 0) AS dead_clicks,
  coalesce(ec.n, 0) AS error_clicks, s.errors AS errors, s.entry_url AS entry_url, s.exit_url AS exit_url,
  s.browser AS browser, s.os AS os, s.device_type AS device_type, s.country AS country,
  coalesce(qb.n, 0) AS quick_backs, coalesce(xs.n, 0) AS excessive_scrolls, coalesce(th.n, 0) AS thrashed_cursors,
  s.tabs AS tabs, nullif(s.user_id, '') AS user_id
FROM s
  LEFT JOIN rg ON rg.session_id = s.session_id LEFT JOIN dd ON dd.session_id = s.session_id
  LEFT JOIN ec ON ec.session_id = s.session_id LEFT JOIN qb ON qb.session_id = s.session_id
  LEFT JOIN xs ON xs.session_id = s.session_id LEFT JOIN th ON th.session_id = s.session_id
""")


# 9. Funnels: per session, how far the steps were reached in order within the window.
# Step k is reached at an event that matches it when step k - 1 was reached before (by a
# chain whose first step is at most the window earlier); each level keeps the latest
# start of a chain reaching it.
def quote(v):
    return "'" + v.replace("'", "''") + "'"


def step_match(st):
    if "page" in st:
        p = st["page"]
        if any(ch in p for ch in "%_\\"):
            sys.exit(f"peers.py: funnel page pattern {p!r} has a character LIKE would read")
        col = "pv_url" if p.startswith("http") else "path"
        return f"kind = 'page_view' AND {col} LIKE {quote(p.replace('*', '%'))}"
    if "event" in st:
        return f"kind = 'custom' AND name = {quote(st['event'])}"
    c = st.get("click", "")
    return (f"kind = 'click' AND (selector = {quote(c)} OR endsWith(selector, {quote(' ' + c)})"
            f" OR endsWith(selector, {quote('>' + c)}))")


def step_label(st):
    return st.get("name") or st.get("page") or (f"event:{st['event']}" if "event" in st else f"click:{st.get('click', '')}")


if P["funnels"]:
    ctes, sel, steps = [], [], []
    for fi, f in enumerate(P["funnels"]):
        if f.get("count", "sessions") != "sessions":
            sys.exit("peers.py implements funnels counted by sessions")
        window = f.get("window_ms", 86_400_000)
        for k, st in enumerate(f["steps"]):
            m = step_match(st)
            steps.append(f"SELECT {quote(f['name'])} AS funnel, {k + 1} AS step, {quote(step_label(st))} AS step_name")
            if k == 0:
                ctes.append(f"q{fi}_0 AS (SELECT project, device_id, sess_no, ord, eff, toNullable(eff) AS val "
                            f"FROM tl WHERE {m})")
                continue
            # A candidate sorts before the step below reached at the same event: one
            # event reaches one step.
            ctes.append(f"""q{fi}_{k} AS (
  SELECT project, device_id, sess_no, ord, eff, best AS val FROM (
    SELECT *, max(val) OVER (PARTITION BY project, device_id, sess_no ORDER BY ord, cand DESC
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS best
    FROM (SELECT project, device_id, sess_no, ord, eff, val, 0 AS cand FROM q{fi}_{k - 1}
          UNION ALL SELECT project, device_id, sess_no, ord, eff, NULL AS val, 1 AS cand FROM tl WHERE {m}) u) w
  WHERE cand = 1 AND best IS NOT NULL AND eff - best <= {window})""")
        reached = " UNION ALL ".join(f"SELECT project, device_id, sess_no, {k + 1} AS step FROM q{fi}_{k}"
                                     for k in range(len(f["steps"])))
        ctes.append(f"r{fi} AS (SELECT project, device_id, sess_no, max(step) AS steps FROM ({reached}) x "
                    "GROUP BY project, device_id, sess_no)")
        sel.append(f"SELECT s.sess_id AS session_id, s.project AS project, s.device_id AS device_id, "
                   f"{quote(f['name'])} AS funnel, coalesce(r.steps, 0) AS steps_reached FROM s LEFT JOIN r{fi} r "
                   "ON r.project = s.project AND r.device_id = s.device_id AND r.sess_no = s.sess_no")
    ctes.append("s AS (SELECT project, device_id, sess_no, min(sess_id) AS sess_id FROM tl "
                "GROUP BY project, device_id, sess_no)")
    stage("funnels", "v_session_funnels",
          ("WITH " + ",\n".join(ctes) + "\n" + "\nUNION ALL\n".join(sel)).replace("{", "{{").replace("}", "}}"))
    # Every step of a project's funnel, with the sessions that reached it.
    stage("funnels", "v_funnel_steps", ("""
WITH st AS (""" + " UNION ALL ".join(steps) + """),
n AS (
  SELECT f.project AS project, st.funnel AS funnel, st.step AS step, st.step_name AS step_name,
    sum(CASE WHEN f.steps_reached >= st.step THEN 1 ELSE 0 END) AS entered
  FROM v_session_funnels f JOIN st ON st.funnel = f.funnel
  GROUP BY f.project, st.funnel, st.step, st.step_name)
SELECT project, funnel, step, step_name, entered,
  CASE WHEN max(CASE WHEN step = 1 THEN entered END) OVER (PARTITION BY project, funnel) > 0
       THEN entered / max(CASE WHEN step = 1 THEN entered END) OVER (PARTITION BY project, funnel)
       ELSE 0 END AS conversion_rate
FROM n
""").replace("{", "{{").replace("}", "}}"))

# 10. Heatmap cells in page coordinates: clicks (the sender's page coordinates, else the
# client ones plus the document's scroll before the click), mouse positions (plus the
# scroll at the position's own time: the last scroll record of the page instance by then
# among those that came before the batch, else the scroll the instance started with),
# and the depth bands each session reached.
stage("heatmap", "depth", f"""
SELECT project, device_id, sess_no, url, {bucket('start_width')} AS b, greatest(0, max(deepest)) AS d,
  max(CASE WHEN page_height > 0 THEN page_height ELSE 0 END) AS h
FROM pages GROUP BY project, device_id, sess_no, url, {bucket('start_width')}
""")

stage("heatmap", "v_heatmap_cells", f"""
WITH clicks AS (
  SELECT project, page_url AS url, 'click' AS heat_kind, {bucket('width_before')} AS viewport_bucket,
    CAST(floor((CASE WHEN has_page THEN page_x ELSE x + doc_x_before END) / {{cell}}) AS BIGINT) AS cell_x,
    CAST(floor((CASE WHEN has_page THEN page_y ELSE y + doc_y_before END) / {{cell}}) AS BIGINT) AS cell_y
  FROM tl WHERE kind = 'click' AND pv_no > 0 AND has_position),
base AS (
  SELECT {INST}, argMin(doc_x_before, ord) AS bx, argMin(doc_y_before, ord) AS by_
  FROM tl WHERE pv_no > 0 GROUP BY {INST}),
u AS (
  SELECT {INST}, eff AS tm, ord AS o2, ord, rec_x, rec_y, 0 AS is_move,
    NULL AS url, NULL AS width, NULL AS mx, NULL AS my
  FROM tl WHERE pv_no > 0 AND rec_x IS NOT NULL
  UNION ALL
  SELECT {INST}, eff + greatest(-5000, least(0, "offset")) AS tm,
    CASE WHEN "offset" >= 0 THEN ord ELSE 4000000000000000000 END AS o2, ord, NULL AS rec_x, NULL AS rec_y, 1 AS is_move,
    page_url AS url, width_before AS width, x AS mx, y AS my
  FROM tl WHERE kind = 'move' AND pv_no > 0),
u2 AS (
  SELECT *,
    max(CASE WHEN rec_x IS NOT NULL THEN ord * {PACK} + rec_x + 2147483648 END)
      OVER (PARTITION BY {INST} ORDER BY tm, o2 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS px,
    max(CASE WHEN rec_y IS NOT NULL THEN ord * {PACK} + rec_y + 2147483648 END)
      OVER (PARTITION BY {INST} ORDER BY tm, o2 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS py
  FROM u),
moves AS (
  SELECT u2.project AS project, u2.url AS url, 'move' AS kind, {bucket('u2.width')} AS viewport_bucket,
    CAST(floor((u2.mx + coalesce(u2.px % {PACK} - 2147483648, base.bx)) / {{cell}}) AS BIGINT) AS cell_x,
    CAST(floor((u2.my + coalesce(u2.py % {PACK} - 2147483648, base.by_)) / {{cell}}) AS BIGINT) AS cell_y
  FROM u2 JOIN base ON base.project = u2.project AND base.device_id = u2.device_id AND base.epoch = u2.epoch
    AND base.tab_id = u2.tab_id AND base.pv_no = u2.pv_no AND base.sess_no = u2.sess_no
  WHERE u2.is_move = 1),
hist AS (
  SELECT project, url, b, intDiv(d + {{cell}} - 1, {{cell}}) AS reached, count(*) AS n
  FROM depth WHERE d > 0 GROUP BY project, url, b, intDiv(d + {{cell}} - 1, {{cell}})),
g AS (SELECT project, url, b, max(reached) AS mr FROM hist GROUP BY project, url, b),
bands AS (
  SELECT g.project AS project, g.url AS url, g.b AS b, nb.number AS band
  FROM g CROSS JOIN (SELECT number FROM numbers(4194304) WHERE number < (SELECT max(mr) FROM g)) nb
  WHERE nb.number < g.mr),
su AS (
  SELECT project, url, b, reached AS r, n, 0 AS is_band FROM hist
  UNION ALL SELECT project, url, b, CAST(band AS BIGINT) + 1 AS r, 0 AS n, 1 AS is_band FROM bands),
scroll AS (
  SELECT project, url, 'scroll' AS kind, b AS viewport_bucket, 0 AS cell_x, r - 1 AS cell_y, cnt AS count FROM (
    SELECT *, sum(n) OVER (PARTITION BY project, url, b ORDER BY r DESC, is_band
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cnt FROM su) x
  WHERE is_band = 1)
SELECT project, url, heat_kind AS kind, viewport_bucket, cell_x, cell_y, count(*) AS count FROM clicks
  GROUP BY project, url, heat_kind, viewport_bucket, cell_x, cell_y
UNION ALL
SELECT project, url, kind, viewport_bucket, cell_x, cell_y, count(*) AS count FROM moves
  GROUP BY project, url, kind, viewport_bucket, cell_x, cell_y
UNION ALL
SELECT project, url, kind, viewport_bucket, cell_x, cell_y, count FROM scroll
""")

# 11. Scroll depth: per URL, the (session, viewport bucket) observations whose deepest
# visible y (rounded down to a cell) reaches each band of the page height (the deepest
# observation's when the height is unknown).
BANDS = " UNION ALL ".join(f"SELECT {b} AS band" for b in range(0, 101, P["band"]))
stage("heatmap", "v_scroll_depth", f"""
WITH o AS (SELECT project, url, d - d % {{cell}} AS rd, h FROM depth),
o2 AS (SELECT *, max(rd) OVER (PARTITION BY project, url) AS any_d FROM o),
o3 AS (
  SELECT project, url,
    CASE WHEN (CASE WHEN h > 0 THEN h ELSE any_d END) = 0 THEN 100
         ELSE least(100, intDiv(rd * 100, CASE WHEN h > 0 THEN h ELSE any_d END)) END AS pct
  FROM o2),
bands AS ({BANDS})
SELECT project, url, band AS depth_pct, count(*) AS sessions
FROM o3 CROSS JOIN bands WHERE pct >= band GROUP BY project, url, band
""")

# 12. Page stats over counted page views: views, distinct devices, time on page, exits
# (a session's last page view) and bounces (sessions of one page view); and the signal
# rows on each page. A page shows with a counted view or a signal.
stage("aggregates", "v_page_stats", """
WITH agg AS (
  SELECT project, url, count(*) AS page_views, count(DISTINCT device_id) AS visitors, sum(last - start) AS total
  FROM pages GROUP BY project, url),
ex AS (
  SELECT project, url, count(*) AS exits, sum(bounce) AS bounces FROM (
    SELECT project, argMax(url, pv_ord) AS url, CASE WHEN count(*) = 1 THEN 1 ELSE 0 END AS bounce
    FROM pages GROUP BY project, device_id, sess_no) s
  GROUP BY project, url),
sig AS (
  SELECT project, url, sum(r) AS rage, sum(d) AS dead, sum(e) AS err, sum(q) AS qb, sum(s) AS xs, sum(c) AS tc FROM (
    SELECT project, url, 1 AS r, 0 AS d, 0 AS e, 0 AS q, 0 AS s, 0 AS c FROM v_rage_clicks
    UNION ALL SELECT project, url, 0, 1, 0, 0, 0, 0 FROM v_dead_clicks
    UNION ALL SELECT project, url, 0, 0, 1, 0, 0, 0 FROM v_error_clicks
    UNION ALL SELECT project, url, 0, 0, 0, 1, 0, 0 FROM v_quick_backs
    UNION ALL SELECT project, url, 0, 0, 0, 0, 1, 0 FROM v_excessive_scrolls
    UNION ALL SELECT project, url, 0, 0, 0, 0, 0, 1 FROM v_thrashed_cursors) x
  GROUP BY project, url),
k AS (
  SELECT DISTINCT project, url FROM (
    SELECT project, url FROM agg UNION ALL SELECT project, url FROM sig) y)
SELECT k.project AS project, k.url AS url, coalesce(agg.page_views, 0) AS page_views,
  coalesce(agg.visitors, 0) AS visitors,
  CASE WHEN coalesce(agg.page_views, 0) > 0 THEN agg.total / agg.page_views ELSE 0 END AS avg_time_ms,
  coalesce(ex.exits, 0) AS exits, coalesce(ex.bounces, 0) AS bounces, coalesce(agg.total, 0) AS total_time_ms,
  coalesce(sig.rage, 0) AS rage_clicks, coalesce(sig.dead, 0) AS dead_clicks, coalesce(sig.err, 0) AS error_clicks,
  coalesce(sig.qb, 0) AS quick_backs, coalesce(sig.xs, 0) AS excessive_scrolls, coalesce(sig.tc, 0) AS thrashed_cursors
FROM k
LEFT JOIN agg ON agg.project = k.project AND agg.url = k.url
LEFT JOIN ex ON ex.project = k.project AND ex.url = k.url
LEFT JOIN sig ON sig.project = k.project AND sig.url = k.url
""")

# 13. Errors by fingerprint (the first occurrence's message; ties by the message's
# symbol, as the engine orders them), and every error event.
stage("aggregates", "v_error_events", """
SELECT sess_id AS session_id, project, url_of AS url, eff AS ts, fingerprint, message FROM tl WHERE kind = 'error'
""")
stage("aggregates", "v_errors", """
WITH e AS (SELECT project, fingerprint, message, message_sym, eff, sess_id FROM tl WHERE kind = 'error'),
f AS (
  SELECT project, fingerprint, count(*) AS occurrences, count(DISTINCT sess_id) AS sessions,
    min(eff) AS first_seen, max(eff) AS last_seen
  FROM e GROUP BY project, fingerprint),
m AS (
  SELECT e.project AS project, e.fingerprint AS fingerprint, argMin(e.message, e.message_sym) AS message
  FROM e JOIN f ON f.project = e.project AND f.fingerprint = e.fingerprint AND e.eff = f.first_seen
  GROUP BY e.project, e.fingerprint)
SELECT f.project AS project, f.fingerprint AS fingerprint, m.message AS message, f.occurrences AS occurrences,
  f.sessions AS sessions, f.first_seen AS first_seen, f.last_seen AS last_seen
FROM f JOIN m ON m.project = f.project AND m.fingerprint = f.fingerprint
""")

# 14. Element clicks: clicks on a page view's elements and the signals they were part of
# (rage burst members, dead and error clicks, by the click's page URL); the tag is the
# largest by symbol, as the engine adds them up.
stage("clicks", "v_element_clicks", """
WITH f AS (
  SELECT project, page_url AS url, selector, tag, tag_sym, sess_id, 1 AS c, 0 AS r, 0 AS d, 0 AS e
  FROM tl WHERE kind = 'click' AND pv_no > 0
  UNION ALL SELECT project, page_url, selector, NULL, NULL, NULL, 0, 1, 0, 0 FROM rage_members
  UNION ALL SELECT project, url, selector, NULL, NULL, NULL, 0, 0, 1, 0 FROM v_dead_clicks
  UNION ALL SELECT project, url, selector, NULL, NULL, NULL, 0, 0, 0, 1 FROM v_error_clicks)
SELECT project, url, selector, coalesce(argMax(tag, tag_sym), '') AS tag, sum(c) AS clicks, sum(r) AS rage_clicks,
  sum(d) AS dead_clicks, sum(e) AS error_clicks, count(DISTINCT sess_id) AS sessions
FROM f GROUP BY project, url, selector HAVING sum(c) > 0
""")


def files(n):
    return [f"{DIR}/events-{i:04}.parquet" for i in range(n)]


class DuckEngine:
    name = "duckdb"

    def __init__(self):
        import duckdb
        self.con = duckdb.connect()
        for m in ["CREATE MACRO intDiv(a, b) AS a // b",
                  "CREATE MACRO toNullable(x) AS x",
                  "CREATE MACRO endsWith(a, b) AS ends_with(a, b)",
                  "CREATE MACRO numbers(n) AS TABLE SELECT range AS number FROM range(n)"]:
            self.con.execute(m)

    def source(self, n):
        return "read_parquet([" + ",".join(f"'{f}'" for f in files(n)) + "])"

    def build(self, table, sql):
        self.con.execute(f"DROP TABLE IF EXISTS {table}")
        if sql is not None:
            self.con.execute(f"CREATE TEMPORARY TABLE {table} AS {sql}")

    def fetch(self, table):
        rel = self.con.sql(f"SELECT * FROM {table}")
        return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()

    def close(self):
        self.con.close()


class ChEngine:
    name = "chdb"

    def __init__(self):
        from chdb import session
        self.s = session.Session()
        self.s.query("SET join_use_nulls = 1")

    def source(self, n):
        return f"file('{DIR}/events-{{0000..{n - 1:04}}}.parquet', Parquet)"

    def build(self, table, sql):
        self.s.query(f"DROP TEMPORARY TABLE IF EXISTS {table}")
        if sql is not None:
            self.s.query(f"CREATE TEMPORARY TABLE {table} ENGINE = Memory AS {sql}")

    def fetch(self, table):
        return self.s.query(f"SELECT * FROM {table}", "ArrowTable")

    def close(self):
        self.s.close()


def recompute(engine, n):
    """Builds every stage over the first n files; returns the time per group (s)."""
    times = collections.OrderedDict()
    src = engine.source(n)
    for group, table, sql in STAGES:
        started = time.perf_counter()
        try:
            engine.build(table, sql if sql is None else sql.replace("{src}", src))
        except Exception as e:
            raise RuntimeError(f"{engine.name}: building {table}: {e}") from e
        times[group] = times.get(group, 0.0) + time.perf_counter() - started
    return times


def normal(v):
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, bool):
        return v
    return v


def rows_of(table, columns, sessions=None):
    """The rows of a pyarrow table over `columns`, normalised: times as ms integers,
    floats rounded, session ids as `project|device_id|started_at`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    cols = []
    for c in columns:
        a = table.column(c)
        if pa.types.is_timestamp(a.type):
            a = pc.cast(a, pa.timestamp("ms", tz=a.type.tz)).cast(pa.int64())
        elif pa.types.is_boolean(a.type):
            pass
        elif pa.types.is_integer(a.type) or pa.types.is_decimal(a.type):
            # DuckDB sums to 128-bit integers, which come as decimals.
            a = a.cast(pa.int64())
        elif pa.types.is_dictionary(a.type):
            a = a.cast(a.type.value_type)
        vals = a.to_pylist()
        if c == "session_id" and sessions is not None:
            vals = [sessions.get(v, f"unknown session {v}") for v in vals]
        cols.append(vals)
    return [tuple(normal(v) for v in r) for r in zip(*cols)] if cols else []


def compare(name, want_table, got_table, sessions):
    """(equal, notes) of one view."""
    notes = []
    want_cols = set(want_table.column_names)
    got_cols = list(got_table.column_names)
    missing = want_cols - set(got_cols) - EXCLUDED.get(name, set())
    extra = set(got_cols) - want_cols
    if missing or extra:
        return False, [f"{name}: columns differ: the peer lacks {sorted(missing)}, has extra {sorted(extra)}"]
    want = collections.Counter(rows_of(want_table, got_cols, sessions))
    got = collections.Counter(rows_of(got_table, got_cols))
    if want == got:
        return True, []
    only_want = sorted((want - got).elements(), key=repr)
    only_got = sorted((got - want).elements(), key=repr)
    notes.append(f"{name}: {sum(want.values())} rows in sightflow, {sum(got.values())} in the peer; "
                 f"{len(only_want)} only in sightflow, {len(only_got)} only in the peer; columns {got_cols}")
    for r in only_want[:5]:
        notes.append(f"  sightflow: {r}")
    for r in only_got[:5]:
        notes.append(f"  peer:      {r}")
    return False, notes


def main():
    global DIR
    DIR, at, answers = sys.argv[1], [int(n) for n in sys.argv[2].split(",")], sys.argv[3]
    import pyarrow.parquet as pq
    want = {f[:-len(".parquet")]: pq.read_table(os.path.join(answers, f))
            for f in sorted(os.listdir(answers)) if f.endswith(".parquet")}
    s = want["sessions"]
    ids = s.column("session_id").to_pylist()
    starts = rows_of(s, ["started_at"])
    sessions = {i: f"{p}|{d}|{st[0]}" for i, p, d, st in
                zip(ids, s.column("project").to_pylist(), s.column("device_id").to_pylist(), starts)}
    if len(sessions) != len(ids):
        print("sightflow's sessions table repeats a session id")
    views = [t[2:] for _, t, _ in STAGES if t.startswith("v_")]
    ok = True
    for make in [DuckEngine, ChEngine]:
        try:
            engine = make()
        except ImportError as e:
            print(f"{make.name}: not installed ({e}); pip install duckdb chdb")
            ok = False
            continue
        times, groups = [], {}
        try:
            for n in at:
                started = time.perf_counter()
                groups = recompute(engine, n)
                times.append(time.perf_counter() - started)
        except RuntimeError as e:
            print(str(e).splitlines()[0][:2000])
            engine.close()
            ok = False
            continue
        equal = {}
        for v in views:
            if v not in want:
                equal[v] = False
                print(f"  {v}: not in sightflow's snapshot")
                continue
            same, notes = compare(v, want[v], engine.fetch("v_" + v), sessions)
            equal[v] = same
            for line in notes:
                print(f"  {engine.name} {line}")
        for v in want:
            if v not in views:
                equal[v] = False
                print(f"  {v}: in sightflow's snapshot, not computed by the peers")
        ok &= all(equal.values())
        # The next engine gets the memory.
        engine.close()
        print(json.dumps({"engine": engine.name, "recompute_ms": [t * 1000 for t in times],
                          "last_ms": times[-1] * 1000,
                          "groups_ms": {g: t * 1000 for g, t in groups.items()},
                          "views": equal, "equal": all(equal.values())}))
    sys.exit(0 if ok else 1)


main()
