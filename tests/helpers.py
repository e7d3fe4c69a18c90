"""Shared test data: strax-like records, deterministic per seed."""

from __future__ import annotations

import contextlib
import uuid

import numpy as np

STRAX_DTYPE = np.dtype(
    [
        ("time", "<i8"),
        ("length", "<i4"),
        ("dt", "<i2"),
        ("channel", "<i2"),
        ("area", "<f4"),
        ("data", "<f4", (110,)),
    ]
)

PARTITION_NS = 1_000_000


def make_records(n: int, start: int, end: int | None = None, seed: int = 0) -> np.ndarray:
    """``n`` sorted strax-like records inside ``[start, end)`` (waveforms: noise + a pulse)."""
    end = start + PARTITION_NS if end is None else end
    rng = np.random.default_rng(seed)
    x = np.zeros(n, dtype=STRAX_DTYPE)
    if n == 0:
        return x
    x["dt"] = 10
    x["length"] = rng.integers(20, 111, n)
    span = end - start - 110 * 10
    x["time"] = np.sort(start + rng.integers(0, max(1, span), n))
    x["channel"] = rng.integers(0, 250, n)
    wf = rng.normal(0, 1.5, (n, 110))
    wf += 40 * np.exp(-0.5 * ((np.arange(110) - 30) / 4.0) ** 2)
    wf = np.round(wf).astype(np.float32)
    wf[np.arange(110)[None, :] >= x["length"][:, None]] = 0
    x["data"] = wf
    x["area"] = wf.sum(axis=1)
    return x


def make_run(sizes: list[int], seed: int = 0) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Partitions of the given sizes, back to back, each ``PARTITION_NS`` long."""
    parts, intervals = [], []
    for i, n in enumerate(sizes):
        s, e = i * PARTITION_NS, (i + 1) * PARTITION_NS
        parts.append(make_records(n, s, e, seed=seed * 1000 + i))
        intervals.append((s, e))
    return parts, intervals


def lineage(data_type: str = "records", **options: object) -> dict:
    """A small lineage for ``data_type``."""
    return {data_type: ["Plugin", "0.1", dict(options)]}


LOCAL_URL_KINDS = ["path", "file_url", "memory"]


def local_url(kind: str, tmp_path, tag: str = "test") -> str:
    """A fresh root URL on this machine: a plain path, a ``file://`` URL, or ``memory://``."""
    if kind == "path":
        return str(tmp_path / "store")
    if kind == "file_url":
        return f"file://{tmp_path}/store"
    return f"memory://strata-{tag}-{uuid.uuid4().hex}"


@contextlib.contextmanager
def two_worker_client():
    """A client of a real two-process LocalCluster (one thread each, no dashboard)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
