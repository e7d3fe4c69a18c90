"""The storage benchmark's figures: targets evaluated, tables printed, profiles summarized.

:func:`summarize` turns the fastest round of every case into the results document (cases,
derived figures such as serial round trips on S3, the comparison with the peers row by row,
and the targets of issue 14 with "holds" / "falls short"); :func:`print_results` prints it.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from latency_proxy import waves
from storage_cases import RECORD_DTYPE

__all__ = [
    "delay_of",
    "print_results",
    "profile_summary",
    "round_trip_slope",
    "summarize",
    "target_delay",
    "where_of",
]

REPO = Path(__file__).resolve().parents[2]
PEER_LABELS = {"zarr": "raw zarr", "parquet": "parquet", "icechunk": "icechunk", "strax": "strax"}


def _waves_of(c: Any) -> str:
    """The number of waves of requests of a case on S3 ("?" if not counted)."""
    return str(c.s3.get("waves", "?")) if c.s3 else "?"


def where_of(delay_ms: float) -> str:
    """The ``where`` label of S3 at ``delay_ms``: ``"s3+20ms"``."""
    return f"s3+{delay_ms:g}ms"


def delay_of(where: str) -> float | None:
    """The delay (ms) of a ``where`` label of :func:`where_of` (``None`` for ``"local"``)."""
    return float(where[3:-2]) if where.startswith("s3+") else None


def _delays(cases: list[Any]) -> tuple[float, float] | None:
    """The S3 delays (ms) of ``cases``: the smallest and the one the targets are read at.

    The targets hold at the second smallest delay (20 ms by default); further delays only
    sharpen the serial round trips, fitted over all of them (:func:`round_trip_slope`).
    """
    ds = [d for c in cases if (d := delay_of(c.where)) is not None]
    return (min(ds), target_delay(ds)) if ds else None


def target_delay(delays: Any) -> float:
    """The delay (ms) the S3 targets are read at: the second smallest of ``delays``."""
    ds = sorted({float(d) for d in delays})
    return ds[1] if len(ds) > 1 else ds[0]


def round_trip_slope(points: list[tuple[float, float]]) -> float:
    """Serial round trips from ``(delay seconds, wall seconds)`` points: the least-squares slope.

    Every serial round trip adds the delay once, so wall time grows by the round trips per second
    of delay; over three delays or more a disturbance of one timing moves the slope less than it
    moves the difference of two (a 10 ms disturbance is half a round trip at 20 ms, an eighth at
    80 ms).
    """
    if len({x for x, _ in points}) < 2:
        raise ValueError(f"round trips need timings at two different delays at least: {points!r}")
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope


def summarize(
    cfg: dict[str, Any], cases: list[Any], workdir: str, profiles: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The results document of one benchmark run from its cases (``CaseResult`` objects)."""

    def find(system: str, op: str, where: str = "local") -> Any:
        return next(
            (c for c in cases if (c.system, c.operation, c.where) == (system, op, where)), None
        )

    def fastest_strax(op: str) -> Any:
        cands = [c for c in cases if c.system.startswith("strax-") and c.operation == op]
        return max(cands, key=lambda c: c.mb_per_s) if cands else None

    sw, sr = find("strata", "write"), find("strata", "read")
    if sw is None or sr is None:
        raise RuntimeError("strata's write and read cases did not run")
    delays = _delays(cases)
    lo = where_of(delays[0]) if delays else ""
    hi = where_of(delays[1]) if delays else ""

    # -- derived figures -----------------------------------------------------------------------
    for c in cases:
        w = find(c.system, "write", c.where)
        if (
            c.operation.startswith("read")
            and w is not None
            and w.stored_bytes
            and c.bytes_fetched is not None
        ):
            c.extra["fetched_share"] = c.bytes_fetched / w.stored_bytes
    round_trips: dict[str, float] = {}
    for c in cases:
        if delays and c.where == hi:
            points = sorted(
                (d / 1000, o.seconds)
                for o in cases
                if (o.system, o.operation) == (c.system, c.operation)
                and (d := delay_of(o.where)) is not None
            )
            if len({x for x, _ in points}) > 1:
                rt = round_trip_slope(points)
                round_trips[f"{c.system} {c.operation}"] = rt
                c.extra["serial_round_trips"] = rt
                c.extra["round_trip_points"] = points

    def value(system: str, where: str, op: str, metric: str) -> float:
        if system == "strax":
            c = fastest_strax(op) if where == "local" else None
        else:
            c = find(system, op, where)
        if c is None:
            return math.nan
        if metric == "mbps":
            return float(c.mb_per_s)
        if metric == "seconds":
            return float(c.seconds)
        if metric == "share":
            return float(c.extra.get("fetched_share", math.nan))
        if metric == "rt":
            return float(c.extra.get("serial_round_trips", math.nan))
        if metric == "requests":
            return float(c.s3["requests"]) if c.s3 else math.nan
        if metric == "inflight":
            return float(c.s3["max_in_flight"]) if c.s3 else math.nan
        if metric == "waves":
            return float(c.s3["waves"]) if c.s3 and "waves" in c.s3 else math.nan
        if metric == "delta_rss":
            return float(c.delta_rss_mib)
        raise ValueError(f"unknown metric {metric!r}")

    hi_label = f"S3 +{delays[1]:g} ms" if delays else "S3"
    lo_label = f"S3 +{delays[0]:g} ms" if delays else "S3"
    # (label, where, operation, metric, higher is better, a target row)
    row_defs: list[tuple[str, str, str, str, bool, bool]] = [
        ("local write MB/s", "local", "write", "mbps", True, True),
        ("local read MB/s", "local", "read", "mbps", True, True),
        ("local one small field (area) s", "local", "read area", "seconds", False, True),
        ("local 10% time_range s", "local", "read 10% time_range", "seconds", False, False),
        (
            "local 10% time_range: read / stored",
            "local",
            "read 10% time_range",
            "share",
            False,
            False,
        ),
        ("local write: peak +MiB", "local", "write", "delta_rss", False, False),
        ("local read: peak +MiB", "local", "read", "delta_rss", False, False),
    ]
    if delays:
        row_defs += [
            (f"{lo_label} write MB/s", lo, "write", "mbps", True, False),
            (f"{hi_label} write MB/s", hi, "write", "mbps", True, True),
            (f"{lo_label} read MB/s", lo, "read", "mbps", True, False),
            (f"{hi_label} read MB/s", hi, "read", "mbps", True, True),
            (f"{hi_label} one small field (area) s", hi, "read area", "seconds", False, False),
            (f"{hi_label} 10% time_range s", hi, "read 10% time_range", "seconds", False, False),
            (
                "S3 10% time_range: fetched / stored",
                hi,
                "read 10% time_range",
                "share",
                False,
                False,
            ),
            ("S3 write: serial round trips", hi, "write", "rt", False, True),
            ("S3 read: serial round trips", hi, "read", "rt", False, False),
            # phases of requests with none in flight between them: a lower bound of the serial
            # round trips that, unlike the difference of two timings, has no noise
            ("S3 write: waves of requests", hi, "write", "waves", False, False),
            ("S3 read: waves of requests", hi, "read", "waves", False, False),
            ("S3 write: requests", hi, "write", "requests", False, False),
            ("S3 read: requests", hi, "read", "requests", False, False),
            ("S3 write: requests in flight at most", hi, "write", "inflight", True, True),
            ("S3 read: requests in flight at most", hi, "read", "inflight", True, False),
        ]
    systems = ["strata", "zarr", "parquet", "icechunk", "strax"]
    comparison: list[dict[str, Any]] = []
    for label, where, op, metric, higher, target in row_defs:
        vals = {s: value(s, where, op, metric) for s in systems}
        ratios = {
            s: vals["strata"] / vals[s]
            for s in systems[1:]
            if not math.isnan(vals[s]) and vals[s] != 0 and not math.isnan(vals["strata"])
        }
        comparison.append(
            {
                "row": label,
                "metric": metric,
                "higher_is_better": higher,
                "target_row": target,
                "values": {s: (None if math.isnan(v) else v) for s, v in vals.items()},
                "strata_over_peer": ratios,
            }
        )

    # -- targets ---------------------------------------------------------------------------------
    checks: list[dict[str, Any]] = []

    def check(
        name: str, val: float, needed: float, detail: str, higher: bool = True, target: bool = True
    ) -> None:
        holds = (val >= needed) if higher else (val <= needed)
        checks.append(
            {
                "target": name,
                "value": None if math.isnan(val) else round(val, 4),
                "needed": needed,
                "direction": ">=" if higher else "<=",
                "holds": bool(holds and not math.isnan(val)),
                "detail": detail,
                "is_target": target,  # False: for information
            }
        )

    def mbs(c: Any) -> str:
        return f"{c.mb_per_s:,.0f} MB/s"

    cw, cd = find("codec", "compress"), find("codec", "decompress")
    pf = find("pagefault", "pagefault")
    if cw is not None:
        check(
            "local write >= 85% of the codec-alone compression rate",
            sw.mb_per_s / cw.mb_per_s,
            0.85,
            f"strata {mbs(sw)}, codec alone {mbs(cw)} ({cw.extra.get('threads')} threads)",
        )
    if cd is not None:
        fault = ""
        if pf is not None:
            e = pf.extra
            fault = (
                f"; a fresh {pf.nbytes / 1e6:,.0f} MB array costs {e['fault_s']:.3f} s of page "
                f"faults ({e['fault_s'] / sr.seconds:.0%} of strata's read; "
                f"{e['fault_ns_per_page']:,.0f} ns/page, THP {e['transparent_hugepage']})"
            )
        check(
            "local read (get_array, fresh array) >= 50% of the codec-alone decompression rate",
            sr.mb_per_s / cd.mb_per_s,
            0.5,
            f"strata {mbs(sr)}, codec alone {mbs(cd)}{fault}",
        )
    sa, pa_ = find("strata", "read area"), find("parquet", "read area")
    if sa is not None and pa_ is not None:
        check(
            "local one-field read (area) at or below Parquet's time",
            sa.seconds / pa_.seconds,
            1.0,
            f"strata {sa.seconds:.4f} s, parquet {pa_.seconds:.4f} s (strata / parquet)",
            higher=False,
        )
    if delays:
        sa3, pa3 = find("strata", "read area", hi), find("parquet", "read area", hi)
        if sa3 is not None and pa3 is not None:
            check(
                f"{hi_label} one-field read (area) at or below Parquet's time",
                sa3.seconds / pa3.seconds,
                1.0,
                f"strata {sa3.seconds:.4f} s, parquet {pa3.seconds:.4f} s",
                higher=False,
                target=False,
            )
    for where, how in [("local", "bytes read"), *([(hi, "bytes fetched")] if delays else [])]:
        st = find("strata", "read 10% time_range", where)
        w = find("strata", "write", where)
        if st is not None and "fetched_share" in st.extra and w is not None:
            check(
                f"10% time_range read touches <= 15% of the stored bytes ({where}, {how})",
                st.extra["fetched_share"],
                0.15,
                f"{st.bytes_fetched / 1e6:,.1f} MB of {w.stored_bytes / 1e6:,.1f} MB stored, "
                f"for {st.nbytes / 1e6:,.1f} MB returned",
                higher=False,
            )
    if delays:
        w_hi, r_hi = find("strata", "write", hi), find("strata", "read", hi)
        w_lo = find("strata", "write", lo)
        for c, what, most in ((w_hi, "save", 6.0), (r_hi, "read", 3.0)):
            if c is not None and "serial_round_trips" in c.extra:
                timings = ", ".join(
                    f"{t:.3f} s at +{d * 1000:g} ms" for d, t in c.extra["round_trip_points"]
                )
                check(
                    f"{hi_label}: a whole {what} in at most {most:g} serial round trips",
                    c.extra["serial_round_trips"],
                    most,
                    f"{timings}; {_waves_of(c)} waves of requests",
                    higher=False,
                )
        for c, what in ((w_hi, "save"), (r_hi, "read")):
            if c is not None and c.s3:
                check(
                    f"{hi_label}: a {what} has at least 32 requests in flight",
                    float(c.s3["max_in_flight"]),
                    32.0,
                    f"{c.s3['requests']} requests, mean in flight while busy "
                    f"{c.s3['mean_in_flight_while_busy']:.1f}",
                )
        if w_hi is not None and w_lo is not None:
            check(
                f"{hi_label} write throughput within 25% of {lo_label}",
                w_hi.mb_per_s / w_lo.mb_per_s,
                0.75,
                f"{mbs(w_hi)} at {hi_label}, {mbs(w_lo)} at {lo_label}",
            )
    for row in comparison:
        if not row["target_row"]:
            continue
        shown: dict[str, float | None] = row["values"]
        adv: dict[str, float] = {}
        for peer in ("zarr", "parquet", "icechunk"):
            v, s = shown.get(peer), shown.get("strata")
            if v is None or s is None or v == 0 or s == 0:
                continue
            adv[peer] = s / v if row["higher_is_better"] else v / s
        if not adv:
            continue
        worst = min(adv, key=lambda p: adv[p])
        fmt = _fmt(row["metric"])
        detail = ", ".join(
            f"{PEER_LABELS.get(p, p)} {fmt(shown[p])}" for p in adv if shown[p] is not None
        )
        check(
            f"ahead of every peer: {row['row']}",
            adv[worst],
            1.0,
            f"strata {fmt(shown['strata'])}; {detail} (closest: {PEER_LABELS[worst]})",
        )
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
    zw = find("strax-zstd", "write")
    if zw is not None and zw.stored_bytes and sw.stored_bytes:
        check(
            "compression ratio >= strax zstd's",
            zw.stored_bytes / sw.stored_bytes,
            1.0,
            f"strata {cfg['nbytes'] / sw.stored_bytes:.2f}, "
            f"strax zstd {cfg['nbytes'] / zw.stored_bytes:.2f}",
        )
    tn = find("strata", "read loader().to_numpy()")
    if tn is not None and cd is not None:
        check(
            "read (loader().to_numpy()) vs codec-alone decompression",
            tn.mb_per_s / cd.mb_per_s,
            0.5,
            f"strata {mbs(tn)}, codec alone {mbs(cd)}",
            target=False,
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
            target=False,
        )
    stream = find("strata-stream", "write")
    if stream is not None:
        part_mib = cfg["rows_per_partition"] * RECORD_DTYPE.itemsize / 2**20
        stream.extra.update(
            {
                "partition_mib": part_mib,
                "run_mib": stream.nbytes / 2**20,
                "delta_in_partitions": stream.delta_rss_mib / part_mib,
            }
        )
    return {
        "config": cfg,
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": _versions(),
        "workdir": workdir,
        "cases": [{**asdict(c), "mb_per_s": c.mb_per_s} for c in cases],
        "serial_round_trips": round_trips,
        "comparison": comparison,
        "checks": checks,
        "profiles": profiles or {},
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in (
        "strata-lineage",
        "strax",
        "zarr",
        "numcodecs",
        "dask",
        "numpy",
        "pyarrow",
        "icechunk",
        "s3fs",
        "aiobotocore",
        "moto",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def _fmt(metric: str) -> Callable[[float | None], str]:
    def f(v: float | None) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if metric in ("mbps", "delta_rss"):
            return f"{v:,.0f}"
        if metric == "seconds":
            return f"{v:.3f}" if v >= 0.1 else f"{v:.4f}"
        if metric == "share":
            return f"{v:.1%}"
        if metric == "rt":
            return f"{v:.1f}"
        return f"{v:,.0f}"

    return f


# -- profiles ----------------------------------------------------------------------------------
_WAITS = {
    "acquire",
    "wait",
    "select",
    "poll",
    "epoll",
    "sleep",
    "join",
    "_wait_for_tstate_lock",
    "get",
    "run_forever",
    "_run_once",
    "result",
    "control",
}


def _is_wait(name: str) -> bool:
    """Whether a profiled function is a thread waiting (its own time is not work)."""
    if name in _WAITS:
        return True
    # builtins: "<method 'acquire' of '_thread.lock' objects>", "<built-in method time.sleep>"
    inner = name.removeprefix("<method '").removeprefix("<built-in method ")
    head = inner.split("'")[0].split(" ")[0].split(".")[-1].rstrip(">")
    return name.startswith("<") and head in _WAITS


def _short(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def profile_summary(path: str, top: int = 25) -> dict[str, Any]:
    """The top entries of a pstats file: by own time (waiting excluded) and strata's own
    functions by cumulative time (summed over threads: Dask workers overlap in time).
    """
    import pstats

    stats: Any = pstats.Stats(path)
    rows = []
    for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        rows.append(
            {
                "function": f"{_short(file)}:{line}({name})",
                "name": name,
                "file": file,
                "ncalls": nc,
                "tottime": tt,
                "cumtime": ct,
            }
        )
    own = [r for r in rows if not _is_wait(r["name"])]
    own.sort(key=lambda r: -r["tottime"])
    roots = (str(REPO / "storage"), str(REPO / "pipeline"))
    mine = [r for r in rows if r["file"].startswith(roots)]
    mine.sort(key=lambda r: -r["cumtime"])
    keep = ("function", "ncalls", "tottime", "cumtime")
    return {
        "file": path,
        "total_tottime": sum(r["tottime"] for r in rows),
        "top_tottime": [{k: r[k] for k in keep} for r in own[:top]],
        "top_strata_cumtime": [{k: r[k] for k in keep} for r in mine[:top]],
    }


# -- printing ----------------------------------------------------------------------------------
def print_results(results: dict[str, Any], console: Any = None) -> None:
    """Print the tables of ``results`` (from ``run_bench``) with rich."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=180)
    cases: list[dict[str, Any]] = results["cases"]
    cfg = results["config"]

    def say(line: str) -> None:
        console.print(line, markup=False, soft_wrap=True)

    def get(system: str, op: str, where: str = "local", setting: str | None = None) -> Any:
        for c in cases:
            if (c["system"], c["operation"], c["where"]) == (system, op, where):
                if setting is None or c["setting"] == setting:
                    return c
        return None

    def mem(c: dict[str, Any] | None) -> str:
        return "" if c is None else f"{c['peak_rss_mib']:,.0f} (+{c['delta_rss_mib']:,.0f})"

    def table(title: str, cols: list[str], left: int = 1) -> Any:
        console.print()
        say(title)  # a title of rich's wraps at the table's width
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for i, col in enumerate(cols):
            t.add_column(col, justify="left" if i < left else "right", no_wrap=i < left)
        return t

    sw, sr = get("strata", "write"), get("strata", "read")
    m = results["machine"]
    head = (
        f"{cfg['nbytes'] / 1e6:,.0f} MB of records ({cfg['partitions']} partitions x "
        f"{cfg['rows_per_partition']:,} rows), {m['cpus']} CPUs, best of {cfg['repeat']}"
    )
    s3_rounds = cfg.get("s3_repeat") or cfg["repeat"] + 1
    if s3_rounds != cfg["repeat"] and any(c["where"] != "local" for c in results["cases"]):
        head += f" (S3: of {s3_rounds})"

    # -- the comparison, row by row
    t = table(
        f"{head}; (x) = strata / peer",
        ["", "strata", "raw zarr", "parquet", "icechunk", "strax (fastest)", "better"],
    )
    for row in results["comparison"]:
        fmt = _fmt(row["metric"])
        cells = [fmt(row["values"]["strata"])]
        for peer in ("zarr", "parquet", "icechunk", "strax"):
            v = row["values"].get(peer)
            r = row["strata_over_peer"].get(peer)
            cells.append(f"{fmt(v)} ({r:.2f})" if v is not None and r is not None else fmt(v))
        t.add_row(
            row["row"],
            *cells,
            "higher" if row["higher_is_better"] else "lower",
            style="bold" if row["target_row"] else None,
        )
    console.print(t)

    # -- local detail
    t = table(
        "local disk (strata x = strata's MB/s / this row's)",
        [
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
        ],
        left=2,
    )
    rows = [
        ("strata", "strata", "write", "read"),
        ("strata loader()", "strata", "", "read loader().to_numpy()"),
        ("raw zarr", "zarr", "write", "read"),
        ("parquet", "parquet", "write", "read"),
        ("icechunk", "icechunk", "write", "read"),
        ("codec alone", "codec", "compress", "decompress"),
    ]
    rows += [
        (c["system"], c["system"], "write", "read")
        for c in cases
        if c["system"].startswith("strax-") and c["operation"] == "write"
    ]
    seen = set()
    for label, system, wop, rop in rows:
        for setting in sorted({c["setting"] for c in cases if c["system"] == system}):
            if (label, setting) in seen:
                continue
            seen.add((label, setting))
            w = get(system, wop, setting=setting) if wop else None
            r = get(system, rop, setting=setting)
            if w is None and r is None:
                continue
            stored = w.get("stored_bytes") if w else None
            extra = f", {w['extra']['threads']} threads" if w and "threads" in w["extra"] else ""
            t.add_row(
                label,
                f"{setting}{extra}",
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

    # -- partial reads, every system, local
    t = table(
        "partial reads on local disk (shares: of the same system's full read; read: bytes the "
        "process read / stored)",
        [
            "system",
            "read",
            "rows",
            "MB",
            "seconds",
            "MB/s",
            "time share",
            "MB read",
            "read/stored",
            "peak MiB (+)",
        ],
        left=2,
    )
    labels = {
        "read": "all fields",
        "read loader().to_numpy()": "all fields, loader().to_numpy()",
        "read area": 'fields=["area"]',
        "read data": 'fields=["data"]',
        "read 10% time_range": "10% time_range",
    }
    for system in ("strata", "zarr", "parquet", "icechunk"):
        full = get(system, "read")
        for op, label in labels.items():
            c = get(system, op)
            if c is None or full is None:
                continue
            fetched = c.get("bytes_fetched")
            share = c["extra"].get("fetched_share")
            t.add_row(
                system,
                label,
                f"{c['rows']:,}",
                f"{c['nbytes'] / 1e6:,.1f}",
                f"{c['seconds']:.4f}",
                f"{c['mb_per_s']:,.0f}",
                f"{c['seconds'] / full['seconds']:.2%}",
                f"{fetched / 1e6:,.1f}" if fetched is not None else "",
                f"{share:.1%}" if share is not None else "",
                mem(c),
                style="bold" if system == "strata" else None,
            )
    console.print(t)

    # -- S3
    s3_cases = [c for c in cases if c["where"].startswith("s3")]
    if s3_cases:
        t = table(
            "S3 (moto behind the latency proxy): requests by kind, body MB up / down, requests in "
            "flight; round trips = least-squares slope of wall time over the delays",
            [
                "system",
                "where",
                "operation",
                "seconds",
                "MB/s",
                "round trips",
                "waves",
                "requests",
                "by kind",
                "MB up/down",
                "fetched/stored",
                "in flight max",
                "mean",
                "peak MiB (+)",
            ],
            left=3,
        )
        order = {"strata": 0, "zarr": 1, "parquet": 2, "icechunk": 3}
        for c in sorted(
            s3_cases, key=lambda c: (order.get(c["system"], 9), c["operation"], c["where"])
        ):
            s3 = c["s3"] or {}
            kinds = ",".join(f"{k}:{v['requests']}" for k, v in s3.get("by_kind", {}).items())
            rt = c["extra"].get("serial_round_trips")
            share = c["extra"].get("fetched_share")
            t.add_row(
                c["system"],
                c["where"],
                c["operation"],
                f"{c['seconds']:.3f}",
                f"{c['mb_per_s']:,.0f}",
                f"{rt:.1f}" if rt is not None else "",
                str(s3.get("waves", "")),
                str(s3.get("requests", "")),
                kinds,
                f"{s3.get('bytes_up', 0) / 1e6:,.1f}/{s3.get('bytes_down', 0) / 1e6:,.1f}",
                f"{share:.1%}" if share is not None else "",
                str(s3.get("max_in_flight", "")),
                f"{s3.get('mean_in_flight_while_busy', 0):.1f}",
                mem(c),
                style="bold" if c["system"] == "strata" else None,
            )
        console.print(t)
        _print_strata_s3(results, console, table, say)

    # -- lines
    pf = get("pagefault", "pagefault")
    if pf is not None:
        e = pf["extra"]
        say(
            f"fresh memory: np.empty of {pf['nbytes'] / 1e6:,.0f} MB and one byte per "
            f"{e['page_size']} B page: {e['fault_s']:.3f} s (first of the process "
            f"{e.get('fault_first_s', math.nan):.3f} s; {e['fault_ns_per_page']:,.0f} ns a "
            f"page, {e['fault_gb_per_s']:.1f} GB/s; 2 threads: {e['fault_2_threads_s']:.3f} s); "
            f"filling it fresh {e['fill_fresh_s']:.3f} s ({e['fill_fresh_gb_per_s']:.1f} GB/s) "
            f"vs reused {e['fill_reused_s']:.3f} s ({e['fill_reused_gb_per_s']:.1f} GB/s); "
            f"transparent hugepages: {e['transparent_hugepage']}"
        )
    stream = get("strata-stream", "write")
    if stream is not None:
        e = stream["extra"]
        say(
            f"streaming: make of a {e['run_mib']:,.0f} MiB run ({cfg['stream_partitions']} "
            f"partitions of {e['partition_mib']:,.1f} MiB, generated inside the plugin) at "
            f"{stream['mb_per_s']:,.0f} MB/s including generation: peak RSS "
            f"{stream['peak_rss_mib']:,.0f} MiB, +{stream['delta_rss_mib']:,.0f} MiB during "
            f"make = {e['delta_in_partitions']:.1f} partitions"
        )
    for c in results["checks"]:
        mark = ("holds" if c["holds"] else "FALLS SHORT") if c["is_target"] else "(information)"
        v = "n/a" if c["value"] is None else f"{c['value']:.3g}"
        say(
            f"{'target' if c['is_target'] else 'also'} {c['target']}: {v} "
            f"(needed {c['direction']} {c['needed']:g}) {mark} - {c['detail']}"
        )
    for label, prof in results.get("profiles", {}).items():
        say(f"profile of strata {label} (cProfile in every thread; {prof['file']}):")
        say("  own time (waits left out):")
        for r in prof["top_tottime"][:15]:
            say(
                f"    {r['tottime']:8.3f} s own {r['cumtime']:8.3f} s cum {r['ncalls']:>8}  "
                f"{r['function']}"
            )
        say("  strata's functions by cumulative time (summed over threads):")
        for r in prof["top_strata_cumtime"][:15]:
            say(
                f"    {r['cumtime']:8.3f} s cum {r['tottime']:8.3f} s own {r['ncalls']:>8}  "
                f"{r['function']}"
            )
    say(f"load average at the end: {', '.join(map(str, m['load_average']))}")


def _print_strata_s3(results: dict[str, Any], console: Any, table: Any, say: Any) -> None:
    """Where strata's requests go on S3 at the targets' delay: by kind and object, and waves."""
    cases = [c for c in results["cases"] if c["system"] == "strata" and c["where"].startswith("s3")]
    if not cases:
        return
    hi = where_of(target_delay(delay_of(c["where"]) for c in cases))
    for op in ("write", "read", "read area", "read 10% time_range"):
        c = next((c for c in cases if c["where"] == hi and c["operation"] == op), None)
        if c is None or not c["s3"]:
            continue
        s3 = c["s3"]
        t = table(
            f"strata {op} at {hi}: {c['seconds']:.3f} s, {s3['requests']} requests "
            f"({s3['continued']} with Expect: 100-continue), statuses {s3['status']}",
            ["request", "count", "MB up", "MB down"],
        )
        for k, v in s3["by_kind_and_object"].items():
            t.add_row(
                k,
                str(v["requests"]),
                f"{v['bytes_up'] / 1e6:,.2f}",
                f"{v['bytes_down'] / 1e6:,.2f}",
            )
        console.print(t)
        ws = waves(c.get("s3_log") or [])
        say(f"  {len(ws)} waves of requests (a wave ends when none is in flight):")
        for i, w in enumerate(ws[:30]):
            kinds = ", ".join(f"{k} x{n}" for k, n in w["kinds"].items())
            say(
                f"    {i + 1:>3}  +{w['start'] * 1000:7.1f} ms  "
                f"{w['seconds'] * 1000:7.1f} ms  {kinds}"
            )
        if len(ws) > 30:
            say(f"    ... {len(ws) - 30} more waves")
