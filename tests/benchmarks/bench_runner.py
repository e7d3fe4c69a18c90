"""Running the storage benchmark: which cases, in which order, each in a fresh process.

:func:`run_bench` generates the input once, starts the benchmark's S3 (moto behind a latency
proxy per delay, :mod:`s3_env`) when S3 cases are asked for, runs every case of
:func:`case_list` ``repeat`` times (rounds interleaved, the order of the systems rotated from
round to round), keeps the fastest round of each, and returns JSON-able results with the
targets evaluated (:mod:`bench_report`). :func:`main` is what ``bench_storage.py`` calls.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from bench_report import target_delay, where_of
from storage_cases import PARTITION_NS, RECORD_DTYPE, make_partition, rows_per_partition

__all__ = ["SKIPPABLE", "BenchConfig", "Case", "CaseResult", "case_list", "main", "run_bench"]

HERE = Path(__file__).resolve().parent
PEERS = ("zarr", "parquet", "icechunk")
"""The peers measured on local disk and on S3 beside strata."""

SKIPPABLE = (
    "partial",
    "zarr",
    "parquet",
    "icechunk",
    "codec",
    "pagefault",
    "strax",
    "stream",
    "s3",
)
"""Groups of cases :attr:`BenchConfig.skip` may name (strata's own write and read always run;
``partial``: strata's reads of some fields or a time range; ``s3``: every S3 case)."""

QUICK = {"size_mb": 30.0, "repeat": 1, "strax_compressors": ("blosc",), "stream_partitions": 4}
"""What ``quick`` changes (for development: about a minute or two of cases)."""


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
    compressor, chunk_target_mb, shard_target_mb
        strata's compressor preset, chunk size and shard size (``None``: strata's defaults;
        shards ``0``: one object per chunk); the raw Zarr and Icechunk peers use the same codecs
        and chunk shapes, unsharded.
    strax_compressors
        strax compressors to measure (``bz2`` is slow: not by default).
    strax_workers
        strax ``max_workers`` values to measure for each compressor.
    stream_partitions
        Partitions of the streaming-memory run (generated inside the plugin).
    repeat
        Rounds of every case; the best time of each is reported (memory: the largest).
    s3_repeat
        Rounds of every S3 case (default: ``repeat + 1``). Serial round trips are the
        difference of two timings of 1-2 s on a machine that runs moto, the proxy and the
        client on the same cores: a round more takes its noise down.
    keep
        Keep the work directory.
    skip
        Groups of cases not to run (see :data:`SKIPPABLE`).
    delays_ms
        Delays of the S3 proxy (ms before each response's first byte). The S3 targets are read
        at the second smallest (20 ms); serial round trips are the slope of wall time over all
        of them.
    strata_s3_options
        Extra ``storage_options`` for strata on S3 (for example a connection pool size).
    profile
        Also run strata's local (and S3, at the targets' delay) write and read once more under
        cProfile in every thread, and report the top entries (not timed figures).

    """

    size_mb: float = 300.0
    partitions: int = 10
    seed: int = 0
    workdir: str | None = None
    compressor: str | None = None
    chunk_target_mb: float | None = None
    shard_target_mb: float | None = None
    strax_compressors: tuple[str, ...] = ("blosc", "zstd", "lz4")
    strax_workers: tuple[int, ...] = (1,)
    stream_partitions: int = 10
    repeat: int = 2
    s3_repeat: int | None = None
    keep: bool = False
    skip: tuple[str, ...] = ()
    delays_ms: tuple[float, ...] = (0.0, 20.0, 80.0)
    strata_s3_options: dict[str, Any] = field(default_factory=dict)
    profile: bool = False

    @property
    def rounds_s3(self) -> int:
        """Rounds of every S3 case."""
        return self.s3_repeat if self.s3_repeat is not None else self.repeat + 1

    @property
    def rows(self) -> int:
        """Rows per partition."""
        return rows_per_partition(self.size_mb, self.partitions)

    @property
    def nbytes(self) -> int:
        """Uncompressed bytes of the run."""
        return self.rows * self.partitions * RECORD_DTYPE.itemsize

    @property
    def time_range(self) -> list[int]:
        """The 10% time range the partial reads select: from 45% of the run on."""
        total = self.partitions * PARTITION_NS
        t0 = int(0.45 * total)
        return [t0, t0 + total // 10]


@dataclass
class CaseResult:
    """One measured operation (the fastest of its rounds)."""

    system: str
    setting: str
    where: str
    operation: str
    nbytes: int
    seconds: float
    peak_rss_mib: float
    delta_rss_mib: float
    cpu_seconds: float = math.nan
    process_peak_mib: float | None = None
    stored_bytes: int | None = None
    objects: int | None = None
    rows: int | None = None
    bytes_fetched: int | None = None
    s3: dict[str, Any] | None = None
    s3_log: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        """Uncompressed MB (1e6 bytes) per second."""
        return self.nbytes / 1e6 / self.seconds if self.seconds > 0 else math.inf


class Case(NamedTuple):
    """One case to run: what it is and its JSON spec for the case process."""

    system: str
    setting: str
    where: str
    operation: str
    spec: dict[str, Any]


def _strata_setting(cfg: BenchConfig) -> str:
    from strata.storage.codecs import DEFAULT_PRESET

    comp = cfg.compressor or DEFAULT_PRESET
    chunk, shard = cfg.chunk_target_mb, cfg.shard_target_mb
    out = comp if chunk is None else f"{comp}, {chunk:g} MiB chunks"
    if shard is not None:
        out += ", no shards" if shard == 0 else f", {shard:g} MiB shards"
    return out


def case_list(cfg: BenchConfig, workdir: Path) -> list[Case]:
    """Every case of ``cfg``, in running order (a system's reads after its write)."""
    base: dict[str, Any] = {
        "workdir": str(workdir),
        "partitions": cfg.partitions,
        "rows": cfg.rows,
        "seed": cfg.seed,
        "compressor": cfg.compressor,
        "chunk_target_mb": cfg.chunk_target_mb,
        "shard_target_mb": cfg.shard_target_mb,
        "stream_partitions": cfg.stream_partitions,
    }
    setting = _strata_setting(cfg)
    reads: list[tuple[str, dict[str, Any]]] = [
        ("read", {}),
        ("read area", {"fields": ["area"]}),
        ("read 10% time_range", {"time_range": cfg.time_range}),
    ]
    strata_local: list[tuple[str, dict[str, Any]]] = [
        ("read", {}),
        ("read loader().to_numpy()", {"api": "to_numpy"}),
        ("read area", {"fields": ["area"]}),
        ("read data", {"fields": ["data"]}),
        ("read 10% time_range", {"time_range": cfg.time_range}),
    ]
    peer_setting = {"zarr": setting, "icechunk": setting, "parquet": "zstd, row group/partition"}

    def system_cases(system: str, where: str, spec: dict[str, Any]) -> list[Case]:
        ops = strata_local if system == "strata" and where == "local" else reads
        s = peer_setting.get(system, setting)
        out = [Case(system, s, where, "write", {**spec, "case": f"{system}-write"})]
        out += [
            Case(system, s, where, op, {**spec, **extra, "case": f"{system}-read"})
            for op, extra in ops
        ]
        return out

    cases: list[Case] = []
    for system in ("strata", *PEERS):
        cases += system_cases(system, "local", base)
    cases.append(Case("codec", setting, "local", "codec", {**base, "case": "codec"}))
    cases.append(
        Case(
            "pagefault",
            "np.empty",
            "local",
            "pagefault",
            {**base, "case": "pagefault", "nbytes": cfg.nbytes},
        )
    )
    for comp in cfg.strax_compressors:
        for w in cfg.strax_workers:
            s = {**base, "strax_compressor": comp, "max_workers": w}
            st = f"max_workers={w}"
            cases.append(Case(f"strax-{comp}", st, "local", "write", {**s, "case": "strax-write"}))
            cases.append(Case(f"strax-{comp}", st, "local", "read", {**s, "case": "strax-read"}))
    cases.append(
        Case("strata-stream", setting, "local", "write", {**base, "case": "strata-stream"})
    )
    for system in ("strata", *PEERS):
        # each operation at every delay in turn: the cases whose difference gives the serial
        # round trips run next to each other, so a disturbance of the machine hits both alike
        by_delay = []
        for delay in cfg.delays_ms:
            spec = {**base, "where": where_of(delay), "delay_ms": delay}
            if system == "strata":
                spec.update(keep_log=True, strata_s3_options=cfg.strata_s3_options)
            by_delay.append(system_cases(system, where_of(delay), spec))
        cases += [c for ops in zip(*by_delay, strict=True) for c in ops]
    return [c for c in cases if not set(_groups(c)) & set(cfg.skip)]


def _groups(c: Case) -> list[str]:
    """The :data:`SKIPPABLE` groups case ``c`` belongs to."""
    out = ["s3"] if c.where != "local" else []
    if c.system == "strata":
        if c.operation not in ("write", "read"):
            out.append("partial")
    elif c.system.startswith("strax-"):
        out.append("strax")
    else:
        out.append({"strata-stream": "stream"}.get(c.system, c.system))
    return out


# -- running the cases -------------------------------------------------------------------------
def _run_case(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    proc = subprocess.run(
        [sys.executable, str(HERE / "case_worker.py")],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark case {spec['case']} ({spec.get('where', 'local')}) failed (exit "
            f"{proc.returncode}):\n{proc.stderr[-4000:]}"
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


def _grouped(cases: list[Case]) -> list[list[Case]]:
    """Consecutive cases of one system on local disk or on S3: its writes and the reads of
    what they wrote (on S3 one bucket, every delay).
    """
    groups: list[list[Case]] = []

    def key(c: Case) -> tuple[str, bool]:
        return c.system, c.where == "local"

    for c in cases:
        if groups and key(groups[-1][0]) == key(c):
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def _rotated(groups: list[list[Case]], r: int) -> list[list[Case]]:
    """``groups`` in rotated order in round ``r``: what ran just before a case (and how much
    memory it left warm) differs from round to round.
    """
    k = r % len(groups) if groups else 0
    return groups[k:] + groups[:k]


def _result(c: Case, res: dict[str, Any], sub: str | None = None) -> CaseResult:
    part = res[sub] if sub else res
    return CaseResult(
        c.system,
        c.setting,
        c.where,
        sub or c.operation,
        int(part["nbytes"]),
        part["seconds"],
        part["peak_rss_mib"],
        part["delta_rss_mib"],
        cpu_seconds=part["cpu_seconds"],
        process_peak_mib=part.get("process_peak_mib"),
        stored_bytes=res.get("stored_bytes"),
        objects=res.get("objects"),
        rows=res.get("rows"),
        bytes_fetched=part.get("bytes_fetched"),
        s3=res.get("s3"),
        s3_log=res.get("s3_log"),
        extra=dict(res.get("extra") or {}),
    )


def _best(runs: list[CaseResult]) -> CaseResult:
    """The fastest round; its memory figures are the largest of all rounds."""
    b = min(runs, key=lambda r: r.seconds)
    return replace(
        b,
        peak_rss_mib=max(r.peak_rss_mib for r in runs),
        delta_rss_mib=max(r.delta_rss_mib for r in runs),
        extra={**b.extra, "seconds_all_rounds": [round(r.seconds, 4) for r in runs]},
    )


def run_bench(cfg: BenchConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every case (``cfg.repeat`` rounds) and return the results as JSON-able data.

    ``say`` receives progress lines.
    """
    from bench_report import summarize

    if cfg.partitions < 1 or cfg.size_mb <= 0 or cfg.repeat < 1 or cfg.rounds_s3 < 1:
        raise ValueError("size_mb, partitions, repeat and s3_repeat must be positive")
    unknown = sorted(set(cfg.skip) - set(SKIPPABLE))
    if unknown:
        raise ValueError(f"cannot skip {unknown}: skippable are {', '.join(SKIPPABLE)}")
    _check_installed(cfg)
    made_tmp = cfg.workdir is None
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="strata-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"work directory: {workdir}")
    results: dict[tuple[str, str, str, str], list[CaseResult]] = {}
    profiles: dict[str, Any] = {}
    cases = case_list(cfg, workdir)
    s3 = None
    try:
        _generate_input(cfg, workdir, say)
        if any(c.where != "local" for c in cases):
            from s3_env import BenchS3

            s3 = BenchS3(cfg.delays_ms).start()
            say(
                f"S3: moto at {s3.moto_endpoint}, proxies at "
                f"{', '.join(s3.endpoint(d) for d in cfg.delays_ms)}"
            )
        groups = _grouped(cases)
        rounds = max(cfg.repeat, cfg.rounds_s3)
        for r in range(rounds):
            for group in _rotated(groups, r):
                n = cfg.repeat if group[0].where == "local" else cfg.rounds_s3
                if r >= n:
                    continue
                for c, res in _run_group(group, s3, f"r{r}", say, f"round {r + 1}/{n}"):
                    subs = ["compress", "decompress"] if c.operation == "codec" else [None]
                    for sub in subs:
                        one = _result(c, res, sub)
                        key = (one.system, one.setting, one.where, one.operation)
                        results.setdefault(key, []).append(one)
        if cfg.profile:
            profiles = _profiles(cfg, cases, s3, workdir, say)
    finally:
        if s3 is not None:
            s3.stop()
        if made_tmp and not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    best = [_best(v) for v in results.values()]
    cfg_doc = {**asdict(cfg), "rows_per_partition": cfg.rows, "nbytes": cfg.nbytes}
    return summarize(cfg_doc, best, str(workdir), profiles)


def _check_installed(cfg: BenchConfig) -> None:
    needs = {"strax": "strax", "parquet": "pyarrow", "icechunk": "icechunk"}
    hints = {
        "strax": "`pip install --no-deps strax` (its requirements pin zarr<3; see the README)",
        "pyarrow": "`pip install pyarrow`",
        "icechunk": "`pip install icechunk`",
    }
    for group, module in needs.items():
        if group in cfg.skip or (group == "strax" and not cfg.strax_compressors):
            continue
        try:
            __import__(module)
        except ImportError as e:
            raise ImportError(
                f"{module} is not installed: {hints[module]}, or --skip {group}"
            ) from e


def _run_group(
    group: list[Case], s3: Any, tag: str, say: Callable[[str], None], label: str
) -> list[tuple[Case, dict[str, Any]]]:
    """Run the cases of one group; an S3 group gets a fresh bucket, deleted afterwards."""
    bucket = None
    out = []
    try:
        for c in group:
            spec = dict(c.spec)
            if c.where != "local":
                if bucket is None:
                    name = f"{c.system}-{tag}-{uuid.uuid4().hex[:8]}"
                    bucket = s3.create_bucket(name.replace(".", "-").lower())
                spec.update(
                    bucket=bucket,
                    endpoint=s3.endpoint(c.spec["delay_ms"]),
                    moto_endpoint=s3.moto_endpoint,
                )
            say(f"{label}: {c.system} {c.where} {c.operation}")
            out.append((c, _run_case(spec)))
    finally:
        if bucket is not None:
            s3.delete_bucket(bucket)
    return out


def _profiles(
    cfg: BenchConfig, cases: list[Case], s3: Any, workdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """strata's write and read once more under cProfile (local; S3 at the targets' delay)."""
    from bench_report import profile_summary

    wheres = ["local"] + ([where_of(target_delay(cfg.delays_ms))] if s3 is not None else [])
    out: dict[str, Any] = {}
    for where in wheres:
        group = [
            c
            for c in cases
            if c.system == "strata" and c.where == where and c.operation in ("write", "read")
        ]
        profiled = []
        for c in group:
            path = workdir / f"profile-{where}-{c.operation}.pstats"
            profiled.append(c._replace(spec={**c.spec, "profile": str(path)}))
        for c, _ in _run_group(profiled, s3, "profile", say, "profile"):
            out[f"{c.where} {c.operation}"] = profile_summary(c.spec["profile"])
    return out


# -- the command -------------------------------------------------------------------------------
def _names(value: str | Sequence[Any]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(x.strip() for x in items if x.strip())


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (VALUE as JSON when it parses, else a string) as a dict."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(
    *,
    size_mb: float | None = None,
    partitions: int = 10,
    seed: int = 0,
    repeat: int | None = None,
    s3_repeat: int | None = None,
    quick: bool = False,
    json_path: str | Path | None = None,
    workdir: str | None = None,
    keep: bool = False,
    compressor: str | None = None,
    chunk_target_mb: float | None = None,
    shard_target_mb: float | None = None,
    strax_compressors: str | Sequence[str] | None = None,
    strax_workers: str | Sequence[int] = "1",
    stream_partitions: int | None = None,
    skip: Sequence[str] = (),
    delays_ms: str | Sequence[float] = "0,20,80",
    s3_option: Sequence[str] = (),
    profile: bool = False,
    console: Any = None,
) -> dict[str, Any]:
    """Run the benchmark, print its tables (and progress) on ``console`` and write the JSON to
    ``json_path``; what ``bench_storage.py`` does. Returns the results.

    ``quick`` changes the defaults of ``size_mb``, ``repeat``, ``strax_compressors`` and
    ``stream_partitions`` (see :data:`QUICK`); explicit values win.
    """
    from bench_report import print_results
    from rich.console import Console

    console = console or Console(width=180)
    defaults: dict[str, Any] = {**asdict(BenchConfig()), **(QUICK if quick else {})}

    def pick(name: str, value: Any) -> Any:
        return defaults[name] if value is None else value

    delays = tuple(float(d) for d in _names(delays_ms))
    if len(delays) < 1:
        raise ValueError("give at least one S3 delay")
    cfg = BenchConfig(
        size_mb=pick("size_mb", size_mb),
        partitions=partitions,
        seed=seed,
        workdir=workdir,
        compressor=compressor,
        chunk_target_mb=chunk_target_mb,
        shard_target_mb=shard_target_mb,
        strax_compressors=_names(pick("strax_compressors", strax_compressors)),
        strax_workers=tuple(int(w) for w in _names(strax_workers)),
        stream_partitions=pick("stream_partitions", stream_partitions),
        repeat=pick("repeat", repeat),
        s3_repeat=s3_repeat,
        keep=keep,
        skip=tuple(skip),
        delays_ms=delays,
        strata_s3_options=_options(s3_option),
        profile=profile,
    )
    results = run_bench(cfg, say=lambda line: console.print(line, markup=False, soft_wrap=True))
    print_results(results, console)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(results, indent=1) + "\n")
        console.print(f"results written to {json_path}", markup=False, soft_wrap=True)
    return results
