"""The ``strata`` command: run the demo, make data, and look at what is stored.

Every command takes ``--storage`` (repeatable; default ``./strata_data``, or the
``STRATA_STORAGE`` environment variable), so nothing needs to be running for a first try::

    strata demo                       # simulate 3 runs, make peak_basics, summary table, plot
    strata ls                         # what is stored
    strata info demo_000 peak_basics  # key, lineage, fields, stored copies

``make``, ``copy`` and ``demo`` run on an existing Dask cluster with ``--scheduler
tcp://HOST:8786`` (or the ``DASK_SCHEDULER_ADDRESS`` environment variable) or
``--scheduler-file PATH``: the workers read and write the storage directly, the command holds
only metadata, shows the progress of the remote tasks and prints the dashboard link.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from strata.storage import Entry, StorageError, StorageFrontend, open_frontend
from strata.storage.codecs import PRESETS

from .cluster import (
    DEFAULT_WORKER_TIMEOUT,
    WORKER_TIMEOUT_ENV,
    connect,
    plugin_modules,
    watched,
    worker_timeout_from_env,
)
from .context import Context
from .errors import PipelineError
from .plugin import Plugin, plugins_in

__all__ = ["load_plugins", "main"]

logger = logging.getLogger(__name__)


def _console() -> Console:
    import os
    import sys

    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        return Console(width=160)  # piped or captured: do not squeeze tables to 80 columns
    return Console()


console = _console()
DEFAULT_STORAGE = "./strata_data"
DEMO_PLUGINS = "strata.pipeline.demo:PLUGINS"


def _remember_catalog(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta["strata_catalog"] = value


def _with_catalog(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[Any, ...]:
    """With ``--catalog``, the first storage becomes an SQL catalog whose data lives at the
    first storage URL (``SQLFrontend(catalog, data_url=storage[0])``).
    """
    catalog = ctx.meta.get("strata_catalog")
    if not catalog:
        return value
    from strata.storage.frontends.sql import SQLFrontend

    first, *rest = value or (DEFAULT_STORAGE,)
    return (SQLFrontend(catalog, data_url=first), *rest)


def _storage_option(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--storage",
        "-s",
        "storage",
        multiple=True,
        default=(DEFAULT_STORAGE,),
        show_default=True,
        envvar="STRATA_STORAGE",
        show_envvar=True,
        callback=_with_catalog,
        help="Storage URL or path (repeatable; searched in order, saved to every writable one; "
        "STRATA_STORAGE: several separated by spaces).",
    )(f)
    return click.option(
        "--catalog",
        default=None,
        envvar="STRATA_CATALOG",
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_remember_catalog,
        help="SQL catalog URL (sqlite:///file.db, postgresql://user@host/db) indexing the data "
        "of the first --storage URL; many jobs can share it.",
    )(f)


def _pipeline_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--plugins``, ``--storage``/``--catalog`` and ``--config``: what a Context needs."""
    f = click.option(
        "--config", "-c", "config", multiple=True, help="option=value (JSON), repeatable."
    )(f)
    f = _storage_option(f)
    return click.option(
        "--plugins",
        "-p",
        "plugin_specs",
        multiple=True,
        default=(DEMO_PLUGINS,),
        show_default=True,
        help="module:attr of a Plugin class or a list of them (repeatable); module alone: all "
        "plugins it defines.",
    )(f)


def _errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into a one-line message and exit status 1."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (PipelineError, StorageError, ImportError, ValueError, OSError) as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e

    return wrapper


def load_plugins(specs: Sequence[str]) -> list[type[Plugin]]:
    """Plugin classes from ``module:attr`` specs (attr: a Plugin class or a list of them;
    ``module`` alone: every Plugin subclass defined in the module).
    """
    out: list[type[Plugin]] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise click.BadParameter(
                f"cannot import {module_name!r}: {e}", param_hint="--plugins"
            ) from e
        if not attr:
            found = plugins_in(module)
            if not found:
                raise click.BadParameter(
                    f"module {module_name!r} defines no Plugin classes", param_hint="--plugins"
                )
            out.extend(found)
            continue
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise click.BadParameter(
                    f"{module_name!r} has no attribute {attr!r}", param_hint="--plugins"
                ) from None
        items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
        for item in items:
            if not (isinstance(item, type) and issubclass(item, Plugin)):
                raise click.BadParameter(
                    f"{spec} is not a Plugin class or a list of them (found {item!r})",
                    param_hint="--plugins",
                )
        out.extend(items)
    return out


def _parse_partitions(text: str) -> list[int | tuple[int, int]]:
    """``--partitions``: comma-separated indices and ``START:END`` intervals."""
    out: list[int | tuple[int, int]] = []
    for item in text.split(","):
        item = item.strip()
        try:
            if ":" in item:
                a, b = item.split(":")
                out.append((int(a), int(b)))
            else:
                out.append(int(item))
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is neither a partition index nor START:END (integers)",
                param_hint="--partitions",
            ) from None
    return out


def _parse_config(items: Sequence[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not option=value", param_hint="--config")
        try:
            config[name] = json.loads(raw)
        except ValueError:
            config[name] = raw  # a plain string
    return config


SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def _remember_worker_timeout(ctx: click.Context, param: click.Parameter, value: float) -> None:
    ctx.meta["strata_worker_timeout"] = value


def _worker_timeout() -> float:
    """``--worker-timeout`` of the running command, else ``STRATA_WORKER_TIMEOUT``, else 60."""
    ctx = click.get_current_context(silent=True)
    value = ctx.meta.get("strata_worker_timeout") if ctx is not None else None
    return float(value) if value is not None else worker_timeout_from_env()


def _cluster_options(default: str | None, help: str) -> Callable[..., Any]:
    """``--scheduler`` (also from ``DASK_SCHEDULER_ADDRESS``), ``--scheduler-file`` and
    ``--worker-timeout`` (also from ``STRATA_WORKER_TIMEOUT``).
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option(
            "--worker-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_WORKER_TIMEOUT,
            show_default=True,
            envvar=WORKER_TIMEOUT_ENV,
            show_envvar=True,
            expose_value=False,  # read by _dask_client: the commands need not pass it on
            callback=_remember_worker_timeout,
            help="Seconds to wait for the scheduler and for a worker that can import strata "
            "and the plugins, and for a worker to return when a cluster loses all of them "
            "mid-job; then fail (inf: wait for ever).",
        )(f)
        f = click.option(
            "--scheduler-file",
            "scheduler_file",
            default=None,
            # existence is checked when connecting (distributed would wait forever for a
            # missing file), not at parse time, so `~` paths and scripts parse anywhere
            type=click.Path(dir_okay=False, path_type=Path),
            help="Connect to the Dask scheduler described in this file (as written by "
            "`dask scheduler --scheduler-file`); wins over DASK_SCHEDULER_ADDRESS.",
        )(f)
        return click.option(
            "--scheduler",
            default=default,
            show_default=default is not None,
            envvar=SCHEDULER_ENV,
            show_envvar=True,
            help=help,
        )(f)

    return decorate


def _scheduler_choice(
    scheduler: str | None, scheduler_file: Path | None
) -> tuple[str | None, Path | None]:
    """``(scheduler, scheduler_file)`` with at most one set: the file wins over an address
    from the environment; both on the command line is a usage error.
    """
    if scheduler_file is None:
        return scheduler, None
    source = click.get_current_context().get_parameter_source("scheduler")
    if source is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --scheduler or --scheduler-file, not both")
    scheduler_file = scheduler_file.expanduser()
    if not scheduler_file.is_file():
        raise click.BadParameter(
            f"{scheduler_file} does not exist (start `dask scheduler --scheduler-file "
            f"{scheduler_file}` first)",
            param_hint="--scheduler-file",
        )
    return None, scheduler_file


def _dashboard_link(client: Any) -> str | None:
    """The scheduler's dashboard URL, or ``None`` if it serves none (no bokeh there)."""
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError, OSError):
        return None
    return str(link) if link else None


def _cluster_banner(client: Any) -> None:
    """Say which cluster the work runs on, how big it is and where its dashboard is."""
    nthreads = client.nthreads()
    _say(
        f"Dask cluster {client.scheduler.address}: {len(nthreads)} worker(s), "
        f"{sum(nthreads.values())} thread(s)"
    )
    if not nthreads:
        _say("the cluster has no workers now: tasks wait up to --worker-timeout for one")
    link = _dashboard_link(client)
    _say(f"dashboard: {link}" if link else "dashboard: none (the scheduler serves no dashboard)")


@contextmanager
def _dask_client(
    scheduler: str | None,
    workers: int,
    scheduler_file: Path | None = None,
    plugins: Sequence[type[Plugin]] = (),
) -> Iterator[Any]:
    """``None`` for ``threads``; a client of the scheduler at ``scheduler`` or described in
    ``scheduler_file``; else a local process cluster of ``workers`` processes.

    A remote cluster is used once one of its workers imports strata and the modules of
    ``plugins``; a scheduler that does not answer, or no such worker, within
    ``--worker-timeout`` seconds is an error, and so is a cluster that loses every worker for
    that long while the command waits for its tasks (see :mod:`strata.pipeline.cluster`).
    """
    if scheduler_file is None and scheduler == "threads":
        yield None
        return
    from distributed import Client, LocalCluster

    if not logger.isEnabledFor(logging.INFO):
        # Importing distributed configures its loggers; a local cluster's scheduler runs in
        # this process and its routine messages are noise on a terminal.
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler_file is not None or scheduler:
        timeout = _worker_timeout()
        remote = connect(
            None if scheduler_file is not None else scheduler,
            scheduler_file,
            timeout=timeout,
            modules=plugin_modules(plugins),
            report=_say,
        )
        with remote as client, watched(client, timeout):
            _cluster_banner(client)
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextmanager
def _progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _say(message: str) -> None:
    """Print a plain line (no rich markup; long paths are not broken)."""
    console.print(message, markup=False, soft_wrap=True)


def _mb(n: float | None) -> str:
    return "" if n is None else f"{n / 1e6:,.2f}"


def _seconds(start: str, end: str) -> float:
    return (_dt.datetime.fromisoformat(end) - _dt.datetime.fromisoformat(start)).total_seconds()


def _stored_bytes(fe: StorageFrontend, entry: Entry) -> int | None:
    if entry.stored_bytes is not None:
        return entry.stored_bytes
    try:
        return fe.stored_bytes(entry.key)
    except (StorageError, OSError):
        return None


def _table(title: str) -> Table:
    return Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def _entries_table(
    fe: StorageFrontend, entries: Sequence[Entry], title: str, throughput: bool = False
) -> Table:
    table = _table(title)
    for col, values in (
        ("run", [e.key.run_id for e in entries]),
        ("data type", [e.key.data_type for e in entries]),
        ("hash", [e.key.lineage_hash for e in entries]),
    ):
        table.add_column(col, no_wrap=True, min_width=max(map(len, values), default=4))
    for col in ("rows", "parts", "MB", "stored MB", "ratio"):
        table.add_column(col, justify="right")
    if throughput:
        table.add_column("MB/s", justify="right")
    total_rows = total_bytes = total_stored = 0
    for e in entries:
        stored = _stored_bytes(fe, e)
        ratio = f"{e.nbytes / stored:.1f}" if stored else ""
        row = [
            e.key.run_id,
            e.key.data_type,
            e.key.lineage_hash,
            f"{e.rows:,}",
            str(e.partitions),
            _mb(e.nbytes),
            _mb(stored),
            ratio,
        ]
        if throughput:
            m = fe.get_metadata(e.key)
            secs = _seconds(m.writing_started, m.writing_ended)
            row.append(f"{e.nbytes / 1e6 / secs:,.1f}" if secs > 0 else "")
        table.add_row(*row)
        total_rows += e.rows
        total_bytes += e.nbytes
        total_stored += stored or 0
    if len(entries) > 1:
        ratio = f"{total_bytes / total_stored:.1f}" if total_stored else ""
        table.add_row(
            "total",
            "",
            "",
            f"{total_rows:,}",
            "",
            _mb(total_bytes),
            _mb(total_stored),
            ratio,
            *([""] if throughput else []),
            style="bold",
        )
    return table


# -- commands ---------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="strata")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """strata: lineage-keyed record data in Zarr v3, processed with Dask.

    Start with `strata demo`, then `strata ls` and `strata info RUN TARGET`.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@_storage_option
@click.option(
    "--runs", default=3, show_default=True, type=click.IntRange(1), help="Runs to simulate."
)
@click.option(
    "--size",
    type=click.Choice(["small", "medium", "large"]),
    default="small",
    show_default=True,
    help="Run size: small (8 x 0.1 s partitions, 2 kHz), medium (32, 5 kHz), large (128, 10 kHz).",
)
@click.option("--seed", default=0, show_default=True, help="Random seed of the simulation.")
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="Local worker processes.",
)
@_cluster_options(
    None,
    "Address of a running Dask scheduler, or 'threads' for no cluster "
    "(default: a local cluster of --workers processes).",
)
@click.option(
    "--plot",
    "plot_path",
    default="strata_demo_area_spectrum.png",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the PNG of the peak area spectrum.",
)
@_errors
def demo(
    storage: tuple[str, ...],
    runs: int,
    size: str,
    seed: int,
    workers: int,
    scheduler: str | None,
    scheduler_file: Path | None,
    plot_path: Path,
) -> None:
    """Simulate detector runs and make `peak_basics` for them on a local Dask cluster.

    Writes run metadata (start, duration, per-channel gains) for RUNS runs, makes
    raw_records -> records -> peaks -> peak_basics with a progress bar, prints a table of what
    was stored (rows, sizes, compression ratio, MB/s) and writes a PNG of the area spectrum.
    Data already stored is not computed again.
    """
    from .demo import PLUGINS, SIZES, run_document

    frontends = [open_frontend(s) for s in storage]
    sz = SIZES[size]
    run_ids = [f"demo_{i:03d}" for i in range(runs)]
    for run in run_ids:
        doc = run_document(
            run, seed=seed, n_partitions=int(sz["n_partitions"]), pulse_rate=sz["pulse_rate"]
        )
        frontends[0].write_run_metadata(run, doc)
    _say(f"Run metadata written for {len(run_ids)} run(s) ({size}) in {frontends[0]!r}")
    scheduler, scheduler_file = _scheduler_choice(scheduler, scheduler_file)
    with _dask_client(scheduler, workers, scheduler_file, PLUGINS) as client:
        where = "threads" if client is None else f"Dask cluster {client.scheduler.address}"
        _say(f"Computing on {where}")
        ctx = Context(storage=frontends, register=PLUGINS, config={"seed": seed}, client=client)
        todo = [run for run in run_ids if not ctx.is_stored(run, "peak_basics")]
        t0 = time.perf_counter()
        if todo:
            with _progress_bar("making peak_basics") as progress:
                ctx.make(todo, "peak_basics", progress=progress)
        elapsed = time.perf_counter() - t0
        keys = {str(ctx.key_for(run, dt)) for run in run_ids for dt in ctx.plugins}
        entries = [e for run in run_ids for e in frontends[0].list(run) if str(e.key) in keys]
        console.print(_entries_table(frontends[0], entries, f"Stored in {frontends[0]!r}", True))
        if todo:
            made = sum(e.nbytes for e in entries if e.key.run_id in todo)
            _say(
                f"made peak_basics of {len(todo)} run(s) in {elapsed:.1f} s: "
                f"{made / 1e6 / elapsed:,.1f} MB/s of data saved (uncompressed). "
                "Per row, MB/s is its size over the time from the start of make to its commit."
            )
        else:
            _say("peak_basics is already stored for every run: nothing was computed")
        arr = ctx.get_array(run_ids, "peak_basics", fields=["area", "width"])
    _plot_spectrum(arr, plot_path, len(run_ids))
    _say(f"{len(arr):,} peaks; area spectrum written to {plot_path.resolve()}")


def _plot_spectrum(arr: Any, path: Path, n_runs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    area = arr["area"][arr["area"] > 0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if len(area):
        bins = np.logspace(np.log10(max(area.min(), 1e-1)), np.log10(area.max()), 80)
        ax1.hist(area, bins=bins, histtype="step", color="C0")
        ax1.set_xscale("log")
        sel = (arr["area"] > 0) & (arr["width"] > 0)
        ax2.scatter(arr["area"][sel], arr["width"][sel], s=2, alpha=0.3, color="C1")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
    ax1.set_xlabel("peak area [PE]")
    ax1.set_ylabel("peaks per bin")
    ax1.set_title(f"strata demo: area spectrum ({n_runs} runs)")
    ax2.set_xlabel("peak area [PE]")
    ax2.set_ylabel("50% area width [ns]")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


@main.command()
@click.argument("run_id")
@click.argument("target")
@_pipeline_options
@click.option("--save", multiple=True, help="Also save this data type (repeatable).")
@click.option(
    "--partitions",
    "partitions",
    default=None,
    metavar="ITEMS",
    help="Make only these partitions, saved as a piece: comma-separated indices into the "
    "run's partition list and START:END intervals, e.g. '0,3' or '0:2000'.",
)
@_cluster_options("threads", "Address of a Dask scheduler (tcp://host:8786), or 'threads'.")
@_errors
def make(
    run_id: str,
    target: str,
    plugin_specs: tuple[str, ...],
    storage: tuple[str, ...],
    config: tuple[str, ...],
    save: tuple[str, ...],
    partitions: str | None,
    scheduler: str,
    scheduler_file: Path | None,
) -> None:
    """Make TARGET for RUN_ID (compute what is missing, save it) and list what is stored.

    With --partitions only those partitions are made and saved as a piece (see
    Context.make's partitions=); merge the pieces with Context.merge_partitions.

    On a Dask cluster (--scheduler, DASK_SCHEDULER_ADDRESS or --scheduler-file) the workers
    compute, write and commit; the workers must be able to import the plugins and reach the
    storage URLs.
    """
    plugins = load_plugins(plugin_specs)
    selection = None if partitions is None else _parse_partitions(partitions)
    sched, sched_file = _scheduler_choice(scheduler, scheduler_file)
    with _dask_client(sched, 1, sched_file, plugins) as client:
        ctx = Context(
            storage=list(storage), register=plugins, config=_parse_config(config), client=client
        )
        key = ctx.key_for(run_id, target)
        if selection is not None:
            with _progress_bar(f"making {target} (partitions {partitions})") as progress:
                ctx.make(run_id, target, save=save, progress=progress, partitions=selection)
            cover = ctx.partition_coverage(run_id, target)
            _say(
                f"{key}: {int(cover['stored'].sum())} of {len(cover)} partitions stored "
                f"(in {len(ctx.stored_pieces(run_id, target))} piece(s) or the full key)"
            )
        elif ctx.is_stored(run_id, target):
            _say(f"{key} is already stored; nothing to do")
        else:
            with _progress_bar(f"making {target}") as progress:
                ctx.make(run_id, target, save=save, progress=progress)
            _say(f"made {key}")
    fe = ctx.storage[0]
    console.print(_entries_table(fe, fe.list(run_id), f"{run_id} in {fe!r}"))


@main.command(name="ls")
@click.argument("run_id", required=False)
@_storage_option
@_errors
def ls_command(run_id: str | None, storage: tuple[str, ...]) -> None:
    """List stored data (of RUN_ID, or of every run): keys, rows, sizes."""
    for url in storage:
        fe = open_frontend(url)
        entries = fe.list(run_id)
        if not entries:
            _say(f"nothing stored in {fe!r}" + (f" for run {run_id!r}" if run_id else ""))
        else:
            console.print(_entries_table(fe, entries, f"{fe!r}"))
        for problem in fe.skipped:  # damaged entries: listed around, and named
            _say(f"skipped (unreadable): {problem}; run `strata verify` for details")


@main.command()
@click.argument("run_id")
@click.argument("target")
@_pipeline_options
@_errors
def info(
    run_id: str,
    target: str,
    plugin_specs: tuple[str, ...],
    storage: tuple[str, ...],
    config: tuple[str, ...],
) -> None:
    """Show TARGET of RUN_ID: its key and lineage, its fields, options, and stored copies."""
    ctx = Context(storage=list(storage), register=load_plugins(plugin_specs))
    if config:
        ctx.set_config(_parse_config(config))
    if target in ctx.plugins:
        try:
            key = ctx.key_for(run_id, target)
            stored = ctx.is_stored(run_id, target)
            console.print(f"[bold]{key}[/]  ({'stored' if stored else 'not stored'})")
            console.print_json(json.dumps(key.lineage))
        except PipelineError as e:
            msg = f"cannot build the key of {target!r} for {run_id!r}: {e}"
            console.print(f"[yellow]{escape(msg)}[/]")
        console.print(_frame_table(ctx.data_info(target), f"fields of {target}"))
        console.print(_frame_table(ctx.show_config(target), f"options {target} depends on"))
    else:
        console.print(f"[yellow]{escape(repr(target))} is not provided by the given plugins[/]")
    for fe in ctx.storage:
        entries = [e for e in fe.list(run_id) if e.key.data_type == target]
        if not entries:
            _say(f"no {target!r} of {run_id!r} stored in {fe!r}")
            continue
        console.print(_entries_table(fe, entries, f"{target} of {run_id} in {fe!r}"))
        for entry in entries:
            m = fe.get_metadata(entry.key)
            _say(
                f"{entry.key}: plugin {m.metadata.get('plugin', '?')} "
                f"{m.metadata.get('version', '')}, written {m.writing_ended}, "
                f"fields {list(m.np_dtype.names or ())}"
            )


def _frame_table(df: Any, title: str) -> Table:
    table = _table(title)
    for col in df.columns:
        table.add_column(escape(str(col)))
    for row in df.itertuples(index=False):
        table.add_row(*[escape(str(v)) for v in row])
    return table


_STATS_PER_RUN = 100  # up to this many runs, stored data is listed run by run


def _run_stats(
    frontends: Sequence[StorageFrontend], run_ids: Sequence[str]
) -> dict[str, tuple[int, int, int]]:
    """``{run: (data types, rows, bytes)}`` over every frontend (one key counted once)."""
    wanted = set(run_ids)
    seen: set[Any] = set()
    stats: dict[str, list[int]] = {r: [0, 0, 0] for r in run_ids}
    for fe in frontends:
        if len(wanted) <= _STATS_PER_RUN:
            entries = [e for r in sorted(wanted) for e in fe.list(r)]
        else:  # one listing instead of one per run
            entries = [e for e in fe.list() if e.key.run_id in wanted]
        for e in entries:
            if e.key in seen:
                continue
            seen.add(e.key)
            s = stats[e.key.run_id]
            s[0] += 1
            s[1] += e.rows
            s[2] += e.nbytes
    return {r: (s[0], s[1], s[2]) for r, s in stats.items()}


@main.command()
@_pipeline_options
@click.option(
    "--run-id", "-r", "run_id", multiple=True, help="Pattern a run id must match (repeatable)."
)
@click.option(
    "--run-mode", "run_mode", multiple=True, help="Pattern a run mode must match (repeatable)."
)
@click.option(
    "--include-tags",
    "include_tags",
    multiple=True,
    help="Pattern one of the run's tags must match (repeatable: any of them).",
)
@click.option(
    "--exclude-tags",
    "exclude_tags",
    multiple=True,
    help="Pattern none of the run's tags may match (repeatable; wins over --include-tags).",
)
@click.option(
    "--pattern-type",
    type=click.Choice(["fnmatch", "re"]),
    default="fnmatch",
    show_default=True,
    help="fnmatch: shell wildcards (* ? [seq]); re: Python regular expressions (re.match).",
)
@click.option(
    "--available",
    "available",
    multiple=True,
    help="Only runs for which this data type is stored, with the key --plugins and --config "
    "give it (repeatable).",
)
@click.option(
    "--field",
    "-f",
    "fields",
    multiple=True,
    help="Dotted path into the run documents to show as a column (repeatable), e.g. "
    "calibration.gains.",
)
@_errors
def runs(
    plugin_specs: tuple[str, ...],
    storage: tuple[str, ...],
    config: tuple[str, ...],
    run_id: tuple[str, ...],
    run_mode: tuple[str, ...],
    include_tags: tuple[str, ...],
    exclude_tags: tuple[str, ...],
    pattern_type: str,
    available: tuple[str, ...],
    fields: tuple[str, ...],
) -> None:
    """List runs (every --storage; a run once, from the first with its run document): mode,
    tags, chosen fields, and how much data is stored for each. The filters are those of
    select_runs; an SQL catalog evaluates them in the database.
    """
    from .runs import select_runs

    frontends = [open_frontend(s) for s in storage]
    key_for = fuzzy_for = fuzzy_for_options = None
    if available:
        ctx = Context(
            storage=frontends, register=load_plugins(plugin_specs), config=_parse_config(config)
        )
        key_for = ctx.key_for
        fuzzy_for = ctx.context_config["fuzzy_for"]
        fuzzy_for_options = ctx.context_config["fuzzy_for_options"]
    df = select_runs(
        frontends,
        run_mode=run_mode or None,
        run_id=run_id or None,
        include_tags=include_tags or None,
        exclude_tags=exclude_tags or None,
        available=available,
        pattern_type=pattern_type,
        fields=fields,
        key_for=key_for,
        fuzzy_for=fuzzy_for or (),
        fuzzy_for_options=fuzzy_for_options or (),
    )
    for fe in frontends:
        for problem in fe.skipped:
            _say(f"skipped (unreadable): {problem}")
    names = ", ".join(map(repr, frontends))
    if df.empty:
        _say(
            f"no runs in {names} match"
            if any((run_id, run_mode, include_tags, exclude_tags, available))
            else f"no runs in {names}"
        )
        return
    stats = _run_stats(frontends, list(df["run_id"]))
    table = _table(f"{len(df):,} run(s) in {names}")
    columns = ["run", "metadata", "mode", "tags", *fields]
    columns += [f"{t}" for t in available] + ["data types", "rows", "size MB"]
    for col in columns:
        table.add_column(escape(col))
    for row in df.to_dict("records"):
        n, rows, nbytes = stats[row["run_id"]]
        values = [row["run_id"], "yes" if row["has_metadata"] else "no", row["mode"], row["tags"]]
        values += [_cell(row[f]) for f in fields]
        values += ["yes" for _ in available]  # only runs that have them are left
        values += [str(n), f"{rows:,}", _mb(nbytes)]
        table.add_row(*[escape(v) for v in values])
    console.print(table)


def _cell(value: Any) -> str:
    """A run-document value as a table cell (JSON for lists and objects)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


@main.command()
@_storage_option
@click.option(
    "--min-age",
    default=3600.0,
    show_default=True,
    help="Only remove attempts whose lease is older than this many seconds (a running save "
    "renews its lease), and temporary files older than this.",
)
@click.option(
    "--grace",
    default=24 * 3600.0,
    show_default=True,
    help="Keep attempts an overwrite superseded for this many seconds after it (readers that "
    "opened the old manifest read it completely).",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@_errors
def gc(storage: tuple[str, ...], min_age: float, grace: float, dry_run: bool) -> None:
    """Remove what failed, killed and overwritten saves left behind: uncommitted and
    superseded attempts, temporary files, orphaned stored-object directories.
    """
    for url in storage:
        fe = open_frontend(url)
        # in every backend that can
        removed = fe.gc(min_age_seconds=min_age, dry_run=dry_run, grace_seconds=grace)
        verb = "would remove" if dry_run else "removed"
        _say(f"{fe!r}: {verb} {len(removed)} leftover attempt(s)")
        for path in removed:
            _say(f"  {path}")


@main.command(name="verify")
@click.argument("run_id", required=False)
@click.argument("target", required=False)
@_storage_option
@click.option(
    "--max-problems",
    default=20,
    show_default=True,
    type=click.IntRange(0),
    help="Problems printed per key (every problem is counted in the summary).",
)
@_errors
def verify_command(
    run_id: str | None, target: str | None, storage: tuple[str, ...], max_problems: int
) -> None:
    """Check stored data (of RUN_ID, of data type TARGET, or all) against its manifests.

    Every chunk and metadata document a commit names is read (not decoded) and compared with
    the size and crc32c its manifest recorded; a missing, truncated, swapped or replaced
    object, or a damaged manifest, is a problem naming key, array and chunk. Prints a summary
    and the problems (up to --max-problems per key); the exit status is 1 if there is any
    problem, else 0.
    """
    damaged = 0
    for url in storage:
        fe = open_frontend(url)
        with _progress_bar("verifying") as progress:
            reports = fe.verify(run_id, target, progress=progress)
        if not reports:
            what = " ".join(x for x in (run_id, target) if x)
            _say(f"nothing stored in {fe!r}" + (f" for {what}" if what else ""))
            continue
        bad = [r for r in reports if not r.ok]
        damaged += len(bad)
        table = _table(f"verified {fe!r}")
        for col in ("keys", "intact", "damaged", "objects", "MB read", "problems"):
            table.add_column(col, justify="right")
        table.add_row(
            f"{len(reports):,}",
            f"{len(reports) - len(bad):,}",
            f"{len(bad):,}",
            f"{sum(r.objects for r in reports):,}",
            _mb(sum(r.bytes_read for r in reports)),
            f"{sum(len(r.problems) for r in reports):,}",
            style="bold red" if bad else "bold",
        )
        console.print(table)
        for r in reports:
            for note in r.notes:
                _say(f"note: {r.backend_key}: {note}")
            for problem in r.problems[:max_problems]:
                _say(f"{r.backend_key}: {problem}")
            if len(r.problems) > max_problems:
                _say(f"{r.backend_key}: ... and {len(r.problems) - max_problems} more problem(s)")
    if damaged:
        _say(f"{damaged} damaged key(s)")
        raise click.exceptions.Exit(1)


@main.command(name="copy")
@click.argument("run_id")
@click.argument("target")
@click.option(
    "--to",
    "to_url",
    required=True,
    help="Storage URL or path to copy to (local, s3://, ssh://, sqlite://, ...).",
)
@click.option(
    "--compressor",
    default=None,
    help=f"Recompress with this preset ({', '.join(PRESETS)}); default: the destination's.",
)
@click.option(
    "--rechunk-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Rechunk to chunks of about this many MiB (uncompressed); default: the destination's.",
)
@click.option("--overwrite", is_flag=True, help="Replace the copy if TO already stores it.")
@_pipeline_options
@_cluster_options("threads", "Address of a Dask scheduler (tcp://host:8786), or 'threads'.")
@_errors
def copy_command(
    run_id: str,
    target: str,
    to_url: str,
    compressor: str | None,
    rechunk_mb: float | None,
    overwrite: bool,
    plugin_specs: tuple[str, ...],
    storage: tuple[str, ...],
    config: tuple[str, ...],
    scheduler: str,
    scheduler_file: Path | None,
) -> None:
    """Copy stored TARGET of RUN_ID from --storage to --to, verified partition by partition.

    Nothing is computed: the data is read from the first --storage that has it, optionally
    recompressed and rechunked, committed at the destination like any save, and read back and
    compared (sha256 of every partition). On a Dask cluster the workers read and write both
    stores directly.
    """
    plugins = load_plugins(plugin_specs)
    dest = open_frontend(to_url)
    sched, sched_file = _scheduler_choice(scheduler, scheduler_file)
    with _dask_client(sched, 1, sched_file, plugins) as client:
        ctx = Context(
            storage=list(storage), register=plugins, config=_parse_config(config), client=client
        )
        key = ctx.key_for(run_id, target)
        if dest.is_stored(key) and not overwrite:
            _say(f"{key} is already stored in {dest!r}; nothing to do (--overwrite replaces it)")
            return
        with _progress_bar(f"copying {target}") as progress:
            m = ctx.copy_to_frontend(
                run_id,
                target,
                dest,
                progress=progress,
                compressor=compressor,
                rechunk_mb=rechunk_mb,
                overwrite=overwrite,
            )
    codecs = [c.get("name", "?") for c in next(iter(m.arrays.values()), {}).get("codecs", [])]
    _say(
        f"copied {key} to {dest!r}: {m.rows:,} rows in {len(m.partitions)} partition(s), "
        f"{len(m.segments)} segment(s), codecs {' > '.join(codecs)}; verified (sha256 per "
        "partition)"
    )
