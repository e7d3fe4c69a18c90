"""Benchmark: SQLFrontend lookups at 1k, 10k, 100k and 1M catalog entries.

Prints per-call latencies (median and 95th percentile, microseconds) of the public frontend
API at each catalog size, and the ratio of the largest size to the smallest. It asserts nothing
about time: the point is that an indexed lookup costs the same at every size.

The catalog is filled by bulk inserts into the frontend's own tables (rows identical to what
registration writes), growing one database through the sizes. Each entry has a two-entry
lineage with three tracked options; a ``(run_id, data_type)`` has 10 lineage variants (10
values of ``threshold``), a run 10 data types. Locations are not verified
(``verify_locations=False``): no payloads exist, and a verified find adds one manifest read,
which does not depend on the catalog size.

Usage::

    python tests/benchmarks/bench_sql_catalog.py                     # SQLite (and PostgreSQL
    python tests/benchmarks/bench_sql_catalog.py --db sqlite          # if its binaries exist)
    python tests/benchmarks/bench_sql_catalog.py --sizes 1000,10000 --queries 500
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from storage import DataKey, Location
from storage.frontends.sql import (
    SQLFrontend,
    deps_table,
    entries_table,
    locations_table,
    options_table,
    value_hash,
)
from storage.keys import canonical_json, lineage_hash
from storage.manifest import Manifest

PER_TYPE = 10  # lineage variants per (run_id, data_type)
TYPES = 10  # data types per run
PER_RUN = PER_TYPE * TYPES
BATCH = 20_000


def lineage_of(
    i: int, records_version: str = "2", threshold: int | None = None
) -> tuple[str, str, dict[str, Any]]:
    run = f"run_{i // PER_RUN:06d}"
    dt = f"type_{(i // PER_TYPE) % TYPES}"
    t = i % PER_TYPE if threshold is None else threshold
    lin = {
        dt: [f"Plugin_{dt}", "1", {"threshold": t, "mode": "fast"}],
        "records": ["Records", records_version, {"gain": 1}],
    }
    return run, dt, lin


def key_of(i: int, records_version: str = "2", threshold: int | None = None) -> DataKey:
    run, dt, lin = lineage_of(i, records_version, threshold)
    return DataKey(run, dt, lin)


_VH: dict[str, str] = {}


def _vh(v: Any) -> str:
    c = canonical_json(v)
    if c not in _VH:
        _VH[c] = value_hash(v)
    return _VH[c]


def fill(fe: SQLFrontend, start: int, stop: int) -> None:
    """Insert entries ``start .. stop-1`` in batches (ids after the largest one so far)."""
    now = "2026-01-01T00:00:00+00:00"
    with fe.engine.connect() as conn:
        first_id = (conn.exec_driver_sql("SELECT max(id) FROM strata_entries").scalar() or 0) + 1
    for lo in range(start, stop, BATCH):
        hi = min(stop, lo + BATCH)
        entries, locs, deps, opts = [], [], [], []
        for i in range(lo, hi):
            run, dt, lin = lineage_of(i)
            h = lineage_hash(lin)
            eid = first_id + i - start
            entries.append(
                {
                    "id": eid,
                    "run_id": run,
                    "data_type": dt,
                    "lineage_hash": h,
                    "lineage": canonical_json(lin),
                    "state": "committed",
                    "rows": 1000,
                    "nbytes": 100_000,
                    "start_ns": 0,
                    "end_ns": 10**9,
                    "partitions": 10,
                    "dtype": '[["time","<i8",[]]]',
                    "meta": "{}",
                    "writing_started": now,
                    "writing_ended": now,
                    "strata_version": "bench",
                    "registered_at": now,
                }
            )
            locs.append(
                {
                    "entry_id": eid,
                    "backend": "data",
                    "backend_key": f"{run}/{dt}-{h}",
                    "attempt": "a20260101T000000000000Z_000000000000",
                    "stored_bytes": 50_000,
                    "registered_at": now,
                }
            )
            for dep, (plugin, version, options) in lin.items():
                deps.append(
                    {
                        "entry_id": eid,
                        "dep_type": dep,
                        "plugin": plugin,
                        "version": canonical_json(version),
                    }
                )
                for name, v in options.items():
                    opts.append(
                        {
                            "entry_id": eid,
                            "dep_type": dep,
                            "option": name,
                            "value_hash": _vh(v),
                            "value": canonical_json(v),
                        }
                    )
        tables = (
            (entries_table, entries),
            (locations_table, locs),
            (deps_table, deps),
            (options_table, opts),
        )
        if fe.dialect == "postgresql":
            copy_rows(fe, tables)
            continue
        with fe.engine.begin() as conn:
            for table, rows in tables:
                conn.execute(table.insert(), rows)
    with fe.engine.begin() as conn:
        if fe.dialect == "postgresql":
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('strata_entries', 'id'), "
                "(SELECT max(id) FROM strata_entries))"
            )
        conn.exec_driver_sql("ANALYZE")


def copy_rows(fe: SQLFrontend, tables: Any) -> None:
    """PostgreSQL bulk load with COPY (executemany would dominate the benchmark's run time)."""
    raw = fe.engine.raw_connection()
    try:
        cur = raw.cursor()
        for table, rows in tables:
            cols = list(rows[0])
            names = ", ".join(f'"{c}"' for c in cols)
            with cur.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for r in rows:
                    copy.write_row([r[c] for c in cols])
        raw.commit()
    finally:
        raw.close()


def timed(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """Median and 95th percentile of ``n`` calls, in microseconds."""
    fn()  # warm up (connection pool, statement cache)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def measure(fe: SQLFrontend, size: int, queries: int, rng: random.Random) -> dict[str, Any]:
    stored = [key_of(rng.randrange(size)) for _ in range(queries)]
    missing = [key_of(size + rng.randrange(size)) for _ in range(queries)]
    # not stored exactly: found only fuzzily (10 candidates; 1 candidate)
    other_threshold = [key_of(rng.randrange(size), threshold=99) for _ in range(queries)]
    other_records = [key_of(rng.randrange(size), records_version="9") for _ in range(queries)]
    it = {
        name: iter(keys * 3)
        for name, keys in (
            ("hit", stored),
            ("miss", missing),
            ("fz", other_threshold),
            ("ff", other_records),
        )
    }
    batches = [[key_of(rng.randrange(2 * size)) for _ in range(100)] for _ in range(50)]
    bi = iter(batches * 100)
    runs = [f"run_{rng.randrange(max(1, size // PER_RUN)):06d}" for _ in range(queries)]
    ri = iter(runs * 3)
    reg = iter(range(10**9, 10**9 + 10 * queries))

    def miss() -> None:
        assert not fe.is_stored(next(it["miss"]))

    def fuzzy_options() -> None:
        fe.find_key(next(it["fz"]), fuzzy_for_options=("threshold",))  # 10 candidates

    def fuzzy_types() -> None:
        fe.find_key(next(it["ff"]), fuzzy_for=("records",))  # 1 candidate

    def register() -> None:
        k = key_of(next(reg))
        m = Manifest(
            k, [["time", "<i8", []]], {}, "a20260101T000000000000Z_000000000000", [], [], "", ""
        )
        fe._register(k, Location("data", f"{k.run_id}/{k.name}"), m)

    return {
        "find (hit)": timed(lambda: fe.find(next(it["hit"])), queries),
        "find (miss)": timed(miss, queries),
        "find fuzzy_for_options": timed(fuzzy_options, queries),
        "find fuzzy_for": timed(fuzzy_types, queries),
        "find_several (100 keys)": timed(lambda: fe.find_several(next(bi)), max(20, queries // 20)),
        "list(run_id) (100 entries)": timed(lambda: fe.list(next(ri)), max(20, queries // 10)),
        "register (1 key, 1 tx)": timed(register, max(20, queries // 10)),
    }


def run(db_url: str, label: str, sizes: list[int], queries: int, data_dir: str) -> None:
    fe = SQLFrontend(db_url, data_url=data_dir, verify_locations=False)
    rng = random.Random(0)
    results: dict[int, dict[str, Any]] = {}
    have = 0
    for size in sizes:
        t = time.perf_counter()
        fill(fe, have, size)
        have = size
        print(
            f"[{label}] filled to {size:,} entries in {time.perf_counter() - t:.1f} s", flush=True
        )
        results[size] = measure(fe, size, queries, rng)
    ops = list(results[sizes[0]])
    width = max(len(o) for o in ops)
    print(f"\n{label}: per-call latency, median / p95 in microseconds ({queries} calls)")
    header = f"{'operation':<{width}}  " + "  ".join(f"{s:>17,}" for s in sizes)
    print(header + f"  {'ratio':>7}")
    print("-" * (len(header) + 9))
    for op in ops:
        cells = "  ".join(f"{results[s][op][0]:>8.0f} /{results[s][op][1]:>7.0f}" for s in sizes)
        ratio = results[sizes[-1]][op][0] / results[sizes[0]][op][0]
        print(f"{op:<{width}}  {cells}  {ratio:>6.2f}x")
    print(f"(ratio: median at {sizes[-1]:,} entries / median at {sizes[0]:,} entries)\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    dbs = a.db.split(",")
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        if "sqlite" in dbs:
            run(f"sqlite:///{tmp}/catalog.db", "SQLite (file, WAL)", sizes, a.queries, tmp)
        if "postgresql" in dbs:
            from tests.sql.postgres import PostgresServer, find_bindir

            bindir = find_bindir()
            if bindir is None:
                print("PostgreSQL binaries not found: skipping PostgreSQL")
                return
            server = PostgresServer(bindir).start()
            try:
                url = server.create_database()
                run(url, "PostgreSQL (local server, 127.0.0.1)", sizes, a.queries, tmp)
            finally:
                from storage.frontends.sql import _ENGINES

                for engine in _ENGINES.values():
                    engine.dispose()
                server.stop()


if __name__ == "__main__":
    main()
