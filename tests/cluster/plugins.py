"""Plugins for the cluster tests: sizeable, deterministic partitions and a file-based gate.

``Blocks`` (source) makes ``rows`` records per partition with a ``width``-wide float32
waveform, cheap to generate and to compress, identical in every process. ``Scaled`` doubles
the waveforms. The untracked options ``gate_dir`` and ``gate_partition`` let a test hold the
computation of one partition until it says so (they do not change the key):

* every ``Blocks.compute`` call leaves ``computed-<index>-<pid>-<nonce>`` in ``gate_dir``;
* the call for ``gate_partition`` also leaves ``gate-<index>-<pid>-<nonce>`` and waits until a
  file ``release`` exists there (a barrier with a deadline, so a broken test cannot hang a
  worker for ever).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from strata.pipeline import Option, Plugin

GATE_TIMEOUT = 120.0
"""Seconds a gated partition waits for ``release`` before it fails."""


def block_records(start: int, end: int, rows: int, width: int, index: int) -> np.ndarray:
    """The records ``Blocks`` computes for partition ``index`` ``[start, end)``."""
    dtype = np.dtype(
        [
            ("time", np.int64),
            ("endtime", np.int64),
            ("channel", np.int16),
            ("data", np.float32, (width,)),
        ]
    )
    out = np.zeros(rows, dtype=dtype)
    step = max(1, (end - start) // max(1, rows))
    out["time"] = start + np.arange(rows, dtype=np.int64) * step
    out["endtime"] = out["time"] + 1
    out["channel"] = np.arange(rows) % 8
    wave = np.add.outer(
        np.arange(rows, dtype=np.float32) + np.float32(7 * index),
        np.arange(width, dtype=np.float32),
    )
    np.remainder(wave, 251, out=wave)
    out["data"] = wave
    return out


def digest(data: np.ndarray) -> str:
    """sha256 of the values of ``data``, field by field."""
    h = hashlib.sha256(str(len(data)).encode())
    for name in data.dtype.names or ():
        h.update(name.encode())
        h.update(np.ascontiguousarray(data[name]).tobytes())
    return h.hexdigest()


def stored_partition_is(
    frontend: Any, key: Any, index: int, start: int, end: int, rows: int, width: int
) -> bool:
    """Whether partition ``index`` of ``key`` stored in ``frontend`` holds exactly what
    ``Blocks`` computes for it (read field by field and compared in the calling process)."""
    import dask

    want = block_records(start, end, rows, width, index)
    for name in want.dtype.names or ():
        with dask.config.set(scheduler="sync"):
            got = frontend.loader(key, fields=[name], time_range=(start, end)).to_numpy()
        if got.dtype[name] != want.dtype[name] or not np.array_equal(got[name], want[name]):
            return False
    return True


def _touch(path: Path) -> None:
    with open(path, "x"):
        pass


def checkpoint(gate_dir: str, index: int, gate_partition: int) -> None:
    """Record this computation in ``gate_dir``; hold partition ``gate_partition`` there."""
    if not gate_dir:
        return
    d = Path(gate_dir)
    pid = os.getpid()
    _touch(d / f"computed-{index}-{pid}-{uuid.uuid4().hex[:8]}")
    if index != gate_partition or (d / "release").exists():
        return
    _touch(d / f"gate-{index}-{pid}-{uuid.uuid4().hex[:8]}")
    deadline = time.monotonic() + GATE_TIMEOUT
    while not (d / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"partition {index} was never released (no {d / 'release'})")
        time.sleep(0.02)


def marks(gate_dir: Path, kind: str) -> list[tuple[int, int]]:
    """``(partition index, pid)`` of the ``computed`` or ``gate`` marks in ``gate_dir``."""
    out = []
    for p in gate_dir.glob(f"{kind}-*"):
        _, index, pid, _ = p.name.split("-")
        out.append((int(index), int(pid)))
    return sorted(out)


class Blocks(Plugin):
    """Source: ``n_partitions`` partitions of ``rows`` records with ``width`` samples."""

    provides = "blocks"
    version = "1"
    n_partitions = Option(default=8, type=int, help="partitions per run")
    rows = Option(default=1000, type=int, help="records per partition")
    width = Option(default=16, type=int, help="samples per record")
    partition_ns = Option(default=1_000_000_000, type=int, help="partition length [ns]")
    gate_dir = Option(default="", type=str, track=False, help="directory of the test's gate")
    gate_partition = Option(default=-1, type=int, track=False, help="partition to hold")

    def infer_dtype(self) -> Any:
        """Time fields, channel and a float32 waveform of ``width`` samples."""
        return block_records(0, 1, 0, self.width, 0).dtype

    def partitions(self, run_id: str) -> list[tuple[int, int]]:
        """Consecutive partitions of ``partition_ns``."""
        p = self.partition_ns
        return [(i * p, (i + 1) * p) for i in range(self.n_partitions)]

    def compute(self, start: int, end: int) -> np.ndarray:
        """The partition's records (after the gate, if any)."""
        index = start // self.partition_ns
        checkpoint(self.gate_dir, index, self.gate_partition)
        return block_records(start, end, self.rows, self.width, index)


class Scaled(Plugin):
    """``blocks`` with the waveforms doubled."""

    provides = "scaled"
    depends_on = "blocks"
    version = "1"
    width = Option(default=16, type=int, help="samples per record (as in blocks)")

    def infer_dtype(self) -> Any:
        """The dtype of ``blocks``."""
        return block_records(0, 1, 0, self.width, 0).dtype

    def compute(self, blocks: np.ndarray, start: int, end: int) -> np.ndarray:
        """Doubled waveforms."""
        out = blocks.copy()
        out["data"] *= 2
        return out


PLUGINS = [Blocks, Scaled]
