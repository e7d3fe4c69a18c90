"""Benchmark: strata against strax, raw Zarr and the codec alone, on the same records.

The same as ``strata bench`` (see :mod:`pipeline.bench`); CI does not run it. It needs strax
installed without its dependencies (``pip install --no-deps strax``: its requirements pin
zarr<3), or ``--skip strax``.

Usage::

    python tests/benchmarks/bench_storage.py                          # 1 GB, 20 partitions
    python tests/benchmarks/bench_storage.py --size-mb 200 --repeat 3 --json bench.json
    python tests/benchmarks/bench_storage.py --skip strax --skip stream
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from pipeline.cli import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]], prog_name="bench_storage.py")
