"""Start a Dask cluster of SLURM or PBS jobs for strata and write its scheduler file.

Run it on a node that the compute nodes can reach (a login node, in tmux or screen, or in a
small batch job of its own), in the environment strata is installed in::

    python deploy/slurm/start_cluster.py --system slurm --jobs 4
    python deploy/slurm/start_cluster.py --system pbs --adapt 1 20
    python deploy/slurm/start_cluster.py --system slurm --dry-run     # print the job script

then, from any shell that can reach the scheduler::

    strata make RUN TARGET --plugins mypkg.plugins:PLUGINS --storage /project/strata \\
        --scheduler-file ~/.strata/scheduler.json

The scheduler runs inside this process: it stops, and the jobs are cancelled, when this process
ends (Ctrl-C). The configuration is deploy/slurm/jobqueue.yaml unless --config says otherwise.
"""

from __future__ import annotations

import argparse
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


def make_cluster(system: str, config: dict[str, Any], **kwargs: Any) -> Any:
    """A SLURMCluster or PBSCluster built from ``config`` (nothing is submitted yet).

    ``config`` is set for the rest of the process: the cluster reads it again whenever it
    renders a job script.
    """
    import dask_jobqueue

    cls = getattr(dask_jobqueue, CLUSTERS[system])
    dask.config.set(config)
    return cls(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--system", choices=sorted(CLUSTERS), default="slurm")
    ap.add_argument("--config", type=Path, default=HERE / "jobqueue.yaml")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--jobs", type=int, default=1, help="fixed number of batch jobs")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    config = load_config(args.config)
    if args.dry_run:
        # Only the job script: a scheduler on a free local port, never contacted.
        local = {"host": "127.0.0.1", "port": 0, "dashboard_address": ":0"}
        cluster = make_cluster(args.system, config, scheduler_options=local)
        print(cluster.job_script())
        cluster.close()
        return 0

    from distributed import Client

    cluster = make_cluster(args.system, config)
    scheduler_file = args.scheduler_file.expanduser()
    scheduler_file.parent.mkdir(parents=True, exist_ok=True)
    with cluster, Client(cluster) as client:
        if args.adapt:
            cluster.adapt(minimum_jobs=args.adapt[0], maximum_jobs=args.adapt[1])
        else:
            cluster.scale(jobs=args.jobs)
        client.write_scheduler_file(str(scheduler_file))
        print(f"scheduler  {cluster.scheduler_address}")
        print(f"dashboard  {cluster.dashboard_link}")
        print(f"file       {scheduler_file}")
        print(f"then: strata make RUN TARGET ... --scheduler-file {scheduler_file}")
        print("Ctrl-C stops the cluster and cancels its jobs.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(3600)
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            if scheduler_file.exists():
                os.unlink(scheduler_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
