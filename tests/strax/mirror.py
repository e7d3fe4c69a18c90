"""strata plugins that mirror the strax writer's (:mod:`tests.strax.write_strax`): the same
class names, versions, tracked options and dtypes, so their keys have the lineage strax stored
and a strata Context finds strax's data. They never compute: a test that reaches ``compute``
loaded nothing from strax.

``PLUGINS`` is what ``--plugins tests.strax.mirror:PLUGINS`` registers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from strata.pipeline import Option, Plugin
from tests.strax.spec import (
    CHUNK_NS,
    COMPRESSORS,
    OPTIONS,
    RECORDS_VERSION,
    ROWS,
    SUMS_SCALE,
    SUMS_VERSION,
)

RECORDS_DTYPE = np.dtype(
    [
        ("time", np.int64),
        ("endtime", np.int64),
        ("channel", np.int16),
        ("area", np.float32),
        ("data", np.float32, (4, 3)),
        ("flag", np.bool_),
    ]
)
SUMS_DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("scaled", np.float64)])


class _Records(Plugin):
    """The source the strax writer's ``RecordsBase`` is."""

    version = RECORDS_VERSION
    dtype = RECORDS_DTYPE
    gain = Option(default=OPTIONS["gain"], type=float, help="gain")
    seed = Option(default=OPTIONS["seed"], type=int, help="seed")
    label = Option(default=OPTIONS["label"], type=str, help="label")
    weights = Option(default=OPTIONS["weights"], type=dict, help="weights")
    channels = Option(default=OPTIONS["channels"], type=tuple, help="channels")
    verbose = Option(default=False, type=bool, track=False, help="untracked")

    def partitions(self, run_id: str) -> list[tuple[int, int]]:
        return [(i * CHUNK_NS, (i + 1) * CHUNK_NS) for i in range(len(ROWS))]

    def compute(self, start: int, end: int) -> Any:
        raise AssertionError(f"{type(self).__name__} computed: it should load strax's data")


PLUGINS: list[type[Plugin]] = [
    type(f"Records{c.capitalize()}", (_Records,), {"provides": f"records_{c}"}) for c in COMPRESSORS
]


class Sums(Plugin):
    """The strax writer's ``Sums``."""

    provides = "sums"
    depends_on = "records_zstd"
    version = SUMS_VERSION
    dtype = SUMS_DTYPE
    scale = Option(default=SUMS_SCALE, type=float, help="multiplier")

    def compute(self, records_zstd: np.ndarray, start: int, end: int) -> Any:
        raise AssertionError("Sums computed: it should load strax's data")


PLUGINS.append(Sums)
