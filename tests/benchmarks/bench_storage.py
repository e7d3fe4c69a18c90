"""Benchmark: strata against strax, raw Zarr and the codec alone, on the same records.

Not collected by pytest, and CI does not run it (the cases are in ``storage_cases.py``). It
needs strax installed without its dependencies (``pip install --no-deps strax``: its
requirements pin zarr<3), or ``--skip strax``.

Usage::

    python tests/benchmarks/bench_storage.py                          # 1 GB, 20 partitions
    python tests/benchmarks/bench_storage.py --size-mb 200 --repeat 3 --json bench.json
    python tests/benchmarks/bench_storage.py --skip strax --skip stream
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.console import Console

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from storage_cases import main as bench_main


@click.command()
@click.option(
    "--size-mb", default=1000.0, show_default=True, type=click.FloatRange(min=1), help="Run MB."
)
@click.option("--partitions", default=20, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, help="Random seed of the records.")
@click.option(
    "--repeat", default=1, show_default=True, type=click.IntRange(1), help="Rounds (best kept)."
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Default: a temporary one.")
@click.option("--keep", is_flag=True, help="Keep the work directory.")
@click.option("--compressor", default=None, help="strata's preset (default: strata's default).")
@click.option("--chunk-target-mb", type=float, default=None, help="strata's chunk size.")
@click.option(
    "--strax-compressors",
    default="blosc,zstd,lz4",
    show_default=True,
    help="strax compressors to measure (bz2 is slow).",
)
@click.option("--strax-workers", default="1,2", show_default=True, help="strax max_workers.")
@click.option(
    "--stream-partitions",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Partitions of the streaming-memory run.",
)
@click.option(
    "--skip",
    multiple=True,
    type=click.Choice(["partial", "zarr", "codec", "strax", "stream"]),
    help="Groups of cases not to run (repeatable).",
)
def bench(**options: Any) -> None:
    """Benchmark strata against strax, raw Zarr and the codec alone on the same records.

    Writes and reads about --size-mb of strax-like records with each system, every case in a
    fresh process, and prints MB/s, compression, object counts, peak memory and the targets.
    """
    bench_main(**options, console=Console(width=160))


if __name__ == "__main__":
    bench(prog_name="bench_storage.py")
