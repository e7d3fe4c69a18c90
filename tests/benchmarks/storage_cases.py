"""The storage benchmark's cases: strata against strax, raw Zarr and the codec limit.

One run generates strax-like records deterministically (fields ``time`` int64, ``length``
int32, ``dt`` int16, ``channel`` int16, ``area`` float32, ``data`` float32[110]: 460 bytes a
record; waveforms of baseline noise N(0, 1.5) plus one or two Gaussian pulses, rounded to
integer counts, zero beyond ``length``), about 1 GB in 20 equal partitions by default, and
measures on that data, each case in a fresh Python process:

``strata``
    ``Context.make`` of a source plugin whose ``compute`` returns the pre-generated partition
    (write), ``Context.get_array`` back (read), reads of ``fields=["area"]``,
    ``fields=["data"]`` and of a 10% ``time_range``, and the storage layer's own reader
    (``frontend.loader(key).to_numpy()``, which decodes into one preallocated array).
``strax-<compressor>``
    strax's ``DataDirectory`` through a strax Context with a plugin returning the same
    partitions (``make`` then ``get_array``; strax's defaults otherwise), for each compressor
    and ``max_workers``.
``zarr``
    ``dask.array.to_zarr`` of the same per-field arrays into new arrays with strata's codecs,
    chunk shapes and ``write_empty_chunks``, and ``dask.array.from_zarr`` back, assembled into
    the same structured array.
``codec``
    strata's codec chain alone, in memory, over the same chunks on a thread per core: the limit.
``strata-stream``
    ``Context.make`` of a run whose partitions are generated inside the plugin (the run never
    exists in memory at once): its peak memory, in partitions.

Each case process first makes and reads a tiny run with the same system (imports, thread
pools, numba compilation are one-time costs), loads the input, then times one operation.
Data generation and loading the input are never timed. Throughput is uncompressed bytes
over wall time (CPU seconds are in the JSON). With ``repeat`` rounds, every case runs once
per round, rounds interleaved, and the fastest is kept. Peak memory is the largest resident
set size (psutil, sampled every 5 ms in the case's own process) while the timed operation
runs; "+MB" is that peak less the resident size just before it (for writes, the input
partitions are already in memory). Reads come from the page cache (the data was just
written): they measure decoding and assembly, not the disk.

Run it as ``python tests/benchmarks/bench_storage.py``; a case alone runs as
``python tests/benchmarks/storage_cases.py`` with its JSON spec on stdin.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from strata.pipeline.options import Option
from strata.pipeline.plugin import Plugin

__all__ = [
    "RECORD_DTYPE",
    "SKIPPABLE",
    "BenchConfig",
    "main",
    "make_partition",
    "print_results",
    "run_bench",
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


# -- configuration and results -----------------------------------------------------------------
@dataclass
class BenchConfig:
    """What to measure.

    Attributes
    ----------
    size_mb
        Uncompressed size of the run in MB (1e6 bytes).
    partitions
        Partitions of the run (equal rows).
    seed
        Random seed of the data.
    workdir
        Where input, stored data and results go (default: a new temporary directory,
        removed afterwards unless ``keep``).
    compressor, chunk_target_mb
        strata's compressor preset and chunk size (``None``: strata's defaults).
    strax_compressors
        strax compressors to measure (``bz2`` is slow: not by default).
    strax_workers
        strax ``max_workers`` values to measure for each compressor.
    stream_partitions
        Partitions of the streaming-memory run (generated inside the plugin).
    repeat
        Rounds of every case; the best throughput of each is reported (memory: the largest).
    keep
        Keep the work directory.
    skip
        Groups of cases not to run (see :data:`SKIPPABLE`).

    """

    size_mb: float = 1000.0
    partitions: int = 20
    seed: int = 0
    workdir: str | None = None
    compressor: str | None = None
    chunk_target_mb: float | None = None
    strax_compressors: tuple[str, ...] = ("blosc", "zstd", "lz4")
    strax_workers: tuple[int, ...] = (1, 2)
    stream_partitions: int = 10
    repeat: int = 1
    keep: bool = False
    skip: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        """Rows per partition."""
        return rows_per_partition(self.size_mb, self.partitions)

    @property
    def nbytes(self) -> int:
        """Uncompressed bytes of the run."""
        return self.rows * self.partitions * RECORD_DTYPE.itemsize


@dataclass
class CaseResult:
    """One measured operation."""

    system: str
    setting: str
    operation: str
    nbytes: int
    seconds: float
    peak_rss_mib: float
    delta_rss_mib: float
    cpu_seconds: float = math.nan
    stored_bytes: int | None = None
    objects: int | None = None
    rows: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        """Uncompressed MB (1e6 bytes) per second."""
        return self.nbytes / 1e6 / self.seconds if self.seconds > 0 else math.inf


# -- measuring inside a case process -----------------------------------------------------------
@contextmanager
def _measure() -> Iterator[dict[str, float]]:
    """Time the block and sample the process's resident set size while it runs."""
    out: dict[str, float] = {}
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
    c0 = time.process_time()
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0
        stop.set()
        t.join()
        peak[0] = max(peak[0], rss())
        out["peak_rss_mib"] = peak[0] / 2**20
        out["delta_rss_mib"] = (peak[0] - base) / 2**20


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


def _warm_strata(spec: dict[str, Any]) -> None:
    """Make and read a tiny run first (twice): imports, Zarr's event loop and thread pools and
    the codecs are one-time costs of a process.
    """
    root = Path(spec["workdir"]) / f"warm-{os.getpid()}"
    try:
        with _tiny_input():
            ctx = _strata_context({**spec, "rows": ROW_MULTIPLE}, str(root), WARM_PARTITIONS)
            ctx.make(RUN_ID, DATA_TYPE)
            for _ in range(2):
                ctx.get_array(RUN_ID, DATA_TYPE)
                ctx.get_array(RUN_ID, DATA_TYPE, fields=["area"])
                ctx.get_array(RUN_ID, DATA_TYPE, time_range=(PARTITION_NS // 2, PARTITION_NS * 2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _strata_context(spec: dict[str, Any], root: str, n_partitions: int) -> Any:
    from strata.pipeline.context import Context
    from strata.storage import DirectoryFrontend

    kwargs: dict[str, Any] = {}
    if spec.get("compressor") is not None:
        kwargs["compressor"] = spec["compressor"]
    if spec.get("chunk_target_mb") is not None:
        kwargs["chunk_target_mb"] = spec["chunk_target_mb"]
    fe = DirectoryFrontend(root, **kwargs)
    config = {"n_partitions": n_partitions, "rows": spec["rows"], "seed": spec["seed"]}
    return Context(storage=[fe], register=[BenchRecords], config=config)


def _case_strata_write(spec: dict[str, Any]) -> dict[str, Any]:
    root = Path(spec["workdir"]) / "strata"
    shutil.rmtree(root, ignore_errors=True)
    _INPUT[:] = _load_input(spec)
    _warm_strata(spec)
    ctx = _strata_context(spec, str(root), spec["partitions"])
    with _measure() as m:
        ctx.make(RUN_ID, DATA_TYPE)
    size, count = _tree_stats(root)
    nbytes = sum(p.nbytes for p in _INPUT)
    return {**m, "nbytes": nbytes, "stored_bytes": size, "objects": count}


def _case_strata_read(spec: dict[str, Any]) -> dict[str, Any]:
    root = Path(spec["workdir"]) / "strata"
    _warm_strata(spec)
    ctx = _strata_context(spec, str(root), spec["partitions"])
    if not ctx.is_stored(RUN_ID, DATA_TYPE):
        raise RuntimeError(f"nothing stored in {root}: run the strata write case first")
    fields = spec.get("fields")
    time_range = tuple(spec["time_range"]) if spec.get("time_range") else None
    if spec.get("api") == "to_numpy":  # the storage layer's own reader, without the Context
        fe = ctx.storage[0]
        key = ctx.key_for(RUN_ID, DATA_TYPE)
        with _measure() as m:
            arr = fe.loader(key, fields=fields, time_range=time_range).to_numpy()
    else:
        with _measure() as m:
            arr = ctx.get_array(RUN_ID, DATA_TYPE, fields=fields, time_range=time_range)
    return {**m, "nbytes": int(arr.nbytes), "rows": len(arr)}


def _case_strata_stream(spec: dict[str, Any]) -> dict[str, Any]:
    root = Path(spec["workdir"]) / "strata-stream"
    shutil.rmtree(root, ignore_errors=True)
    n = spec["stream_partitions"]
    _warm_strata(spec)
    ctx = _strata_context(spec, str(root), n)
    with _measure() as m:
        ctx.make(RUN_ID, DATA_TYPE)
    size, count = _tree_stats(root)
    shutil.rmtree(root, ignore_errors=True)
    nbytes = n * spec["rows"] * RECORD_DTYPE.itemsize
    return {**m, "nbytes": nbytes, "stored_bytes": size, "objects": count}


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
    root = Path(spec["workdir"]) / f"warm-{os.getpid()}"
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
    with _measure() as m:
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
    with _measure() as m:
        arr = st.get_array(RUN_ID, "records", max_workers=spec["max_workers"])
    return {**m, "nbytes": int(arr.nbytes), "rows": len(arr)}


def _strata_backend(spec: dict[str, Any]) -> Any:
    from strata.storage import ZarrBackend

    kwargs: dict[str, Any] = {}
    if spec.get("compressor") is not None:
        kwargs["compressor"] = spec["compressor"]
    if spec.get("chunk_target_mb") is not None:
        kwargs["chunk_target_mb"] = spec["chunk_target_mb"]
    return ZarrBackend(str(Path(spec["workdir"]) / "unused"), **kwargs)


def _chunk_rows(chunk_target_bytes: int, row_bytes: int, rows: int) -> int:
    """As ``ZarrSaver._chunk_rows``: rows of a chunk of a segment."""
    max_rows = max(1, chunk_target_bytes // max(1, row_bytes))
    nchunks = max(1, math.ceil(rows / max_rows))
    return max(1, math.ceil(rows / nchunks))


def _zarr_write(root: Path, backend: Any, parts: list[np.ndarray], rows: int) -> None:
    """``dask.array.to_zarr`` of every field of ``parts`` into new arrays under ``root``, with
    strata's codecs and chunk shapes, computed together.

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
        kwargs = {
            "compressors": backend.compressors,
            "fill_value": 0,
            "dimension_names": ["row", *[f"{name}_dim_{i}" for i in range(1, ft.ndim + 1)]],
            "config": {"write_empty_chunks": True},
        }
        stores.append(da.to_zarr(x, str(root), component=name, mode="w-", compute=False, **kwargs))
    dask.compute(*stores)


def _zarr_read(root: Path) -> np.ndarray:
    """``dask.array.from_zarr`` of every field, computed together, as one structured array."""
    import dask
    import dask.array as da
    import zarr

    group = zarr.open_group(str(root), mode="r", zarr_format=3)
    names = list(RECORD_DTYPE.names or ())
    values = dask.compute(*[da.from_zarr(group[name]) for name in names])
    out = np.empty(len(values[0]), RECORD_DTYPE)
    for name, v in zip(names, values, strict=True):
        out[name] = v
    return out


def _warm_zarr(spec: dict[str, Any]) -> None:
    root = Path(spec["workdir"]) / f"warm-{os.getpid()}"
    try:
        parts = [make_partition(i, ROW_MULTIPLE) for i in range(WARM_PARTITIONS)]
        _zarr_write(root, _strata_backend(spec), parts, ROW_MULTIPLE)
        for _ in range(2):
            _zarr_read(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _case_zarr_write(spec: dict[str, Any]) -> dict[str, Any]:
    root = Path(spec["workdir"]) / "zarr"
    shutil.rmtree(root, ignore_errors=True)
    _INPUT[:] = _load_input(spec)
    _warm_zarr(spec)
    backend = _strata_backend(spec)
    with _measure() as m:
        _zarr_write(root, backend, _INPUT, spec["rows"])
    size, count = _tree_stats(root)
    return {
        **m,
        "nbytes": sum(p.nbytes for p in _INPUT),
        "stored_bytes": size,
        "objects": count,
    }


def _case_zarr_read(spec: dict[str, Any]) -> dict[str, Any]:
    _warm_zarr(spec)
    with _measure() as m:
        out = _zarr_read(Path(spec["workdir"]) / "zarr")
    return {**m, "nbytes": int(out.nbytes), "rows": len(out)}


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
    with ThreadPoolExecutor(workers) as pool:
        with _measure() as mc:
            encoded = list(pool.map(encode, jobs))
        dec_jobs = [(c, e, x) for (c, x), e in zip(jobs, encoded, strict=True)]
        with _measure() as md:
            list(pool.map(decode, dec_jobs))
    return {
        "compress": {**mc, "nbytes": nbytes},
        "decompress": {**md, "nbytes": nbytes},
        "stored_bytes": sum(len(e) for e in encoded),
        "threads": workers,
    }


_CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "strata-write": _case_strata_write,
    "strata-read": _case_strata_read,
    "strata-stream": _case_strata_stream,
    "strax-write": _case_strax_write,
    "strax-read": _case_strax_read,
    "zarr-write": _case_zarr_write,
    "zarr-read": _case_zarr_read,
    "codec": _case_codec,
}


def _worker_main() -> None:
    """Run one case: its JSON spec on stdin, its JSON result as the last line of stdout."""
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    spec = json.loads(sys.stdin.read())
    result = _CASES[spec["case"]](spec)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


# -- running the cases -------------------------------------------------------------------------
def _run_case(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark case {spec['case']} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _generate_input(cfg: BenchConfig, workdir: Path, say: Callable[[str], None]) -> None:
    d = workdir / "input"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(cfg.partitions):
        path = d / f"part-{i:04d}.npy"
        if not path.exists():
            np.save(path, make_partition(i, cfg.rows, cfg.seed))
    say(
        f"input: {cfg.partitions} partitions x {cfg.rows:,} records = {cfg.nbytes / 1e6:,.0f} MB "
        f"({time.perf_counter() - t0:.1f} s to generate, not timed)"
    )


_Spec = tuple[str, str, str, dict[str, Any]]
"""(system, setting, operation, case spec)"""


def _specs(cfg: BenchConfig, workdir: Path) -> list[_Spec]:
    """``(system, setting, operation, spec)`` of every case, in running order."""
    base: dict[str, Any] = {
        "workdir": str(workdir),
        "partitions": cfg.partitions,
        "rows": cfg.rows,
        "seed": cfg.seed,
        "compressor": cfg.compressor,
        "chunk_target_mb": cfg.chunk_target_mb,
        "stream_partitions": cfg.stream_partitions,
    }
    strata_setting = _strata_setting(cfg)
    t_total = cfg.partitions * PARTITION_NS
    t0 = int(0.45 * t_total)
    time_range = [t0, t0 + t_total // 10]
    out: list[_Spec] = [
        ("strata", strata_setting, "write", {**base, "case": "strata-write"}),
        ("strata", strata_setting, "read", {**base, "case": "strata-read"}),
        (
            "strata",
            strata_setting,
            "read loader().to_numpy()",
            {**base, "case": "strata-read", "api": "to_numpy"},
        ),
        (
            "strata",
            strata_setting,
            "read area",
            {**base, "case": "strata-read", "fields": ["area"]},
        ),
        (
            "strata",
            strata_setting,
            "read data",
            {**base, "case": "strata-read", "fields": ["data"]},
        ),
        (
            "strata",
            strata_setting,
            "read 10% time_range",
            {**base, "case": "strata-read", "time_range": time_range},
        ),
        ("zarr", strata_setting, "write", {**base, "case": "zarr-write"}),
        ("zarr", strata_setting, "read", {**base, "case": "zarr-read"}),
        ("codec", strata_setting, "codec", {**base, "case": "codec"}),
    ]
    for comp in cfg.strax_compressors:
        for w in cfg.strax_workers:
            s = {**base, "strax_compressor": comp, "max_workers": w}
            setting = f"max_workers={w}"
            out.append((f"strax-{comp}", setting, "write", {**s, "case": "strax-write"}))
            out.append((f"strax-{comp}", setting, "read", {**s, "case": "strax-read"}))
    out.append(("strata-stream", strata_setting, "write", {**base, "case": "strata-stream"}))
    return [c for c in out if _group(c[0], c[2]) not in cfg.skip]


SKIPPABLE = ("partial", "zarr", "codec", "strax", "stream")
"""Groups of cases :attr:`BenchConfig.skip` may name (strata's own write and read always run)."""


def _group(system: str, operation: str) -> str:
    if system == "strata":
        return "strata" if operation in ("write", "read") else "partial"
    if system.startswith("strax-"):
        return "strax"
    return {"strata-stream": "stream"}.get(system, system)


def _strata_setting(cfg: BenchConfig) -> str:
    from strata.storage.codecs import DEFAULT_PRESET

    comp = cfg.compressor or DEFAULT_PRESET
    chunk = cfg.chunk_target_mb
    return comp if chunk is None else f"{comp}, {chunk:g} MiB chunks"


def run_bench(cfg: BenchConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every case (``cfg.repeat`` rounds) and return the results as JSON-able data.

    ``say`` receives progress lines.
    """
    if cfg.partitions < 1 or cfg.size_mb <= 0 or cfg.repeat < 1:
        raise ValueError("size_mb, partitions and repeat must be positive")
    unknown = sorted(set(cfg.skip) - set(SKIPPABLE))
    if unknown:
        raise ValueError(f"cannot skip {unknown}: skippable are {', '.join(SKIPPABLE)}")
    if cfg.strax_compressors and "strax" not in cfg.skip:
        try:
            import strax  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "strax is not installed; install it with `pip install --no-deps strax` (its "
                "requirements pin zarr<3), or skip strax"
            ) from e
    made_tmp = cfg.workdir is None
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="strata-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"work directory: {workdir}")
    results: dict[tuple[str, str, str], list[CaseResult]] = {}
    try:
        _generate_input(cfg, workdir, say)
        specs = _specs(cfg, workdir)
        for r in range(cfg.repeat):
            for system, setting, op, spec in _rotated(specs, r):
                say(f"round {r + 1}/{cfg.repeat}: {system} {setting} {op}")
                res = _run_case(spec)
                subs = [(s, res[s]) for s in ("compress", "decompress")] if op == "codec" else []
                for sub, c in subs or [(op, res)]:
                    results.setdefault((system, setting, sub), []).append(
                        CaseResult(
                            system,
                            setting,
                            sub,
                            int(c["nbytes"]),
                            c["seconds"],
                            c["peak_rss_mib"],
                            c["delta_rss_mib"],
                            cpu_seconds=c["cpu_seconds"],
                            stored_bytes=res.get("stored_bytes"),
                            objects=res.get("objects"),
                            rows=res.get("rows"),
                            extra={"threads": res["threads"]} if "threads" in res else {},
                        )
                    )
    finally:
        if made_tmp and not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return _summarize(cfg, [_best(v) for v in results.values()], str(workdir))


def _rotated(specs: list[_Spec], r: int) -> list[_Spec]:
    """``specs`` with its systems in rotated order in round ``r`` (a system's reads stay after
    its write): what ran just before a case (and how much memory it left warm) differs from
    round to round.
    """
    groups: list[list[_Spec]] = []
    for spec in specs:
        if groups and groups[-1][0][0] == spec[0]:
            groups[-1].append(spec)
        else:
            groups.append([spec])
    k = r % len(groups) if groups else 0
    return [spec for group in groups[k:] + groups[:k] for spec in group]


def _best(runs: list[CaseResult]) -> CaseResult:
    """The fastest round; its memory figures are the largest of all rounds."""
    b = min(runs, key=lambda r: r.seconds)
    return replace(
        b,
        peak_rss_mib=max(r.peak_rss_mib for r in runs),
        delta_rss_mib=max(r.delta_rss_mib for r in runs),
        extra={**b.extra, "seconds_all_rounds": [round(r.seconds, 4) for r in runs]},
    )


def _summarize(cfg: BenchConfig, cases: list[CaseResult], workdir: str) -> dict[str, Any]:
    def find(system: str, op: str) -> CaseResult | None:
        return next((c for c in cases if c.system == system and c.operation == op), None)

    def fastest_strax(op: str) -> CaseResult | None:
        cands = [c for c in cases if c.system.startswith("strax-") and c.operation == op]
        return max(cands, key=lambda c: c.mb_per_s) if cands else None

    sw, sr = find("strata", "write"), find("strata", "read")
    if sw is None or sr is None:
        raise RuntimeError("strata's write and read cases did not run")
    ratio = cfg.nbytes / sw.stored_bytes if sw.stored_bytes else math.nan
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, needed: float, detail: str, target: bool = True) -> None:
        checks.append(
            {
                "target": name,
                "value": round(value, 3),
                "needed": needed,
                "holds": bool(value >= needed),
                "detail": detail,
                "is_target": target,  # False: for information
            }
        )

    def mbs(c: CaseResult) -> str:
        return f"{c.mb_per_s:,.0f} MB/s"

    xw, xr = fastest_strax("write"), fastest_strax("read")
    if xw is not None:
        check(
            "write >= 1.5x strax's fastest",
            sw.mb_per_s / xw.mb_per_s,
            1.5,
            f"strata {mbs(sw)}, {xw.system} {xw.setting} {mbs(xw)}",
        )
    if xr is not None:
        check(
            "read (get_array) >= 2x strax's fastest",
            sr.mb_per_s / xr.mb_per_s,
            2.0,
            f"strata {mbs(sr)}, {xr.system} {xr.setting} {mbs(xr)}",
        )
        tn = find("strata", "read loader().to_numpy()")
        if tn is not None:
            check(
                "read (loader().to_numpy()) >= 2x strax's fastest",
                tn.mb_per_s / xr.mb_per_s,
                2.0,
                f"strata {mbs(tn)}, {xr.system} {xr.setting} {mbs(xr)}",
                target=False,
            )
    zw = find("strax-zstd", "write")
    if zw is not None and zw.stored_bytes:
        zratio = cfg.nbytes / zw.stored_bytes
        check(
            "compression ratio >= strax zstd's",
            ratio / zratio,
            1.0,
            f"strata {ratio:.2f}, strax zstd {zratio:.2f}",
        )
    rw, rr = find("zarr", "write"), find("zarr", "read")
    if rw is not None:
        check(
            "write within 10% of raw Zarr",
            sw.mb_per_s / rw.mb_per_s,
            0.9,
            f"strata {mbs(sw)}, raw zarr {mbs(rw)}",
        )
    if rr is not None:
        check(
            "read within 10% of raw Zarr",
            sr.mb_per_s / rr.mb_per_s,
            0.9,
            f"strata {mbs(sr)}, raw zarr {mbs(rr)}",
        )
    for op in ("read area", "read data", "read 10% time_range"):
        c = find("strata", op)
        if c is None:
            continue
        byte_share, time_share = c.nbytes / sr.nbytes, c.seconds / sr.seconds
        c.extra.update({"byte_share": byte_share, "time_share": time_share})
        check(
            f"{op}: time share <= byte share",
            byte_share / time_share if time_share > 0 else math.inf,
            1.0,
            f"{time_share:.2%} of the full get_array's time for {byte_share:.2%} of its bytes",
            target=op != "read 10% time_range",
        )
    stream = find("strata-stream", "write")
    if stream is not None:
        part_mib = cfg.rows * RECORD_DTYPE.itemsize / 2**20
        stream.extra.update(
            {
                "partition_mib": part_mib,
                "run_mib": stream.nbytes / 2**20,
                "delta_in_partitions": stream.delta_rss_mib / part_mib,
            }
        )
    return {
        "config": {**asdict(cfg), "rows_per_partition": cfg.rows, "nbytes": cfg.nbytes},
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": _versions(),
        "workdir": workdir,
        "cases": [{**asdict(c), "mb_per_s": c.mb_per_s} for c in cases],
        "checks": checks,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("strata", "strax", "zarr", "numcodecs", "dask", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


# -- reporting ---------------------------------------------------------------------------------
def print_results(results: dict[str, Any], console: Any = None) -> None:
    """Print the tables of ``results`` (from :func:`run_bench`) with rich."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=160)
    cases: list[dict[str, Any]] = results["cases"]
    cfg = results["config"]

    def get(system: str, op: str, setting: str | None = None) -> dict[str, Any] | None:
        for c in cases:
            if c["system"] == system and c["operation"] == op:
                if setting is None or c["setting"] == setting:
                    return c
        return None

    def mem(c: dict[str, Any] | None) -> str:
        return "" if c is None else f"{c['peak_rss_mib']:,.0f} (+{c['delta_rss_mib']:,.0f})"

    sw, sr = get("strata", "write"), get("strata", "read")
    if sw is None or sr is None:
        raise ValueError("results without strata's write and read")
    title = (
        f"{cfg['nbytes'] / 1e6:,.0f} MB of records ({cfg['partitions']} partitions x "
        f"{cfg['rows_per_partition']:,} rows), {results['machine']['cpus']} CPUs, best of "
        f"{cfg['repeat']}; strata x = strata's MB/s (make, get_array) / this row's"
    )
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in (
        "system",
        "setting",
        "write MB/s",
        "strata x",
        "read MB/s",
        "strata x",
        "stored MB",
        "ratio",
        "objects",
        "write peak MiB (+)",
        "read peak MiB (+)",
    ):
        left = col in ("system", "setting")
        t.add_column(col, justify="left" if left else "right", no_wrap=left)
    # (label, system, setting, write operation, read operation)
    rows = [
        ("strata", "strata", sw["setting"], "write", "read"),
        ("strata loader()", "strata", sw["setting"], "", "read loader().to_numpy()"),
        ("raw zarr", "zarr", None, "write", "read"),
        ("codec alone", "codec", None, "compress", "decompress"),
    ]
    rows += [
        (c["system"], c["system"], c["setting"], "write", "read")
        for c in cases
        if c["system"].startswith("strax-") and c["operation"] == "write"
    ]
    for label, system, setting, wop, rop in rows:
        w, r = get(system, wop, setting) if wop else None, get(system, rop, setting)
        if w is None and r is None:
            continue
        stored = w.get("stored_bytes") if w else None
        extra = f", {w['extra']['threads']} threads" if w and "threads" in w["extra"] else ""
        if label == "strata loader()":
            extra = ", .to_numpy()"
        t.add_row(
            label,
            f"{(w or r or {})['setting']}{extra}",
            f"{w['mb_per_s']:,.0f}" if w else "",
            f"{sw['mb_per_s'] / w['mb_per_s']:.2f}" if w else "",
            f"{r['mb_per_s']:,.0f}" if r else "",
            f"{sr['mb_per_s'] / r['mb_per_s']:.2f}" if r else "",
            f"{stored / 1e6:,.1f}" if stored else "",
            f"{cfg['nbytes'] / stored:.2f}" if stored else "",
            str(w["objects"]) if w and w.get("objects") is not None else "",
            mem(w),
            mem(r),
            style="bold" if label == "strata" else None,
        )
    console.print(t)

    t2 = Table(
        title="strata reads (shares: of the full get_array)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in (
        "read",
        "rows",
        "MB",
        "seconds",
        "MB/s",
        "byte share",
        "time share",
        "peak MiB (+)",
    ):
        t2.add_column(col, justify="left" if col == "read" else "right")
    labels = {
        "read": "all fields, get_array",
        "read loader().to_numpy()": "all fields, loader().to_numpy()",
        "read area": 'fields=["area"]',
        "read data": 'fields=["data"]',
        "read 10% time_range": "10% time_range",
    }
    for op, label in labels.items():
        c = get("strata", op)
        if c is None:
            continue
        t2.add_row(
            label,
            f"{c['rows']:,}",
            f"{c['nbytes'] / 1e6:,.1f}",
            f"{c['seconds']:.3f}",
            f"{c['mb_per_s']:,.0f}",
            f"{c['nbytes'] / sr['nbytes']:.2%}",
            f"{c['seconds'] / sr['seconds']:.2%}",
            mem(c),
        )
    console.print(t2)

    lines = []
    stream = get("strata-stream", "write")
    if stream is not None:
        e = stream["extra"]
        lines.append(
            f"streaming: make of a {e['run_mib']:,.0f} MiB run ({cfg['stream_partitions']} "
            f"partitions of {e['partition_mib']:,.1f} MiB, generated inside the plugin) at "
            f"{stream['mb_per_s']:,.0f} MB/s including generation: peak RSS "
            f"{stream['peak_rss_mib']:,.0f} MiB, "
            f"+{stream['delta_rss_mib']:,.0f} MiB during make = "
            f"{e['delta_in_partitions']:.1f} partitions"
        )
    for c in results["checks"]:
        mark = ("holds" if c["holds"] else "FALLS SHORT") if c["is_target"] else "(information)"
        lines.append(
            f"{'target' if c['is_target'] else 'also'} {c['target']}: {c['value']:.2f} "
            f"(needed {c['needed']}) {mark} - {c['detail']}"
        )
    m = results["machine"]
    lines.append(f"load average at the end: {', '.join(map(str, m['load_average']))}")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def _as_str_list(value: str | Sequence[Any]) -> str | list[str]:
    return value if isinstance(value, str) else [str(v) for v in value]


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(x.strip() for x in items if x.strip())


def main(
    *,
    size_mb: float = 1000.0,
    partitions: int = 20,
    seed: int = 0,
    repeat: int = 1,
    json_path: str | Path | None = None,
    workdir: str | None = None,
    keep: bool = False,
    compressor: str | None = None,
    chunk_target_mb: float | None = None,
    strax_compressors: str | Sequence[str] = "blosc,zstd,lz4",
    strax_workers: str | Sequence[int] = "1,2",
    stream_partitions: int = 10,
    skip: Sequence[str] = (),
    console: Any = None,
) -> dict[str, Any]:
    """Run the benchmark, print its tables (and progress) on ``console`` and write the JSON to
    ``json_path``; what ``bench_storage.py`` does. Returns the results.
    """
    from rich.console import Console

    console = console or Console(width=160)
    cfg = BenchConfig(
        size_mb=size_mb,
        partitions=partitions,
        seed=seed,
        workdir=workdir,
        compressor=compressor,
        chunk_target_mb=chunk_target_mb,
        strax_compressors=_names(strax_compressors),
        strax_workers=tuple(int(w) for w in _names(_as_str_list(strax_workers))),
        stream_partitions=stream_partitions,
        repeat=repeat,
        keep=keep,
        skip=tuple(skip),
    )
    results = run_bench(cfg, say=lambda line: console.print(line, markup=False, soft_wrap=True))
    print_results(results, console)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(results, indent=1) + "\n")
        console.print(f"results written to {json_path}", markup=False, soft_wrap=True)
    return results


if __name__ == "__main__":
    _worker_main()
