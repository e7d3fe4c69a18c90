r"""Start a Dask cluster of SLURM or PBS jobs for strata and write its scheduler file.

Run it on a node that the compute nodes can reach (a login node, in tmux or screen, or in a
small batch job of its own), in the environment strata is installed in::

    python deploy/slurm/start_cluster.py --system slurm --jobs 4
    python deploy/slurm/start_cluster.py --system pbs --adapt 1 20
    python deploy/slurm/start_cluster.py --system slurm --dry-run     # print the job script
    python deploy/slurm/start_cluster.py --set queue=short --set walltime=00:20:00 --jobs 2

then, from any shell that can reach the scheduler::

    strata make RUN TARGET --plugins mypkg.plugins:PLUGINS --storage /project/strata \
        --scheduler-file ~/.strata/scheduler.json

``--jobs N`` keeps N jobs: a job that ends (its walltime, ``scancel``, a node failure) is
replaced by a new one once its workers are gone. ``--adapt MIN MAX`` lets the load decide,
between MIN and MAX jobs. ``--set KEY=VALUE`` overrides one key of the configuration's
``jobqueue.<system>`` section (VALUE is YAML: ``--set cores=4``,
``--set 'worker-extra-args=[--lifetime, 25m]'``).

The scheduler file appears (written whole, by rename) once the scheduler runs and the jobs
are asked for: a script that starts this in the background waits for the file. The
scheduler runs inside this process: it stops, and the jobs are cancelled, when this process
ends (Ctrl-C or SIGTERM). The configuration is deploy/slurm/jobqueue.yaml unless --config
says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import dask.config
import yaml

HERE = Path(__file__).resolve().parent
CLUSTERS = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: dask.config.set merges dotted keys into the
    defaults instead of replacing whole sections.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name.count(".") < 2:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_config(path: Path) -> dict[str, Any]:
    """The dotted dask config keys of a jobqueue.yaml file."""
    with open(path) as f:
        tree = yaml.safe_load(f)
    if not isinstance(tree, dict) or "jobqueue" not in tree:
        raise SystemExit(f"{path}: not a dask-jobqueue configuration (no 'jobqueue' section)")
    return flatten(tree)


def known_keys(system: str) -> set[str]:
    """The keys of dask-jobqueue's ``jobqueue.<system>`` section (its defaults)."""
    import dask_jobqueue  # noqa: F401  (importing it loads its defaults into dask.config)

    return set(dask.config.get(f"jobqueue.{system}"))


def apply_overrides(config: dict[str, Any], system: str, items: list[str]) -> dict[str, Any]:
    """``config`` with the ``KEY=VALUE`` overrides of ``--set`` for ``jobqueue.<system>``.

    VALUE is parsed as YAML (``cores=2``, ``queue=debug``, ``worker-extra-args=[--lifetime,
    40s]``, ``queue=null``). A KEY that dask-jobqueue does not know for ``system`` is an error
    naming it and the known keys (a misspelt key would otherwise be ignored silently).
    """
    out = dict(config)
    keys = known_keys(system) if items else set()
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. --set queue=debug")
        if key not in keys:
            raise SystemExit(
                f"--set {item!r}: {key!r} is not a dask-jobqueue key of jobqueue.{system} "
                f"(known: {', '.join(sorted(keys))})"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise SystemExit(f"--set {item!r}: the value is not YAML: {e}") from None
        out[f"jobqueue.{system}.{key}"] = value
    return out


def make_cluster(system: str, config: dict[str, Any], **kwargs: Any) -> Any:
    """A SLURMCluster or PBSCluster built from ``config`` (nothing is submitted yet).

    ``config`` is set for the rest of the process: the cluster reads it again whenever it
    renders a job script.
    """
    import dask_jobqueue

    cls = getattr(dask_jobqueue, CLUSTERS[system])
    dask.config.set(config)
    return cls(**kwargs)


def write_scheduler_file(client: Any, path: Path) -> None:
    """Write the scheduler file of ``client`` to ``path`` whole: a reader polling for the
    file never sees half of it (a temporary file in the same directory, then a rename).
    """
    info = client.scheduler_info(n_workers=0)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--system", choices=sorted(CLUSTERS), default="slurm")
    ap.add_argument("--config", type=Path, default=HERE / "jobqueue.yaml")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override jobqueue.<system>.KEY of the configuration (VALUE is YAML; repeatable)",
    )
    size = ap.add_mutually_exclusive_group()
    size.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="keep this many batch jobs (ended ones are replaced); default %(default)s",
    )
    size.add_argument(
        "--adapt", nargs=2, type=int, metavar=("MIN", "MAX"), help="adaptive: jobs between"
    )
    ap.add_argument(
        "--scheduler-file",
        type=Path,
        default=Path("~/.strata/scheduler.json"),
        help="where to write the scheduler's address (default: %(default)s)",
    )
    ap.add_argument("--dry-run", action="store_true", help="print the job script and exit")
    return ap


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Start the cluster, write the scheduler file, and run until Ctrl-C or SIGTERM."""
    args = build_parser().parse_args(argv)
    if args.jobs < 1 or (args.adapt and not 0 <= args.adapt[0] <= args.adapt[1]):
        raise SystemExit("--jobs must be >= 1 and --adapt MIN MAX needs 0 <= MIN <= MAX")

    config = apply_overrides(load_config(args.config), args.system, args.overrides)
    if args.dry_run:
        # Only the job script: a scheduler on a free local port, never contacted.
        local = {"host": "127.0.0.1", "port": 0, "dashboard_address": ":0"}
        cluster = make_cluster(args.system, config, scheduler_options=local)
        print(cluster.job_script())
        cluster.close()
        return 0

    from distributed import Client

    # SIGTERM (scancel of a batch job running this script, kill PID) ends it like Ctrl-C:
    # the jobs are cancelled and the scheduler file removed.
    signal.signal(signal.SIGTERM, _stop)
    scheduler_file = args.scheduler_file.expanduser()
    scheduler_file.parent.mkdir(parents=True, exist_ok=True)
    cluster = make_cluster(args.system, config)
    try:
        with cluster, Client(cluster) as client:
            if args.adapt:
                cluster.adapt(minimum_jobs=args.adapt[0], maximum_jobs=args.adapt[1])
            else:
                # An adaptive cluster of fixed size: a job that ends is replaced once the
                # scheduler has lost its workers (distributed.deploy.lost-worker-timeout).
                cluster.scale(jobs=args.jobs)
                cluster.adapt(minimum_jobs=args.jobs, maximum_jobs=args.jobs)
            write_scheduler_file(client, scheduler_file)
            print(f"scheduler  {cluster.scheduler_address}", flush=True)
            print(f"dashboard  {cluster.dashboard_link}", flush=True)
            print(f"file       {scheduler_file}", flush=True)
            print(f"then: strata make RUN TARGET ... --scheduler-file {scheduler_file}")
            print("Ctrl-C stops the cluster and cancels its jobs.", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except (KeyboardInterrupt, SystemExit):
                pass
            finally:
                scheduler_file.unlink(missing_ok=True)
    finally:
        scheduler_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
