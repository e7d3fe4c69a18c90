"""The storage benchmark's cases: strata against the tools users would pick instead.

One run generates strax-like records deterministically (fields ``time`` int64, ``length``
int32, ``dt`` int16, ``channel`` int16, ``area`` float32, ``data`` float32[110]: 460 bytes a
record; waveforms of baseline noise N(0, 1.5) plus one or two Gaussian pulses, rounded to
integer counts, zero beyond ``length``), about 300 MB in 10 equal partitions by default. Each
case below runs in a fresh Python process (``case_worker.py``, its JSON spec on stdin), on
local disk and, where it says so, on S3 (moto behind :mod:`latency_proxy`, see :mod:`s3_env`):

``strata``
    ``Context.make`` of a source plugin whose ``compute`` returns the pre-generated partition
    (write), ``Context.get_array`` back (read), reads of ``fields=["area"]``,
    ``fields=["data"]`` and of a 10% ``time_range``, and the storage layer's own reader
    (``frontend.loader(key).to_numpy()``). Local and S3.
``zarr``
    ``dask.array.to_zarr`` of the same per-field arrays into new arrays with strata's codecs,
    chunk shapes and ``write_empty_chunks``, and ``dask.array.from_zarr`` back, assembled into
    the same structured array; a time range reads ``time`` whole, then slices. Local and S3.
``parquet``
    pyarrow: one file, zstd, one row group per partition, ``data`` as a fixed-size list
    column; ``pq.read_table`` back (``columns=``, ``filters=`` on ``time``), assembled into the
    same structured array. On S3 through pyarrow's own S3 filesystem. Local and S3.
``icechunk``
    The same Zarr arrays as ``zarr`` written through an Icechunk session (one commit) into a
    repository created before the timed part, and read back through a read-only session
    (opening the repository is timed). Local and S3.
``strax-<compressor>``
    strax's ``DataDirectory`` through a strax Context with a plugin returning the same
    partitions, for each compressor and ``max_workers``. Local only.
``codec``
    strata's codec chain alone, in memory, over the same chunks on a thread per core: the limit
    (the fastest of three passes after a warm-up).
``pagefault``
    What a fresh output array costs on this machine: ``np.empty`` of the run's size with every
    page touched, against the same writes into an array already mapped.
``strata-stream``
    ``Context.make`` of a run whose partitions are generated inside the plugin (the run never
    exists in memory at once): its peak memory, in partitions.

Each case process first makes and reads a tiny run with the same system (imports, thread
pools, numba compilation, connection pools are one-time costs; strata's tiny run, ``warm``,
goes into the same store as the timed one, so its filesystem, cached by URL, is warm too),
loads the input, then times one operation. Data generation and loading the input are never
timed. Throughput is uncompressed bytes over wall time (CPU seconds are in the JSON). Peak
memory is the largest resident set size (psutil, sampled every 5 ms) while the timed
operation runs; "+MB" is that
peak less the resident size just before it; the process's lifetime peak (``ru_maxrss``) is in
the JSON. Bytes fetched: on S3 the response bodies the proxy passed; locally the bytes the
process read through ``read``-family system calls (``rchar`` of ``/proc/self/io``) while the
operation ran. Local reads come from the page cache (the data was just written): they measure
decoding and assembly, not the disk. Every read is checked against the input afterwards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from strata.pipeline.options import Option
from strata.pipeline.plugin import Plugin

__all__ = [
    "CASES",
    "DATA_TYPE",
    "PARTITION_NS",
    "RECORD_DTYPE",
    "ROW_MULTIPLE",
    "RUN_ID",
    "make_partition",
    "rows_per_partition",
    "worker_main",
]

SAMPLES = 110
DT_NS = 10
PARTITION_NS = 1_000_000_000
RUN_ID = "bench"
DATA_TYPE = "bench_records"
ROW_MULTIPLE = 840  # rows per partition are a multiple of lcm(1..8): chunks tile partitions

RECORD_DTYPE = np.dtype(
    [
        ("time", np.int64),
        ("length", np.int32),
        ("dt", np.int16),
        ("channel", np.int16),
        ("area", np.float32),
        ("data", np.float32, SAMPLES),
    ]
)
"""The benchmark's record dtype: 460 bytes a record, as strax's ``records``."""


def rows_per_partition(size_mb: float, partitions: int) -> int:
    """Rows of each partition for about ``size_mb`` MB (1e6 bytes) in ``partitions``."""
    rows = size_mb * 1e6 / RECORD_DTYPE.itemsize / max(1, partitions)
    return max(ROW_MULTIPLE, round(rows / ROW_MULTIPLE) * ROW_MULTIPLE)


def make_partition(index: int, rows: int, seed: int = 0) -> np.ndarray:
    """Partition ``index`` (``[index * 1 s, (index + 1) * 1 s)``), deterministic in ``seed``.

    Waveforms are made in blocks of rows, so making a partition needs little memory beyond
    the partition itself.
    """
    rng = np.random.default_rng([seed, index])
    out = np.zeros(rows, RECORD_DTYPE)
    start = index * PARTITION_NS
    out["time"] = np.sort(rng.integers(start, start + PARTITION_NS - SAMPLES * DT_NS, rows))
    out["dt"] = DT_NS
    out["channel"] = rng.integers(0, 494, rows)
    length = np.where(rng.random(rows) < 0.7, SAMPLES, rng.integers(20, SAMPLES + 1, rows))
    out["length"] = length
    # pulse k: amplitude (lognormal; the second pulse in 30% of records), centre, width
    pulses = []
    for k in range(2):
        amp = rng.lognormal(3.0, 1.0, rows).astype(np.float32)
        if k == 1:
            amp *= rng.random(rows) < 0.3
        centre = (rng.random(rows) * (length - 10) + 5).astype(np.float32)
        sigma = rng.uniform(2.0, 10.0, rows).astype(np.float32)
        pulses.append((amp, centre, sigma))
    x = np.arange(SAMPLES, dtype=np.float32)
    block = 8192
    for a in range(0, rows, block):
        b = min(rows, a + block)
        wf = rng.standard_normal((b - a, SAMPLES), dtype=np.float32)
        wf *= 1.5
        for amp, centre, sigma in pulses:
            z = (x[None, :] - centre[a:b, None]) / sigma[a:b, None]
            wf += amp[a:b, None] * np.exp(-0.5 * z * z)
        np.round(wf, out=wf)
        wf += 0.0  # -0.0 -> 0.0: integer counts
        wf[x[None, :] >= length[a:b, None]] = 0
        out["data"][a:b] = wf
        out["area"][a:b] = wf.sum(axis=1)
    return out


# -- the strata source plugin ------------------------------------------------------------------
_INPUT: list[np.ndarray] = []
"""Pre-generated partitions of the case process (empty: generate inside ``compute``)."""


class BenchRecords(Plugin):
    """Benchmark records: the pre-generated partitions, or generated on the fly."""

    provides = DATA_TYPE
    version = "1"
    dtype = RECORD_DTYPE
    n_partitions = Option(default=20, type=int, help="partitions of the run")
    rows = Option(default=ROW_MULTIPLE, type=int, help="rows per partition")
    seed = Option(default=0, type=int, help="random seed")

    def partitions(self, run_id: str) -> list[tuple[int, int]]:
        """``n_partitions`` partitions of 1 s."""
        n = int(self.config["n_partitions"])
        return [(i * PARTITION_NS, (i + 1) * PARTITION_NS) for i in range(n)]

    def compute(self, start: int, end: int) -> np.ndarray:
        """The partition starting at ``start``."""
        i = start // PARTITION_NS
        if _INPUT:
            return _INPUT[i]
        return make_partition(i, int(self.config["rows"]), int(self.config["seed"]))


# -- measuring inside a case process -----------------------------------------------------------
def _io_read_bytes() -> int | None:
    """Bytes this process has read through read-family system calls (``rchar``), if known."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _process_peak_mib() -> float:
    """The resident set size high-water mark of this process so far (``ru_maxrss``), MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def _measure() -> Iterator[dict[str, Any]]:
    """Time the block and sample the process's resident set size while it runs."""
    out: dict[str, Any] = {}
    try:
        import psutil

        proc: Any = psutil.Process()
        rss: Callable[[], int] = lambda: int(proc.memory_info().rss)  # noqa: E731
    except ImportError:  # no psutil: resident set high-water mark of the whole process
        import resource

        rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # noqa: E731
    base = rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], rss())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    read0 = _io_read_bytes()
    c0 = time.process_time()
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0
        read1 = _io_read_bytes()
        stop.set()
        t.join()
        peak[0] = max(peak[0], rss())
        out["peak_rss_mib"] = peak[0] / 2**20
        out["delta_rss_mib"] = (peak[0] - base) / 2**20
        out["process_peak_mib"] = _process_peak_mib()
        if read0 is not None and read1 is not None:
            out["bytes_read"] = read1 - read0


class _ThreadProfiles:
    """cProfile in every thread of the process: the main thread's and each thread started
    after :meth:`install` (Dask's workers, zarr's event loop, asyncio's executor). Install it
    before anything starts a thread pool.
    """

    def __init__(self) -> None:
        self.profiles: list[Any] = []
        self.lock = threading.Lock()

    def install(self) -> _ThreadProfiles:
        import cProfile

        def hook(frame: Any, event: str, arg: Any) -> None:
            p = cProfile.Profile()
            with self.lock:
                self.profiles.append(p)
            sys.setprofile(None)
            p.enable()  # from the thread itself: cProfile profiles the calling thread

        threading.setprofile(hook)
        main = cProfile.Profile()
        self.profiles.append(main)
        main.enable()
        return self

    def clear(self) -> None:
        """Forget what was collected so far (the warm-up)."""
        with self.lock:
            for p in self.profiles:
                p.clear()

    def dump(self, path: str) -> None:
        """Write the merged statistics of every thread to ``path`` (pstats format)."""
        import pstats

        threading.setprofile(None)
        sys.setprofile(None)
        with self.lock:
            profiles = list(self.profiles)
        stats = pstats.Stats(profiles[0])
        for p in profiles[1:]:
            try:
                stats.add(p)
            except (TypeError, ValueError):  # a thread that never ran a profiled call
                continue
        stats.dump_stats(path)


_PROFILE: _ThreadProfiles | None = None
"""The case process's profiler (only when its spec asks for a profile)."""


def _is_s3(spec: dict[str, Any]) -> bool:
    return bool(spec.get("where", "local") != "local")


@contextmanager
def _timed(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """:func:`_measure` the block; on S3 also count its requests at the proxy (in the
    returned dict's ``s3``; ``s3_log``: every request, when the spec asks for it).
    ``bytes_fetched``: response bodies on S3, bytes read by system calls locally.
    """
    if _PROFILE is not None:
        _PROFILE.clear()
    if _is_s3(spec):
        from latency_proxy import counted

        with counted(spec["endpoint"]) as net:
            with _measure() as m:
                yield m
        log = net.pop("log", [])
        m["s3"] = net
        if spec.get("keep_log"):
            m["s3_log"] = log
        m["bytes_fetched"] = net["bytes_down"]
    else:
        with _measure() as m:
            yield m
        m["bytes_fetched"] = m.get("bytes_read")
    if _PROFILE is not None and spec.get("profile"):
        _PROFILE.dump(spec["profile"])


def _tree_stats(path: str | Path) -> tuple[int, int]:
    """(apparent bytes, files) under ``path``."""
    size = count = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            size += os.path.getsize(os.path.join(dirpath, name))
            count += 1
    return size, count


def _load_input(spec: dict[str, Any]) -> list[np.ndarray]:
    d = Path(spec["workdir"]) / "input"
    return [np.load(d / f"part-{i:04d}.npy") for i in range(spec["partitions"])]


def _expected(spec: dict[str, Any]) -> np.ndarray:
    """What a read of ``spec`` must return (the input, time range applied)."""
    full = np.concatenate(_load_input(spec))
    if spec.get("time_range"):
        t0, t1 = spec["time_range"]
        full = full[(full["time"] >= t0) & (full["time"] < t1)]
    return full


def _checked(spec: dict[str, Any], arr: np.ndarray) -> dict[str, Any]:
    """``nbytes`` and ``rows`` of a read, after checking it against the input."""
    exp = _expected(spec)
    names = list(spec.get("fields") or RECORD_DTYPE.names or ())
    wrong = [n for n in names if len(arr) != len(exp) or not np.array_equal(arr[n], exp[n])]
    if wrong:
        raise RuntimeError(
            f"{spec['case']} ({spec.get('where', 'local')}) read wrong data in {wrong}: "
            f"{len(arr)} rows, {len(exp)} expected"
        )
    return {"nbytes": int(arr.nbytes), "rows": len(arr)}


def _structured(names: Sequence[str], rows: int) -> np.ndarray:
    """An empty structured array of ``names`` (fields of :data:`RECORD_DTYPE`)."""
    return np.empty(rows, np.dtype([(n, RECORD_DTYPE[n]) for n in names]))


WARM_PARTITIONS = 4
"""Partitions of the tiny run that warms a case process up."""


@contextmanager
def _tiny_input(n: int = WARM_PARTITIONS) -> Iterator[None]:
    """Swap in an input of ``n`` partitions of the minimum size (for warming up)."""
    saved = list(_INPUT)
    _INPUT[:] = [make_partition(i, ROW_MULTIPLE) for i in range(n)]
    try:
        yield
    finally:
        _INPUT[:] = saved


# -- where the data goes -----------------------------------------------------------------------
def _s3_options(spec: dict[str, Any], strata: bool = False) -> dict[str, Any]:
    """s3fs options for the case's endpoint (the proxy); strata's get the extra options."""
    from s3_env import ACCESS_KEY, SECRET_KEY

    opts: dict[str, Any] = {"key": ACCESS_KEY, "secret": SECRET_KEY}
    opts["endpoint_url"] = spec["endpoint"]
    if strata:
        opts.update(spec.get("strata_s3_options") or {})
    return opts


def _s3_prefix(spec: dict[str, Any], name: str) -> str:
    """The prefix of system ``name`` in the case's bucket: one per delay (the write at each
    delay stores its own copy; the reads at a delay read that one).
    """
    return f"{name}-{spec['delay_ms']:g}ms"


def _url(spec: dict[str, Any], name: str) -> str:
    """Where system ``name`` stores its data: a directory, or a prefix of the case's bucket."""
    if _is_s3(spec):
        return f"s3://{spec['bucket']}/{_s3_prefix(spec, name)}"
    return str(Path(spec["workdir"]) / name)


def _stored(spec: dict[str, Any], name: str) -> tuple[int, int]:
    """(bytes, objects) that system ``name`` stored."""
    if _is_s3(spec):
        from s3_env import bucket_usage

        return bucket_usage(spec["moto_endpoint"], spec["bucket"], f"{_s3_prefix(spec, name)}/")
    return _tree_stats(_url(spec, name))


def _fresh(spec: dict[str, Any], name: str) -> None:
    """Remove a local directory of an earlier round (S3 cases get a fresh bucket a round)."""
    if not _is_s3(spec):
        shutil.rmtree(_url(spec, name), ignore_errors=True)


def _warm_name() -> str:
    return f"warm-{os.getpid()}"


# -- strata ------------------------------------------------------------------------------------
def _strata_context(spec: dict[str, Any], root: str, n_partitions: int) -> Any:
    from strata.pipeline.context import Context
    from strata.storage import DirectoryFrontend

    kwargs: dict[str, Any] = {}
    if spec.get("compressor") is not None:
        kwargs["compressor"] = spec["compressor"]
    if spec.get("chunk_target_mb") is not None:
        kwargs["chunk_target_mb"] = spec["chunk_target_mb"]
    if spec.get("shard_target_mb") is not None:
        kwargs["shard_target_mb"] = spec["shard_target_mb"]
    if _is_s3(spec):
        kwargs["storage_options"] = _s3_options(spec, strata=True)
    fe = DirectoryFrontend(root, **kwargs)
    config = {"n_partitions": n_partitions, "rows": spec["rows"], "seed": spec["seed"]}
    return Context(storage=[fe], register=[BenchRecords], config=config)


WARM_RUN = "warm"
"""The run id of the tiny run a strata case process makes and reads first."""


def _warm_strata(spec: dict[str, Any], name: str) -> None:
    """Make and read a tiny run first (run ``warm``, in the same store as the timed
    operation): imports, Zarr's event loop and thread pools, the codecs and the store's
    filesystem and connection pool (cached by URL) are one-time costs of a process.
    """
    root = _url(spec, name)
    with _tiny_input():
        ctx = _strata_context({**spec, "rows": ROW_MULTIPLE}, root, WARM_PARTITIONS)
        ctx.make(WARM_RUN, DATA_TYPE)
        for _ in range(1 if _is_s3(spec) else 2):
            ctx.get_array(WARM_RUN, DATA_TYPE)
            ctx.get_array(WARM_RUN, DATA_TYPE, fields=["area"])
            ctx.get_array(WARM_RUN, DATA_TYPE, time_range=(PARTITION_NS // 2, PARTITION_NS * 2))


def _case_strata_write(spec: dict[str, Any]) -> dict[str, Any]:
    _fresh(spec, "strata")
    _INPUT[:] = _load_input(spec)
    _warm_strata(spec, "strata")
    size0, count0 = _stored(spec, "strata")  # the warm-up's run
    ctx = _strata_context(spec, _url(spec, "strata"), spec["partitions"])
    with _timed(spec) as m:
        ctx.make(RUN_ID, DATA_TYPE)
    size, count = _stored(spec, "strata")
    nbytes = sum(p.nbytes for p in _INPUT)
    return {**m, "nbytes": nbytes, "stored_bytes": size - size0, "objects": count - count0}


def _case_strata_read(spec: dict[str, Any]) -> dict[str, Any]:
    _warm_strata(spec, "strata")
    ctx = _strata_context(spec, _url(spec, "strata"), spec["partitions"])
    if not ctx.is_stored(RUN_ID, DATA_TYPE):
        raise RuntimeError(f"nothing stored in {_url(spec, 'strata')}: run strata's write first")
    fields = spec.get("fields")
    time_range = tuple(spec["time_range"]) if spec.get("time_range") else None
    if spec.get("api") == "to_numpy":  # the storage layer's own reader, without the Context
        fe = ctx.storage[0]
        key = ctx.key_for(RUN_ID, DATA_TYPE)
        with _timed(spec) as m:
            arr = fe.loader(key, fields=fields, time_range=time_range).to_numpy()
    else:
        with _timed(spec) as m:
            arr = ctx.get_array(RUN_ID, DATA_TYPE, fields=fields, time_range=time_range)
    return {**m, **_checked(spec, arr)}


def _case_strata_stream(spec: dict[str, Any]) -> dict[str, Any]:
    _fresh(spec, "strata-stream")
    n = spec["stream_partitions"]
    _warm_strata(spec, "strata-stream")
    size0, count0 = _stored(spec, "strata-stream")
    ctx = _strata_context(spec, _url(spec, "strata-stream"), n)
    with _timed(spec) as m:
        ctx.make(RUN_ID, DATA_TYPE)
    size, count = _stored(spec, "strata-stream")
    _fresh(spec, "strata-stream")
    nbytes = n * spec["rows"] * RECORD_DTYPE.itemsize
    return {**m, "nbytes": nbytes, "stored_bytes": size - size0, "objects": count - count0}


# -- strax (local only) ------------------------------------------------------------------------
def _strax_context(spec: dict[str, Any], root: str) -> Any:
    import strax

    compressor = spec["strax_compressor"]

    @strax.takes_config(strax.Option("n_chunks", default=spec["partitions"], type=int))
    class BenchRecordsStrax(strax.Plugin):
        provides = "records"
        depends_on: tuple[str, ...] = ()
        dtype = RECORD_DTYPE
        data_kind = "records"
        __version__ = "1"

        def source_finished(self) -> bool:
            return True

        def is_ready(self, chunk_i: int) -> bool:
            return bool(chunk_i < self.config["n_chunks"])

        def compute(self, chunk_i: int) -> Any:
            return self.chunk(
                start=chunk_i * PARTITION_NS,
                end=(chunk_i + 1) * PARTITION_NS,
                data=_INPUT[chunk_i],
            )

    BenchRecordsStrax.compressor = compressor
    st = strax.Context(storage=[strax.DataDirectory(root)], register=[BenchRecordsStrax])
    return st


def _warm_strax(spec: dict[str, Any]) -> None:
    """Make and read a tiny run first (imports, numba compilation)."""
    root = Path(spec["workdir"]) / _warm_name()
    try:
        with _tiny_input():
            st = _strax_context({**spec, "partitions": WARM_PARTITIONS}, str(root))
            st.make(RUN_ID, "records", max_workers=spec["max_workers"])
            for _ in range(2):
                st.get_array(RUN_ID, "records", max_workers=spec["max_workers"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _case_strax_write(spec: dict[str, Any]) -> dict[str, Any]:
    root = Path(spec["workdir"]) / f"strax-{spec['strax_compressor']}"
    shutil.rmtree(root, ignore_errors=True)
    _INPUT[:] = _load_input(spec)
    _warm_strax(spec)
    st = _strax_context(spec, str(root))
    with _timed(spec) as m:
        st.make(RUN_ID, "records", max_workers=spec["max_workers"])
    if not st.is_stored(RUN_ID, "records"):
        raise RuntimeError("strax did not store the records")
    size, count = _tree_stats(root)
    return {
        **m,
        "nbytes": sum(p.nbytes for p in _INPUT),
        "stored_bytes": size,
        "objects": count,
    }


def _case_strax_read(spec: dict[str, Any]) -> dict[str, Any]:
    root = Path(spec["workdir"]) / f"strax-{spec['strax_compressor']}"
    _warm_strax(spec)
    st = _strax_context(spec, str(root))
    if not st.is_stored(RUN_ID, "records"):
        raise RuntimeError(f"nothing stored in {root}: run the strax write case first")
    with _timed(spec) as m:
        arr = st.get_array(RUN_ID, "records", max_workers=spec["max_workers"])
    return {**m, **_checked(spec, arr)}


# -- raw Zarr and Icechunk (the same arrays) ---------------------------------------------------
def _strata_backend(spec: dict[str, Any]) -> Any:
    """A backend of strata's settings (its codecs and chunk size are what the peers use)."""
    from strata.storage import ZarrBackend

    kwargs: dict[str, Any] = {}
    if spec.get("compressor") is not None:
        kwargs["compressor"] = spec["compressor"]
    if spec.get("chunk_target_mb") is not None:
        kwargs["chunk_target_mb"] = spec["chunk_target_mb"]
    if spec.get("shard_target_mb") is not None:
        kwargs["shard_target_mb"] = spec["shard_target_mb"]
    return ZarrBackend(str(Path(spec["workdir"]) / "unused"), **kwargs)


def _chunk_rows(chunk_target_bytes: int, row_bytes: int, rows: int) -> int:
    """Rows of a chunk of a partition of ``rows`` (as strata's saver chose them)."""
    max_rows = max(1, chunk_target_bytes // max(1, row_bytes))
    nchunks = max(1, math.ceil(rows / max_rows))
    return max(1, math.ceil(rows / nchunks))


def _zarr_write(
    target: Any,
    backend: Any,
    parts: list[np.ndarray],
    rows: int,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """``dask.array.to_zarr`` of every field of ``parts`` into new arrays under ``target`` (a
    URL or a zarr store), with strata's codecs and chunk shapes, computed together.

    The Dask chunks are the Zarr chunks (a whole number per partition), so ``to_zarr`` neither
    rechunks nor locks; ``write_empty_chunks`` as strata (no scan of every chunk).
    """
    import dask
    import dask.array as da

    stores = []
    for name in RECORD_DTYPE.names or ():
        ft = RECORD_DTYPE[name]
        chunk = _chunk_rows(backend.chunk_target_bytes, ft.itemsize, rows)
        x = da.concatenate([da.from_array(p[name], chunks=chunk, name=False) for p in parts])
        if rows % chunk:
            x = x.rechunk(chunk)
        kwargs: dict[str, Any] = {
            "compressors": backend.compressors,
            "fill_value": 0,
            "dimension_names": ["row", *[f"{name}_dim_{i}" for i in range(1, ft.ndim + 1)]],
            "config": {"write_empty_chunks": True},
        }
        if storage_options is not None:
            kwargs["storage_options"] = storage_options
        stores.append(da.to_zarr(x, target, component=name, mode="w-", compute=False, **kwargs))
    dask.compute(*stores)


def _zarr_read(
    group: Any, fields: Sequence[str] | None = None, time_range: Sequence[int] | None = None
) -> np.ndarray:
    """``dask.array.from_zarr`` of ``fields`` (default: all), computed together, as one
    structured array. A time range reads ``time`` whole to find its rows (what a user of
    plain Zarr does), then only those rows of each field.
    """
    import dask
    import dask.array as da

    names = list(fields or RECORD_DTYPE.names or ())
    rows = slice(None)
    if time_range is not None:
        t = np.asarray(group["time"][:])
        i0, i1 = np.searchsorted(t, list(time_range))
        rows = slice(int(i0), int(i1))
    values = dask.compute(*[da.from_zarr(group[name])[rows] for name in names])
    out = _structured(names, len(values[0]))
    for name, v in zip(names, values, strict=True):
        out[name] = v
    return out


def _zarr_group(spec: dict[str, Any], name: str) -> Any:
    import zarr

    kwargs: dict[str, Any] = {"mode": "r", "zarr_format": 3}
    if _is_s3(spec):
        kwargs["storage_options"] = _s3_options(spec)
    return zarr.open_group(_url(spec, name), **kwargs)


def _read_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    return {"fields": spec.get("fields"), "time_range": spec.get("time_range")}


def _warm_zarr(spec: dict[str, Any]) -> None:
    name = _warm_name()
    try:
        parts = [make_partition(i, ROW_MULTIPLE) for i in range(WARM_PARTITIONS)]
        opts = _s3_options(spec) if _is_s3(spec) else None
        _zarr_write(_url(spec, name), _strata_backend(spec), parts, ROW_MULTIPLE, opts)
        for _ in range(1 if _is_s3(spec) else 2):
            _zarr_read(_zarr_group(spec, name))
            _zarr_read(_zarr_group(spec, name), ["area"])
            _zarr_read(_zarr_group(spec, name), None, (PARTITION_NS // 2, PARTITION_NS * 2))
    finally:
        _fresh(spec, name)


def _case_zarr_write(spec: dict[str, Any]) -> dict[str, Any]:
    _fresh(spec, "zarr")
    _INPUT[:] = _load_input(spec)
    _warm_zarr(spec)
    backend = _strata_backend(spec)
    opts = _s3_options(spec) if _is_s3(spec) else None
    with _timed(spec) as m:
        _zarr_write(_url(spec, "zarr"), backend, _INPUT, spec["rows"], opts)
    size, count = _stored(spec, "zarr")
    return {**m, "nbytes": sum(p.nbytes for p in _INPUT), "stored_bytes": size, "objects": count}


def _case_zarr_read(spec: dict[str, Any]) -> dict[str, Any]:
    _warm_zarr(spec)
    with _timed(spec) as m:
        out = _zarr_read(_zarr_group(spec, "zarr"), **_read_kwargs(spec))
    return {**m, **_checked(spec, out)}


def _ice_storage(spec: dict[str, Any], name: str) -> Any:
    import icechunk

    if _is_s3(spec):
        from s3_env import ACCESS_KEY, REGION, SECRET_KEY

        return icechunk.s3_storage(
            bucket=spec["bucket"],
            prefix=_s3_prefix(spec, name),
            region=REGION,
            endpoint_url=spec["endpoint"],
            allow_http=True,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            force_path_style=True,
        )
    return icechunk.local_filesystem_storage(_url(spec, name))


def _ice_write(repo: Any, backend: Any, parts: list[np.ndarray], rows: int) -> None:
    """Write every field through one writable session of ``repo`` and commit it."""
    session = repo.writable_session("main")
    _zarr_write(session.store, backend, parts, rows)
    session.commit("benchmark records")


def _ice_read(storage: Any, **kwargs: Any) -> np.ndarray:
    """Open the repository, then read as :func:`_zarr_read` from a read-only session."""
    import icechunk
    import zarr

    repo = icechunk.Repository.open(storage)
    session = repo.readonly_session(branch="main")
    return _zarr_read(zarr.open_group(session.store, mode="r", zarr_format=3), **kwargs)


def _warm_icechunk(spec: dict[str, Any]) -> None:
    import icechunk

    name = _warm_name()
    try:
        parts = [make_partition(i, ROW_MULTIPLE) for i in range(WARM_PARTITIONS)]
        storage = _ice_storage(spec, name)
        _ice_write(icechunk.Repository.create(storage), _strata_backend(spec), parts, ROW_MULTIPLE)
        for _ in range(1 if _is_s3(spec) else 2):
            _ice_read(storage)
            _ice_read(storage, fields=["area"])
            _ice_read(storage, time_range=(PARTITION_NS // 2, PARTITION_NS * 2))
    finally:
        _fresh(spec, name)


def _case_icechunk_write(spec: dict[str, Any]) -> dict[str, Any]:
    import icechunk

    _fresh(spec, "icechunk")
    _INPUT[:] = _load_input(spec)
    _warm_icechunk(spec)
    backend = _strata_backend(spec)
    repo = icechunk.Repository.create(_ice_storage(spec, "icechunk"))  # not timed
    with _timed(spec) as m:
        _ice_write(repo, backend, _INPUT, spec["rows"])
    size, count = _stored(spec, "icechunk")
    return {**m, "nbytes": sum(p.nbytes for p in _INPUT), "stored_bytes": size, "objects": count}


def _case_icechunk_read(spec: dict[str, Any]) -> dict[str, Any]:
    _warm_icechunk(spec)
    storage = _ice_storage(spec, "icechunk")
    with _timed(spec) as m:
        out = _ice_read(storage, **_read_kwargs(spec))
    return {**m, **_checked(spec, out)}


# -- Parquet (pyarrow) -------------------------------------------------------------------------
PARQUET_FILE = "records.parquet"


def _pq_target(spec: dict[str, Any], name: str) -> tuple[str, Any]:
    """(path, pyarrow filesystem or None) of system ``name``'s Parquet file."""
    if not _is_s3(spec):
        return str(Path(spec["workdir"]) / name / PARQUET_FILE), None
    import pyarrow.fs as pafs
    from s3_env import ACCESS_KEY, REGION, SECRET_KEY

    fs = pafs.S3FileSystem(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        endpoint_override=spec["endpoint"].removeprefix("http://"),
        scheme="http",
        region=REGION,
    )
    return f"{spec['bucket']}/{_s3_prefix(spec, name)}/{PARQUET_FILE}", fs


def _arrow_schema() -> Any:
    import pyarrow as pa

    fields = []
    for name in RECORD_DTYPE.names or ():
        ft = RECORD_DTYPE[name]
        if ft.shape:
            fields.append(pa.field(name, pa.list_(pa.from_numpy_dtype(ft.base), ft.shape[0])))
        else:
            fields.append(pa.field(name, pa.from_numpy_dtype(ft)))
    return pa.schema(fields)


def _to_arrow(part: np.ndarray, schema: Any) -> Any:
    """A partition as an Arrow table; multi-dimensional fields as fixed-size list columns."""
    import pyarrow as pa

    cols = []
    for name in RECORD_DTYPE.names or ():
        col = np.ascontiguousarray(part[name])
        if col.ndim > 1:
            flat = pa.array(col.reshape(-1))
            cols.append(pa.FixedSizeListArray.from_arrays(flat, col.shape[1]))
        else:
            cols.append(pa.array(col))
    return pa.Table.from_arrays(cols, schema=schema)


def _pq_write(path: str, fs: Any, parts: list[np.ndarray]) -> None:
    """One file, zstd, one row group per partition."""
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    with pq.ParquetWriter(path, schema, filesystem=fs, compression="zstd") as w:
        for p in parts:
            w.write_table(_to_arrow(p, schema), row_group_size=len(p))


def _pq_read(
    path: str,
    fs: Any,
    fields: Sequence[str] | None = None,
    time_range: Sequence[int] | None = None,
) -> np.ndarray:
    """``pq.read_table`` of ``fields`` (filtered on ``time``), into one structured array."""
    import pyarrow.parquet as pq

    names = list(fields or RECORD_DTYPE.names or ())
    filters = None
    if time_range is not None:
        filters = [("time", ">=", int(time_range[0])), ("time", "<", int(time_range[1]))]
    table = pq.read_table(path, filesystem=fs, columns=names, filters=filters)
    out = _structured(names, table.num_rows)
    for name in names:
        off = 0
        for chunk in table.column(name).chunks:
            n = len(chunk)
            if RECORD_DTYPE[name].shape:
                values = chunk.flatten().to_numpy(zero_copy_only=False)
                out[name][off : off + n] = values.reshape(n, *RECORD_DTYPE[name].shape)
            else:
                out[name][off : off + n] = chunk.to_numpy(zero_copy_only=False)
            off += n
    return out


def _warm_parquet(spec: dict[str, Any]) -> None:
    name = _warm_name()
    try:
        parts = [make_partition(i, ROW_MULTIPLE) for i in range(WARM_PARTITIONS)]
        path, fs = _pq_target(spec, name)
        if fs is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        _pq_write(path, fs, parts)
        for _ in range(1 if _is_s3(spec) else 2):
            _pq_read(path, fs)
            _pq_read(path, fs, ["area"])
            _pq_read(path, fs, None, (PARTITION_NS // 2, PARTITION_NS * 2))
    finally:
        _fresh(spec, name)


def _case_parquet_write(spec: dict[str, Any]) -> dict[str, Any]:
    _fresh(spec, "parquet")
    _INPUT[:] = _load_input(spec)
    _warm_parquet(spec)
    path, fs = _pq_target(spec, "parquet")
    if fs is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with _timed(spec) as m:
        _pq_write(path, fs, _INPUT)
    size, count = _stored(spec, "parquet")
    return {**m, "nbytes": sum(p.nbytes for p in _INPUT), "stored_bytes": size, "objects": count}


def _case_parquet_read(spec: dict[str, Any]) -> dict[str, Any]:
    _warm_parquet(spec)
    path, fs = _pq_target(spec, "parquet")
    with _timed(spec) as m:
        out = _pq_read(path, fs, **_read_kwargs(spec))
    return {**m, **_checked(spec, out)}


# -- the codec alone and the cost of fresh memory ----------------------------------------------
def _numcodecs_chain(compressors: Sequence[Any], itemsize: int) -> list[Any]:
    """The numcodecs equivalents of zarr bytes-to-bytes codecs (for the codec-only limit)."""
    import numcodecs
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    out = []
    for c in compressors:
        if isinstance(c, BloscCodec):
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[c.shuffle.value]
            out.append(
                numcodecs.Blosc(
                    cname=c.cname.value,
                    clevel=c.clevel,
                    shuffle=shuffle,
                    blocksize=c.blocksize,
                    typesize=itemsize,
                )
            )
        elif isinstance(c, ZstdCodec):
            out.append(numcodecs.Zstd(level=c.level, checksum=c.checksum))
        elif isinstance(c, Crc32cCodec):
            out.append(numcodecs.CRC32C())
        else:  # zarr.codecs.numcodecs wrappers
            out.append(numcodecs.get_codec(c.codec_config))
    return out


def _case_codec(spec: dict[str, Any]) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    parts = _load_input(spec)
    backend = _strata_backend(spec)
    rows = spec["rows"]
    jobs: list[tuple[list[Any], np.ndarray]] = []
    for name in RECORD_DTYPE.names or ():
        ft = RECORD_DTYPE[name]
        chain = _numcodecs_chain(backend.compressors, ft.base.itemsize)
        chunk = _chunk_rows(backend.chunk_target_bytes, ft.itemsize, rows)
        for p in parts:
            col = np.ascontiguousarray(p[name])
            jobs.extend((chain, col[a : a + chunk]) for a in range(0, rows, chunk))
    nbytes = sum(x.nbytes for _, x in jobs)
    del parts

    def encode(job: tuple[list[Any], np.ndarray]) -> bytes:
        chain, x = job
        buf: Any = x
        for c in chain:
            buf = c.encode(buf)
        return bytes(buf)

    def decode(job: tuple[list[Any], bytes, np.ndarray]) -> None:
        chain, buf, like = job
        out: Any = buf
        for c in reversed(chain):
            out = c.decode(out)
        np.frombuffer(out, like.dtype)

    workers = os.cpu_count() or 1
    # the limit is the fastest the codec goes here: a warm-up pass, then the best of
    # CODEC_REPEATS passes of each (one pass of ~0.15 s varies by +-20% from process to process)
    with ThreadPoolExecutor(workers) as pool:
        encoded = list(pool.map(encode, jobs[: 2 * workers]))
        mc: dict[str, Any] = {}
        for _ in range(CODEC_REPEATS):
            with _measure() as m:
                encoded = list(pool.map(encode, jobs))
            if not mc or m["seconds"] < mc["seconds"]:
                mc = m
        dec_jobs = [(c, e, x) for (c, x), e in zip(jobs, encoded, strict=True)]
        md: dict[str, Any] = {}
        for _ in range(CODEC_REPEATS):
            with _measure() as m:
                list(pool.map(decode, dec_jobs))
            if not md or m["seconds"] < md["seconds"]:
                md = m
    return {
        "compress": {**mc, "nbytes": nbytes},
        "decompress": {**md, "nbytes": nbytes},
        "stored_bytes": sum(len(e) for e in encoded),
        "extra": {"threads": workers, "passes": CODEC_REPEATS},
    }


CODEC_REPEATS = 3
"""Timed passes of the codec alone over the whole run (compressing, then decompressing); the
fastest of each is the limit the targets compare with."""


def _thp_setting() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    return text.split("[")[1].split("]")[0] if "[" in text else text.strip()


PAGEFAULT_REPEATS = 3
"""Fresh arrays measured for each page-fault figure (the fastest is kept)."""


def _case_pagefault(spec: dict[str, Any]) -> dict[str, Any]:
    """Page faults of a fresh array of the run's size against writes into a mapped one.

    ``fault``: ``np.empty`` and one byte written in every page (the faults alone);
    ``fault_2_threads``: the same, half the pages on each of two threads; ``fill_fresh``:
    ``np.empty`` and ``fill`` (faults and writing every byte); ``fill_reused``: ``fill`` of
    an array whose pages are mapped. The case's ``seconds`` is ``fill_fresh``'s.
    """
    import mmap

    n = int(spec["nbytes"])
    page = mmap.PAGESIZE
    np.empty(1 << 20, np.uint8).fill(0)  # numpy's allocator and fill loops, once
    times: dict[str, float] = {}

    def touch(a: np.ndarray) -> None:
        a[::page] = 1

    def two_threads(b: np.ndarray) -> None:
        half = (n // 2) // page * page
        ts = [threading.Thread(target=touch, args=(v,)) for v in (b[:half], b[half:])]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    # each figure is the fastest of REPEATS fresh arrays (the first fresh mapping of a process
    # can also pay for reclaiming page cache); "fault_first" is the first one's
    faults = []
    for _ in range(PAGEFAULT_REPEATS):
        t0 = time.perf_counter()
        arr = np.empty(n, np.uint8)
        touch(arr)
        faults.append(time.perf_counter() - t0)
        del arr
    arr = np.empty(n, np.uint8)
    touch(arr)
    t1 = time.perf_counter()
    touch(arr)
    t2 = time.perf_counter()
    arr.fill(2)
    t3 = time.perf_counter()
    times.update(fault=min(faults), fault_first=faults[0], touch_reused=t2 - t1)
    times["fill_reused"] = t3 - t2
    del arr
    two = []
    for _ in range(PAGEFAULT_REPEATS):
        t0 = time.perf_counter()
        arr = np.empty(n, np.uint8)
        two_threads(arr)
        two.append(time.perf_counter() - t0)
        del arr
    times["fault_2_threads"] = min(two)
    fills = []
    for _ in range(PAGEFAULT_REPEATS):
        with _measure() as m:
            arr = np.empty(n, np.uint8)
            arr.fill(3)
        fills.append(m["seconds"])
        del arr
    times["fill_fresh"] = m["seconds"] = min(fills)
    pages = math.ceil(n / page)
    extra = {
        "page_size": page,
        "pages": pages,
        "transparent_hugepage": _thp_setting(),
        **{f"{k}_s": v for k, v in times.items()},
        "fault_ns_per_page": times["fault"] / pages * 1e9,
        "fault_gb_per_s": n / times["fault"] / 1e9,
        "fill_fresh_gb_per_s": n / times["fill_fresh"] / 1e9,
        "fill_reused_gb_per_s": n / times["fill_reused"] / 1e9,
    }
    return {**m, "nbytes": n, "extra": extra}


CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "strata-write": _case_strata_write,
    "strata-read": _case_strata_read,
    "strata-stream": _case_strata_stream,
    "strax-write": _case_strax_write,
    "strax-read": _case_strax_read,
    "zarr-write": _case_zarr_write,
    "zarr-read": _case_zarr_read,
    "icechunk-write": _case_icechunk_write,
    "icechunk-read": _case_icechunk_read,
    "parquet-write": _case_parquet_write,
    "parquet-read": _case_parquet_read,
    "codec": _case_codec,
    "pagefault": _case_pagefault,
}
"""Every case, by the ``case`` of its spec."""


def worker_main() -> None:
    """Run one case: its JSON spec on stdin, its JSON result as the last line of stdout."""
    import logging
    import warnings

    global _PROFILE
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    spec = json.loads(sys.stdin.read())
    if spec.get("profile"):
        _PROFILE = _ThreadProfiles().install()
    result = CASES[spec["case"]](spec)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
