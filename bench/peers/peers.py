#!/usr/bin/env python3
"""Peers for the incremental-update benchmark: recompute views from scratch with DuckDB
and with ClickHouse's embedded engine (chdb) over the Parquet batches that
`sightflow-bench peers` exported, after every new batch, and compare the final answers
with sightflow's.

The SQL implements the same definitions as DESIGN.md for the compared views:
sessions (a new one after > 30 min without events or at midnight UTC), page views,
clicks, dead clicks (no mutation, navigation, snapshot or input within 2500 ms, no scroll
within 100 ms, text fields never dead) and error clicks (an error within 1000 ms after
the click, before the next page view). It is written once in SQL that both engines run.

usage: peers.py DIR FILES_AT ANSWERS.json

FILES_AT lists (comma-separated) after how many of the exported files to recompute; the
last one is where the answers are compared.
"""
import json
import sys
import time

DIR, AT, ANSWERS = sys.argv[1], [int(n) for n in sys.argv[2].split(",")], sys.argv[3]

VIEWS = """
WITH ev AS (SELECT * FROM {src}),
gaps AS (
  SELECT device_id, ts, kind,
         max(ts) OVER (PARTITION BY device_id ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev
  FROM ev),
clicks AS (SELECT device_id, tab_id, seq, ts, text_field FROM ev WHERE kind = 'click'),
judged AS (
  SELECT c.device_id, c.tab_id, c.seq, c.text_field,
         sum(CASE WHEN e.kind IN ('mutation', 'page_view', 'snapshot', 'input') AND e.ts > c.ts AND e.ts <= c.ts + 2500 THEN 1
                  WHEN e.kind = 'scroll' AND e.ts > c.ts AND e.ts <= c.ts + 100 THEN 1 ELSE 0 END) AS reactions,
         min(CASE WHEN e.kind = 'page_view' AND e.ts > c.ts THEN e.ts END) AS next_page,
         min(CASE WHEN e.kind = 'error' AND e.ts >= c.ts AND e.ts <= c.ts + 1000 THEN e.ts END) AS first_error
  FROM clicks c JOIN ev e ON e.device_id = c.device_id
  GROUP BY c.device_id, c.tab_id, c.seq, c.text_field)
SELECT
  (SELECT sum(CASE WHEN prev IS NULL OR ts - prev > 1800000 OR intDiv(ts, 86400000) <> intDiv(prev, 86400000) THEN 1 ELSE 0 END) FROM gaps) AS sessions,
  (SELECT count(*) FROM ev WHERE kind = 'page_view') AS page_views,
  (SELECT count(*) FROM ev WHERE kind = 'click') AS clicks,
  (SELECT count(*) FROM judged WHERE reactions = 0 AND NOT text_field) AS dead_clicks,
  (SELECT count(*) FROM judged WHERE first_error IS NOT NULL AND (next_page IS NULL OR first_error <= next_page)) AS error_clicks
"""


def files(n):
    return [f"{DIR}/events-{i:04}.parquet" for i in range(n)]


def duckdb_engine():
    import duckdb
    con = duckdb.connect()
    con.execute("CREATE MACRO intDiv(a, b) AS a // b")

    def run(n):
        src = "read_parquet([" + ",".join(f"'{f}'" for f in files(n)) + "])"
        cur = con.execute(VIEWS.format(src=src))
        cols = [d[0] for d in cur.description]
        return dict(zip(cols, [int(v or 0) for v in cur.fetchone()]))
    return run


def chdb_engine():
    import chdb

    def run(n):
        src = f"file('{DIR}/events-{{0000..{n - 1:04}}}.parquet', Parquet)"
        res = chdb.query(VIEWS.format(src=src), "JSON")
        row = json.loads(res.bytes())["data"][0]
        return {k: int(v or 0) for k, v in row.items()}
    return run


def main():
    want = json.load(open(ANSWERS))
    ok = True
    for name, make in [("duckdb", duckdb_engine), ("chdb", chdb_engine)]:
        try:
            run = make()
        except ImportError as e:
            print(f"{name}: not installed ({e}); pip install duckdb chdb")
            ok = False
            continue
        times = []
        got = None
        for n in AT:
            started = time.perf_counter()
            got = run(n)
            times.append(time.perf_counter() - started)
        same = all(got.get(k) == want[k] for k in want)
        ok &= same
        times_ms = [t * 1000 for t in times]
        print(json.dumps({"engine": name, "recompute_ms": times_ms, "last_ms": times_ms[-1],
                          "answers": got, "equal": same}))
    sys.exit(0 if ok else 1)


main()
