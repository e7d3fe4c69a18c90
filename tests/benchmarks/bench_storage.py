"""Benchmark: strata against the tools users would pick instead, on the same records.

strata, raw Zarr (``dask.array.to_zarr``), Parquet (pyarrow) and Icechunk on local disk and on
S3 (moto on 127.0.0.1 behind a latency proxy adding 0, 20 and 80 ms before each response's
first byte), strax's ``DataDirectory`` and the codec alone on local disk: every case in a fresh
process, warm-up first, on the same data. Prints the figures, strata / peer ratios, S3
requests by kind, serial round trips and requests in flight, and the targets with "holds" /
"falls short" (see ``storage_cases.py`` for the cases, ``bench_report.py`` for the targets).

Not collected by pytest, and CI does not run it. Peers: ``pip install pyarrow icechunk`` and
strax without its dependencies (``pip install --no-deps strax``: its requirements pin zarr<3;
the README lists its pure dependencies), or ``--skip strax`` / ``--skip parquet`` / ...

Usage::

    python tests/benchmarks/bench_storage.py --json bench.json      # 300 MB, best of 2
    python tests/benchmarks/bench_storage.py --quick                # 30 MB, 1 round
    python tests/benchmarks/bench_storage.py --quick --skip strax --skip s3 --profile
    python tests/benchmarks/bench_storage.py --s3-option 'config_kwargs={"max_pool_connections":64}'
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.console import Console

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_runner import SKIPPABLE
from bench_runner import main as bench_main


@click.command()
@click.option(
    "--size-mb",
    "--size",
    "size_mb",
    type=click.FloatRange(min=1),
    help="Run MB (default 300; --quick: 30).",
)
@click.option("--partitions", default=10, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, help="Random seed of the records.")
@click.option("--repeat", type=click.IntRange(1), help="Rounds, best kept (default 2; --quick: 1).")
@click.option(
    "--s3-repeat",
    type=click.IntRange(1),
    help="Rounds of the S3 cases, best kept (default: --repeat + 1).",
)
@click.option("--quick", is_flag=True, help="Development run: 30 MB, 1 round, strax blosc only.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Default: a temporary one.")
@click.option("--keep", is_flag=True, help="Keep the work directory.")
@click.option("--compressor", default=None, help="strata's preset (default: strata's default).")
@click.option("--chunk-target-mb", type=float, default=None, help="strata's chunk size.")
@click.option(
    "--shard-target-mb", type=float, default=None, help="strata's shard size (0: no shards)."
)
@click.option(
    "--strax-compressors",
    default=None,
    help="strax compressors to measure (default blosc,zstd,lz4; --quick: blosc).",
)
@click.option("--strax-workers", default="1", show_default=True, help="strax max_workers.")
@click.option(
    "--stream-partitions",
    type=click.IntRange(1),
    help="Partitions of the streaming-memory run (default 10; --quick: 4).",
)
@click.option(
    "--skip",
    multiple=True,
    type=click.Choice(list(SKIPPABLE)),
    help="Groups of cases not to run (repeatable).",
)
@click.option(
    "--delays-ms",
    default="0,20,80",
    show_default=True,
    help="S3 proxy delays (ms) before each first byte: targets at the second, round trips fitted.",
)
@click.option(
    "--s3-option",
    multiple=True,
    help="KEY=JSON added to strata's S3 storage_options (repeatable).",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Also profile strata's write and read (cProfile, every thread) and print the top.",
)
def bench(**options: Any) -> None:
    """Benchmark strata against raw Zarr, Parquet, Icechunk, strax and the codec alone.

    Writes and reads about --size-mb of strax-like records with each system, on local disk and
    on S3 through a latency proxy, every case in a fresh process, and prints MB/s, ratios,
    requests, round trips, peak memory and the targets.
    """
    bench_main(**options, console=Console(width=180))


if __name__ == "__main__":
    bench(prog_name="bench_storage.py")
