"""``strata make`` on a running cluster: --scheduler-file, DASK_SCHEDULER_ADDRESS, --scheduler;
the workers compute and write, the client receives only metadata; progress and dashboard."""

from __future__ import annotations

import os
import re
import subprocess

import dask
import numpy as np
import pytest
from click.testing import CliRunner
from distributed import get_task_stream

from strata.pipeline import Context
from strata.pipeline.cli import _dashboard_link, main
from strata.storage import DirectoryFrontend
from tests.cluster import plugins
from tests.cluster.conftest import strata_command, subprocess_env, wait_for, worker_pids

pytestmark = pytest.mark.slow

SPEC = "tests.cluster.plugins:PLUGINS"


def _config_args(config: dict[str, object]) -> list[str]:
    return [a for k, v in config.items() for a in ("-c", f"{k}={v}")]


def _expected(target: str, config: dict[str, object]) -> np.ndarray:
    """``target`` computed on threads in this process, without storage."""
    with dask.config.set(scheduler="threads"):
        return Context(register=plugins.PLUGINS, config=config).get_array("run_1", target)


def test_make_with_scheduler_file_runs_on_the_workers(cluster, tmp_path):
    procs, client = cluster
    store, gate = tmp_path / "store", tmp_path / "gate"
    gate.mkdir()
    config = {"n_partitions": 6, "rows": 2000, "width": 8}
    proc = subprocess.run(
        [
            *strata_command(),
            "make",
            "run_1",
            "scaled",
            "-p",
            SPEC,
            "-s",
            str(store),
            "--scheduler-file",
            str(procs.scheduler_file),
            *_config_args({**config, "gate_dir": gate}),
        ],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"Dask cluster {procs.address}: 2 worker(s), 4 thread(s)" in out
    link = _dashboard_link(client)
    assert (f"dashboard: {link}" if link else "dashboard: none") in out
    # progress of the remote units: 6 Blocks + 6 Scaled partitions, 2 commits
    assert "making scaled" in out
    assert "14/14" in out
    # every partition was computed in a worker process, none in the client
    computed = plugins.marks(gate, "computed")
    assert sorted(i for i, _ in computed) == list(range(6))
    assert {pid for _, pid in computed} <= set(worker_pids(client).values())
    fe = DirectoryFrontend(str(store))
    for target in ("blocks", "scaled"):
        key = Context(register=plugins.PLUGINS, config=config).key_for("run_1", target)
        np.testing.assert_array_equal(fe.loader(key).to_numpy(), _expected(target, config))


def test_make_on_the_cluster_of_dask_scheduler_address(cluster, tmp_path):
    """DASK_SCHEDULER_ADDRESS and STRATA_STORAGE are all the configuration needed."""
    procs, client = cluster
    store = tmp_path / "store"
    config = {"n_partitions": 3, "rows": 100}
    env = {"DASK_SCHEDULER_ADDRESS": procs.address, "STRATA_STORAGE": str(store)}
    with get_task_stream(client) as ts:
        result = CliRunner().invoke(
            main, ["make", "run_1", "blocks", "-p", SPEC, *_config_args(config)], env=env
        )
    assert result.exit_code == 0, result.output
    assert f"Dask cluster {procs.address}" in result.output
    assert "made run_1-blocks-" in result.output
    ran = {t["key"].split("-")[0]: t["worker"] for t in ts.data if isinstance(t["key"], str)}
    assert {"compute", "stage", "merge", "commit"} <= set(ran)
    assert set(ran.values()) <= set(worker_pids(client))
    key = Context(register=plugins.PLUGINS, config=config).key_for("run_1", "blocks")
    got = DirectoryFrontend(str(store)).loader(key).to_numpy()
    np.testing.assert_array_equal(got, _expected("blocks", config))
    # --scheduler on the command line, too; the data is there now: nothing to do
    result = CliRunner().invoke(
        main,
        [
            *("make", "run_1", "blocks", "-p", SPEC, "-s", str(store)),
            *("--scheduler", procs.address, *_config_args(config)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "is already stored; nothing to do" in result.output


def test_scheduler_and_scheduler_file_on_the_command_line_conflict(cluster, tmp_path):
    procs, _ = cluster
    args = ["make", "run_1", "blocks", "-p", SPEC, "-s", str(tmp_path)]
    result = CliRunner().invoke(
        main, [*args, "--scheduler", procs.address, "--scheduler-file", str(procs.scheduler_file)]
    )
    assert result.exit_code == 2
    assert "not both" in result.output
    # from the environment, the address gives way to the file
    result = CliRunner().invoke(
        main,
        [*args, "--scheduler-file", str(procs.scheduler_file), "-c", "n_partitions=1"],
        env={"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:9"},
    )
    assert result.exit_code == 0, result.output
    assert f"Dask cluster {procs.address}" in result.output


def test_a_scheduler_that_is_not_there_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            *("make", "run_1", "blocks", "-p", SPEC, "-s", str(tmp_path)),
            *("--scheduler-file", str(tmp_path / "missing.json")),
        ],
    )
    assert result.exit_code == 2
    assert re.search(r"--scheduler-file.*missing\.json.*does not exist", result.output), (
        result.output
    )


def _clear_transfer_log(dask_worker) -> None:
    dask_worker.transfer_outgoing_log.clear()


def _transfer_log(dask_worker) -> list[dict]:
    return [{"who": e["who"], "keys": dict(e["keys"])} for e in dask_worker.transfer_outgoing_log]


def _sent_to_non_workers(client) -> dict[str, int]:
    """``{key: bytes}`` the workers sent to anything but another worker (the client, or the
    scheduler gathering for it), from their logs of outgoing transfers. Worker-to-worker
    transfers are allowed: partitions may move between workers."""
    workers = set(worker_pids(client))
    out: dict[str, int] = {}
    for log in client.run(_transfer_log).values():
        for entry in log:
            if entry["who"] not in workers:
                out.update(entry["keys"])
    return out


def test_make_sends_no_partition_data_to_the_client(cluster, tmp_path):
    """The workers' logs of outgoing transfers show what left them for anything but another
    worker: only the committed manifests, a few hundred bytes, of a 40 MB save."""
    _, client = cluster
    fe = DirectoryFrontend(str(tmp_path / "store"))
    config = {"n_partitions": 8, "rows": 9000, "width": 128}  # 8 x 4.8 MB, twice
    ctx = Context(storage=[fe], register=plugins.PLUGINS, config=config, client=client)
    client.run(_clear_transfer_log)
    seen: list[tuple[int, int]] = []
    ctx.make("run_1", "scaled", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (18, 18)
    saved = sum(fe.get_metadata(ctx.key_for("run_1", t)).nbytes for t in ("blocks", "scaled"))
    assert saved > 70e6
    to_client = _sent_to_non_workers(client)
    assert to_client, "the commits' manifests reach the client"
    assert {k.split("-")[0] for k in to_client} == {"commit"}
    assert sum(to_client.values()) < 100_000
    # and nothing stays behind on the cluster for this client (released futures reach the
    # scheduler asynchronously: a bounded wait for that, not for the computation)
    wait_for(lambda: client.who_has() == {}, "the client's futures to be released")
    assert os.getpid() not in worker_pids(client).values()


def test_make_of_a_target_that_is_not_saved_returns_only_row_counts(cluster, tmp_path):
    """A target that is computed but not saved (read-only storage) comes back as counts."""
    _, client = cluster
    fe = DirectoryFrontend(str(tmp_path / "ro"), readonly=True)
    ctx = Context(
        storage=[fe], register=plugins.PLUGINS, config={"rows": 5000, "width": 64}, client=client
    )
    client.run(_clear_transfer_log)
    ctx.make("run_1", "scaled")
    sent = _sent_to_non_workers(client)
    assert {k.split("-")[0] for k in sent} == {"rows"}
    assert sum(sent.values()) < 10_000
