"""Benchmark: run selection (``scan_runs`` / ``select_runs``) on SQL catalogs of 100,000 runs.

Prints seconds per call (median of ``--repeat``) of the public functions of
:mod:`strata.pipeline.runs` on an SQLite catalog and on a real PostgreSQL server (started here
as the tests start it, if its binaries exist), and the same selections evaluated the way a
catalog without queries does it, in the same run on the same catalog: every run document read
and parsed in Python, then filtered (``StorageFrontend._query_runs``, what a directory catalog
does), and strax's way of filtering a scanned table again in pandas. It asserts nothing about
time.

Each run document is about 1 kB: a mode (5 values), 1 to 3 tags as strax writes them
(``{"name": ...}``, some with a leading underscore), start and end, a source, and 20
calibration gains. Half the runs have ``peaks`` registered in the catalog (rows inserted in bulk
as registration writes them; no payloads, so availability is answered by the catalog index).

Usage::

    python tests/benchmarks/bench_run_selection.py                  # 100,000 runs, both DBs
    python tests/benchmarks/bench_run_selection.py --runs 10000 --db sqlite --repeat 5
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

from strata.pipeline.runs import scan_runs, select_runs
from strata.storage import DataKey
from strata.storage.frontends.base import RunQuery, StorageFrontend
from strata.storage.frontends.sql import SQLFrontend, entries_table, locations_table
from strata.storage.keys import canonical_json, lineage_hash

MODES = ["nice", "nice_calib", "funny", "background", "kr83m"]
TAGS = ["interesting", "bad", "_blinded", "unblinded", "messy", "_sciencerun", "ambe", "rn220"]
LINEAGE = {"peaks": ["Peaks", "1", {"threshold": 3}], "records": ["Records", "2", {"gain": 1}]}
BATCH = 10_000


def run_id(i: int) -> str:
    return f"{i:06d}"


def document(i: int, rng: random.Random) -> dict[str, Any]:
    start = 1_700_000_000 + 3600 * i
    return {
        "name": run_id(i),
        "number": i,
        "mode": MODES[i % len(MODES)],
        "tags": [{"name": t} for t in rng.sample(TAGS, rng.randint(1, 3))],
        "start": start,
        "end": start + 3600,
        "source": {"name": rng.choice(["none", "Kr83m", "AmBe", "Rn220"])},
        "calibration": {"gains": [round(rng.uniform(1.5, 2.5), 4) for _ in range(20)]},
    }


def key_for(run: str, target: str) -> DataKey:
    return DataKey(run, target, LINEAGE)


def fill(fe: SQLFrontend, n: int) -> None:
    """``n`` run documents (public API, in batches) and ``peaks`` entries for every other run."""
    rng = random.Random(13)
    for lo in range(0, n, BATCH):
        fe.write_run_metadata_many(
            {run_id(i): document(i, rng) for i in range(lo, min(n, lo + BATCH))}
        )
    h = lineage_hash(LINEAGE)
    lin = canonical_json(LINEAGE)
    now = "2026-01-01T00:00:00+00:00"
    ids = range(0, n, 2)
    entries = [
        {
            "id": j + 1,
            "run_id": run_id(i),
            "data_type": "peaks",
            "lineage_hash": h,
            "lineage": lin,
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
        for j, i in enumerate(ids)
    ]
    locs = [
        {
            "entry_id": j + 1,
            "backend": "data",
            "backend_key": f"{run_id(i)}/peaks-{h}",
            "attempt": "a20260101T000000000000Z_000000000000",
            "stored_bytes": 50_000,
            "registered_at": now,
        }
        for j, i in enumerate(ids)
    ]
    with fe.engine.begin() as conn:
        for table, rows in ((entries_table, entries), (locations_table, locs)):
            for lo in range(0, len(rows), BATCH):
                conn.execute(table.insert(), rows[lo : lo + BATCH])
        if fe.dialect == "postgresql":
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('strata_entries', 'id'), "
                "(SELECT max(id) FROM strata_entries))"
            )
        conn.exec_driver_sql("ANALYZE")


def cases(fe: SQLFrontend) -> dict[str, Callable[[], int]]:
    """The measured calls; each returns the number of rows it produced."""
    table = scan_runs([fe])
    selection: dict[str, Any] = {
        "run_mode": "nice*",
        "include_tags": "interesting",
        "exclude_tags": "bad",
    }
    query = RunQuery(run_mode=("nice*",), include_tags=("interesting",), exclude_tags=("bad",))
    return {
        "scan_runs()": lambda: len(scan_runs([fe])),
        "scan_runs(fields=[start, calibration.gains])": lambda: len(
            scan_runs([fe], fields=["start", "calibration.gains"])
        ),
        "select_runs(mode, include, exclude tags)": lambda: len(select_runs([fe], **selection)),
        "select_runs(same, pattern_type='re')": lambda: len(
            select_runs(
                [fe],
                run_mode="nice",
                include_tags="interesting$",
                exclude_tags="bad$",
                pattern_type="re",
            )
        ),
        "select_runs(same, available='peaks')": lambda: len(
            select_runs([fe], available="peaks", key_for=key_for, **selection)
        ),
        "scan_runs(check_available='peaks')": lambda: len(
            scan_runs([fe], check_available="peaks", key_for=key_for)
        ),
        "peer: every document parsed in Python, filtered": lambda: len(
            StorageFrontend._query_runs(fe, query)
        ),
        "peer: filter the scanned table in pandas": lambda: len(select_runs(table, **selection)),
    }


def measure(fe: SQLFrontend, repeat: int) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for name, fn in cases(fe).items():
        times, rows = [], 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            rows = fn()
            times.append(time.perf_counter() - t0)
        out[name] = (statistics.median(times), rows)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    args = p.parse_args()
    dbs = args.db.split(",")
    results: dict[str, dict[str, tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        try:
            for db in dbs:
                if db == "sqlite":
                    url = f"sqlite:///{tmp}/catalog.db"
                else:
                    from tests.sql.postgres import PostgresServer, find_bindir

                    bindir = find_bindir()
                    if bindir is None:
                        print("PostgreSQL binaries not found: skipped")
                        continue
                    server = PostgresServer(bindir).start()
                    url = server.create_database()
                fe = SQLFrontend(url, data_url=f"{tmp}/data")
                t0 = time.perf_counter()
                fill(fe, args.runs)
                print(f"{db}: filled {args.runs:,} runs in {time.perf_counter() - t0:.1f} s")
                results[db] = measure(fe, args.repeat)
        finally:
            if server is not None:
                server.stop()
    names = list(next(iter(results.values())))
    width = max(map(len, names))
    print(f"\n{args.runs:,} runs, median of {args.repeat}; seconds (rows)")
    print(f" {'call':<{width}}" + "".join(f"   {db:>20}" for db in results))
    print(" " + "-" * (width + 23 * len(results)))
    for name in names:
        cells = "".join(
            f"   {results[db][name][0]:>10.3f} ({results[db][name][1]:>7,})" for db in results
        )
        print(f" {name:<{width}}{cells}")
    for db, r in results.items():
        sql = r["select_runs(mode, include, exclude tags)"][0]
        peer = r["peer: every document parsed in Python, filtered"][0]
        print(f"{db}: select_runs in SQL is {peer / sql:.1f}x faster than parsing every document")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
