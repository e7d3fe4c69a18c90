"""Benchmark: SQLFrontend lookups at 1k, 10k, 100k and 1M catalog entries.

Prints per-call latencies (median and 95th percentile, microseconds) of the public frontend
API at each catalog size, and the ratio of the largest size to the smallest. It asserts nothing
about time: the point is that an indexed lookup costs the same at every size.

One catalog per size is filled by bulk inserts into the frontend's own tables (rows as
registration writes them), then all sizes are measured in interleaved rounds, so that a change
of machine load during the run affects every size alike. Each entry has a two-entry
lineage with three tracked options; a ``(run_id, data_type)`` has 10 lineage variants (10
values of ``threshold``), a run 10 data types. Locations are not verified
(``verify_locations=False``): no payloads exist, and a verified find adds one manifest read,
which does not depend on the catalog size. At the end it prints the database's query plans for
an exact and a fuzzy find at the largest size.

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

from strata.storage import DataKey, Location
from strata.storage.frontends.sql import (
    SQLFrontend,
    deps_table,
    entries_table,
    locations_table,
    options_table,
    value_hash,
)
from strata.storage.keys import canonical_json, lineage_hash
from strata.storage.manifest import Manifest

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


def operations(fe: SQLFrontend, size: int, rng: random.Random) -> dict[str, Callable[[], Any]]:
    """The measured calls on a catalog of ``size`` entries, each drawing fresh random keys."""
    reg = iter(range(10**9, 10**10))

    def hit() -> None:
        fe.find(key_of(rng.randrange(size)))

    def miss() -> None:
        assert not fe.is_stored(key_of(size + rng.randrange(size)))

    def fuzzy_options() -> None:  # not stored exactly; 10 candidates in the database
        fe.find_key(key_of(rng.randrange(size), threshold=99), fuzzy_for_options=("threshold",))

    def fuzzy_types() -> None:  # not stored exactly; 1 candidate
        fe.find_key(key_of(rng.randrange(size), records_version="9"), fuzzy_for=("records",))

    def several() -> None:  # half of them stored
        fe.find_several([key_of(rng.randrange(2 * size)) for _ in range(100)])

    def listing() -> None:
        fe.list(f"run_{rng.randrange(max(1, size // PER_RUN)):06d}")

    def register() -> None:
        k = key_of(next(reg))
        m = Manifest(
            k, [["time", "<i8", []]], {}, "a20260101T000000000000Z_000000000000", [], [], "", ""
        )
        fe._register(k, Location("data", f"{k.run_id}/{k.name}"), m)

    return {
        "find (hit)": hit,
        "find (miss)": miss,
        "find fuzzy_for_options (10 cand.)": fuzzy_options,
        "find fuzzy_for (1 candidate)": fuzzy_types,
        "find_several (100 keys)": several,
        "list(run_id) (100 entries)": listing,
        "register (1 key, 1 transaction)": register,
    }


# calls per operation, relative to --queries
WEIGHT = {"find_several (100 keys)": 0.05, "list(run_id) (100 entries)": 0.1}


def run(urls: dict[int, str], label: str, queries: int, data_dir: str, rounds: int = 10) -> None:
    """Fill one catalog per size, then measure them in interleaved rounds, so that changes of
    machine load during the run affect every size alike.
    """
    sizes = sorted(urls)
    fes = {n: SQLFrontend(urls[n], data_url=data_dir, verify_locations=False) for n in sizes}
    for n in sizes:
        t = time.perf_counter()
        fill(fes[n], 0, n)
        print(f"[{label}] {n:>9,} entries filled in {time.perf_counter() - t:6.1f} s", flush=True)
    rng = random.Random(0)
    ops = {n: operations(fes[n], n, rng) for n in sizes}
    names = list(ops[sizes[0]])
    times: dict[tuple[int, str], list[float]] = {(n, o): [] for n in sizes for o in names}
    for n in sizes:  # warm up: connection pool, statement caches
        for o in names:
            ops[n][o]()
    for _ in range(rounds):
        for o in names:
            calls = max(2, int(queries * WEIGHT.get(o, 1.0)) // rounds)
            for n in sizes:
                fn = ops[n][o]
                for _ in range(calls):
                    t = time.perf_counter()
                    fn()
                    times[(n, o)].append((time.perf_counter() - t) * 1e6)
    width = max(len(o) for o in names)
    print(f"\n{label}: per-call latency in microseconds, median / 95th percentile")
    header = f"{'operation':<{width}}  " + "  ".join(f"{f'{n:,} entries':>17}" for n in sizes)
    print(header + f"  {'ratio':>7}")
    print("-" * (len(header) + 9))
    for o in names:
        cells = []
        for n in sizes:
            ts = sorted(times[(n, o)])
            cells.append(f"{statistics.median(ts):>8.0f} /{ts[int(0.95 * (len(ts) - 1))]:>7.0f}")
        ratio = statistics.median(times[(sizes[-1], o)]) / statistics.median(times[(sizes[0], o)])
        print(f"{o:<{width}}  " + "  ".join(cells) + f"  {ratio:>6.2f}x")
    print(f"(ratio: median at {sizes[-1]:,} entries / median at {sizes[0]:,})")
    print_plans(fes[sizes[-1]], sizes[-1])


def print_plans(fe: SQLFrontend, size: int) -> None:
    """The database's plans for an exact and a fuzzy lookup: index probes, no table scans."""
    from strata.storage.frontends.sql import _exact_statement, _fuzzy_statement

    key = key_of(size // 2)
    with fe.engine.connect() as conn:
        h = lineage_hash(key.lineage)
        exact = _exact_statement()
        exact_params = {"run_id": key.run_id, "data_type": key.data_type, "hash": h}
        fuzzy = _fuzzy_statement(False, True, True, True)
        fuzzy_params = {
            "run_id": key.run_id,
            "data_type": key.data_type,
            "n_deps": 2,
            "n_opts": 2,
            "skip_opts": ["threshold"],
            "want_deps": [("records", "Records", '"2"'), (key.data_type, "P", '"1"')],
            "want_opts": [("records", "gain", "x"), (key.data_type, "mode", "y")],
        }
        for what, stmt, params in (("exact", exact, exact_params), ("fuzzy", fuzzy, fuzzy_params)):
            prefix = "EXPLAIN QUERY PLAN " if fe.dialect == "sqlite" else "EXPLAIN "
            sql = stmt.params(**params).compile(
                dialect=fe.engine.dialect, compile_kwargs={"literal_binds": True}
            )
            rows = conn.exec_driver_sql(prefix + str(sql).replace("%", "%%"))
            print(f"  plan of the {what} find at {size:,} entries:")
            for r in rows:
                print(f"    {r[-1]}")


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
            urls = {n: f"sqlite:///{tmp}/catalog_{n}.db" for n in sizes}
            run(urls, "SQLite (file, WAL)", a.queries, tmp)
        if "postgresql" in dbs:
            from tests.sql.postgres import PostgresServer, find_bindir

            bindir = find_bindir()
            if bindir is None:
                print("PostgreSQL binaries not found: skipping PostgreSQL")
                return
            server = PostgresServer(bindir).start()
            try:
                urls = {n: server.create_database() for n in sizes}
                run(urls, "PostgreSQL (local server, 127.0.0.1)", a.queries, tmp)
            finally:
                from strata.storage.frontends.sql import _ENGINES

                for engine in _ENGINES.values():
                    engine.dispose()
                server.stop()


if __name__ == "__main__":
    main()
