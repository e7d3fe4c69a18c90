"""Faults on a real cluster of separate processes: nothing is lost, nothing half-made shows.

Each test synchronises on real progress through the gate of ``tests.cluster.plugins.Blocks``:
the computation of one partition leaves a mark (naming its process) and waits for the test to
release it, so the fault strikes while a save is under way.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from click.testing import CliRunner
from distributed import get_task_stream

from strata.pipeline import Context
from strata.pipeline.cli import main
from strata.storage import DirectoryFrontend
from tests.cluster import plugins
from tests.cluster.conftest import (
    DEADLINE,
    cluster_idle,
    strata_command,
    subprocess_env,
    wait_for,
    worker_pids,
)
from tests.cluster.helpers import assert_same_stored_data, attempt_dirs

pytestmark = pytest.mark.slow

SPEC = "tests.cluster.plugins:PLUGINS"


class Background:
    """``fn()`` in a thread; :meth:`result` joins it and returns or raises its outcome."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn()
            except BaseException as e:
                self._error = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self, timeout: float = 2 * DEADLINE) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "still running"
        if self._error is not None:
            raise self._error
        return self._value


def _release(gate: Path) -> None:
    (gate / "release").touch()


def _reference(tmp_path: Path, config: dict[str, Any], targets: tuple[str, ...], **fe_kw: Any):
    """A clean run of ``targets`` on threads, in a store of its own."""
    fe = DirectoryFrontend(str(tmp_path / "reference"), **fe_kw)
    with dask.config.set(scheduler="threads"):
        Context(storage=[fe], register=plugins.PLUGINS, config=config).make("run_1", targets)
    return fe


def test_worker_killed_with_sigkill_mid_save(make_cluster, tmp_path):
    """The job finishes on the surviving worker; the tasks whose results died with the killed
    one run again (rewriting their segments of the same attempt); the stored data is
    bit-identical to a clean run and nothing is left over."""
    _, client = make_cluster(n_workers=2, nthreads=2, nanny=False)
    config = {"n_partitions": 12, "rows": 2000, "width": 32}  # 0.3 MB partitions
    fe_kw = {"chunk_target_mb": 0.25}  # each partition is written by its own stage task
    ref = _reference(tmp_path, config, ("blocks", "scaled"), **fe_kw)
    gate = tmp_path / "gate"
    gate.mkdir()
    fe = DirectoryFrontend(str(tmp_path / "store"), **fe_kw)
    ctx = Context(
        storage=[fe],
        register=plugins.PLUGINS,
        config={**config, "gate_dir": str(gate), "gate_partition": 6},
        client=client,
    )
    pids = worker_pids(client)
    assert len(pids) == 2
    with get_task_stream(client) as ts:
        job = Background(lambda: ctx.make("run_1", "scaled"))
        [(_, victim_pid)] = wait_for(lambda: plugins.marks(gate, "gate"), "partition 6 to start")
        [victim] = [addr for addr, pid in pids.items() if pid == victim_pid]

        def written_on_victim() -> list[str]:
            held = client.has_what().get(victim, ())
            return [k for k in held if isinstance(k, str) and k.startswith("stage-")]

        # the victim holds results of stage tasks: segments it wrote, needed by the commits
        lost = wait_for(written_on_victim, "the victim to have written segments")
        os.kill(victim_pid, signal.SIGKILL)
        wait_for(lambda: len(client.nthreads()) == 1, "the scheduler to drop the killed worker")
        _release(gate)
        job.result()
    [survivor] = [addr for addr in pids if addr != victim]
    # the stage tasks whose results were lost ran again, on the survivor
    rerun = {t["key"] for t in ts.data if t["worker"] == survivor}
    assert set(lost) <= rerun
    # the held partition, killed half-way, was computed again by the survivor
    computed = plugins.marks(gate, "computed")
    assert {(6, victim_pid), (6, pids[survivor])} <= set(computed)
    for target in ("blocks", "scaled"):
        key = ctx.key_for("run_1", target)
        assert_same_stored_data(fe, ref, key)
        assert len(attempt_dirs(Path(fe.url), key)) == 1
    assert fe.gc(min_age_seconds=0, dry_run=True) == []


def test_client_killed_with_sigkill_mid_save(cluster, tmp_path):
    """`strata make` killed while the workers write: nothing is visible under the key, `strata
    gc --min-age 0` removes the leftovers, and a rerun stores the data of a clean run."""
    procs, client = cluster
    # 17.5 MB partitions: over half the default chunk target (32 MiB), so each is written as
    # its own segment as soon as it is computed, while partition 3 is held
    config = {"n_partitions": 6, "rows": 64_000, "width": 64}
    ref = _reference(tmp_path, config, ("blocks",))
    gate = tmp_path / "gate"
    gate.mkdir()
    store = tmp_path / "store"
    command = [
        *strata_command(),
        "make",
        "run_1",
        "blocks",
        "-p",
        SPEC,
        "-s",
        str(store),
        "--scheduler-file",
        str(procs.scheduler_file),
    ] + [a for k, v in config.items() for a in ("-c", f"{k}={v}")]
    cli = subprocess.Popen(
        [*command, "-c", f"gate_dir={gate}", "-c", "gate_partition=3"],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: plugins.marks(gate, "gate"), "partition 3 to start")
        wait_for(
            lambda: list(store.glob("data/run_1/blocks-*/a*/s*/data/c/*")),
            "a segment to be written",
        )
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait(DEADLINE)
    _release(gate)
    # tasks already running when the client died finish (and write) on their own: wait
    # until the cluster is idle before looking at what is left
    wait_for(lambda: cluster_idle(client), "the cluster to be idle")
    key = Context(register=plugins.PLUGINS, config=config).key_for("run_1", "blocks")
    fe = DirectoryFrontend(str(store))
    assert not fe.is_stored(key)
    assert fe.list("run_1") == []
    assert not list(store.glob("data/run_1/*/zarr.json"))
    [leftover] = attempt_dirs(store, key)
    result = CliRunner().invoke(main, ["gc", "-s", str(store), "--min-age", "0"])
    assert result.exit_code == 0, result.output
    assert "removed 1 leftover attempt(s)" in result.output
    assert not leftover.exists()
    assert attempt_dirs(store, key) == []
    # a rerun, on the same cluster
    rerun = subprocess.run(
        command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=240
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"made {key}" in rerun.stdout
    assert_same_stored_data(fe, ref, key)


def test_two_clients_make_the_same_target_at_once(cluster, tmp_path, caplog):
    """Both save, one commits, the other loses the race; both return the same, right data
    (the loser's own outputs: a lost commit race is no error on a cluster)."""
    caplog.set_level(logging.INFO, logger="strata.pipeline")
    procs, client = cluster
    config = {"n_partitions": 5, "rows": 3000, "width": 16}
    gate = tmp_path / "gate"
    gate.mkdir()
    store = str(tmp_path / "store")
    with dask.config.set(scheduler="threads"):
        expected = Context(register=plugins.PLUGINS, config=config).get_array("run_1", "scaled")
    clients = [procs.client(), procs.client()]
    try:
        contexts = [
            Context(
                storage=[DirectoryFrontend(store, chunk_target_mb=0.1)],
                register=plugins.PLUGINS,
                config={**config, "gate_dir": str(gate), "gate_partition": 2},
                client=c,
            )
            for c in clients
        ]
        jobs = [Background(lambda ctx=ctx: ctx.get_array("run_1", "scaled")) for ctx in contexts]
        # both graphs, with their savers, are under way before either can commit
        wait_for(lambda: len(plugins.marks(gate, "gate")) == 2, "both clients' partition 2")
        _release(gate)
        arrays = [job.result() for job in jobs]
    finally:
        for c in clients:
            c.close()
    assert arrays[0].tobytes() == arrays[1].tobytes()
    np.testing.assert_array_equal(arrays[0], expected)
    fe = DirectoryFrontend(store)
    for target in ("blocks", "scaled"):
        key = contexts[0].key_for("run_1", target)
        assert fe.is_stored(key)
        assert len(attempt_dirs(Path(store), key)) == 1  # the loser removed its attempt
        np.testing.assert_array_equal(
            fe.loader(key).to_numpy(),
            Context(register=plugins.PLUGINS, config=config).get_array("run_1", target),
        )
    assert fe.gc(min_age_seconds=0, dry_run=True) == []
    # both graphs had written segments before either committed (the gate): one attempt per
    # key is left, so the loser's commit used the winner's manifest and removed its own attempt
    assert not [r for r in caplog.records if r.name == "strata.pipeline.context"]  # no redo
    wait_for(lambda: cluster_idle(client), "the cluster to be idle")


def test_two_threaded_makes_of_the_same_target_at_once(tmp_path, caplog):
    """Without a cluster: the loser's commit finds the winner's and uses it (one policy for
    threads and clusters), and both return the same data."""
    caplog.set_level(logging.INFO, logger="strata.storage.commit")
    config = {"n_partitions": 4, "rows": 500, "width": 4}
    gate = tmp_path / "gate"
    gate.mkdir()
    store = str(tmp_path / "store")
    contexts = [
        Context(
            storage=[DirectoryFrontend(store)],
            register=plugins.PLUGINS,
            config={**config, "gate_dir": str(gate), "gate_partition": 1},
        )
        for _ in range(2)
    ]
    with dask.config.set(scheduler=None):
        jobs = [Background(lambda ctx=ctx: ctx.get_array("run_1", "scaled")) for ctx in contexts]
        wait_for(lambda: len(plugins.marks(gate, "gate")) == 2, "both makes' partition 1")
        _release(gate)
        arrays = [job.result() for job in jobs]
    assert arrays[0].tobytes() == arrays[1].tobytes()
    np.testing.assert_array_equal(
        arrays[0], Context(register=plugins.PLUGINS, config=config).get_array("run_1", "scaled")
    )
    for target in ("blocks", "scaled"):
        assert len(attempt_dirs(Path(store), contexts[0].key_for("run_1", target))) == 1
    assert any("committed by another saver" in r.message for r in caplog.records)


def test_rerun_of_a_committed_save_graph_is_idempotent(tmp_path):
    """What a worker lost after the commit is rerun: every segment of the same attempt is
    rewritten identically and the commit returns the manifest it wrote before."""
    config = {"n_partitions": 5, "rows": 1000, "width": 8}
    fe = DirectoryFrontend(str(tmp_path / "store"), chunk_target_mb=0.05)
    key = Context(register=plugins.PLUGINS, config=config).key_for("run_1", "blocks")
    dtype = plugins.block_records(0, 1, 0, 8, 0).dtype
    intervals = [(i * 1_000_000_000, (i + 1) * 1_000_000_000) for i in range(5)]
    block = dask.delayed(plugins.block_records, pure=True)
    parts = [block(s, e, 1000, 8, i) for i, (s, e) in enumerate(intervals)]
    sink = fe.saver(key, dtype).save(parts, intervals)
    with dask.config.set(scheduler="threads"):
        (first,) = dask.compute(sink)
        files = _files_but_leases(Path(fe.url))
        (again,) = dask.compute(sink)
    assert again.attempt == first.attempt
    assert again.writing_ended == first.writing_ended  # the manifest written the first time
    assert _files_but_leases(Path(fe.url)) == files  # (a rerun renews the lease, nothing else)
    assert fe.gc(min_age_seconds=0, dry_run=True) == []


def _files_but_leases(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "strata.lease"}
