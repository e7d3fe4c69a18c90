"""Readers, writers and gc coexist: a reader opened before an overwrite reads the old data or
gets a named error; gc never takes a live save's attempt, and a save whose attempt was taken
commits nothing; gc removes what is old, keeps what is young, tolerates a second gc beside it,
and lists without removing on a dry run; an in-place copy keeps every value.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
import uuid

import numpy as np
import pytest

from strata.storage import (
    DataCorrupted,
    DataKey,
    DataNotAvailable,
    DirectoryFrontend,
    copy_data,
    layout,
)
from strata.storage.commit import AttemptMissing
from tests.helpers import STRAX_DTYPE, lineage, make_run
from tests.objects.models import Measurement
from tests.objects.workers import make_ancillary
from tests.storage.test_hostile import bk_of, local_tree, save

CHUNK_MB = 0.05
KEY = DataKey("run_1", "records", lineage())
OLD = 7200.0
"""Seconds: older than any min-age used here."""


@pytest.fixture
def root(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def fe(root):
    return DirectoryFrontend(str(root), chunk_target_mb=CHUNK_MB)


def _key_dir(root, key: DataKey = KEY):
    return root / "data" / bk_of(key)


def _stamp(seconds_ago: float) -> str:
    t = _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=seconds_ago)
    return t.strftime("%Y%m%dT%H%M%S%f")


def old_attempt_name(seconds_ago: float = OLD) -> str:
    """An attempt name (``a<UTC time>Z_<12 hex>``) that says it started ``seconds_ago``."""
    return f"a{_stamp(seconds_ago)}Z_{uuid.uuid4().hex[:12]}"


def old_object_attempt_name(seconds_ago: float = OLD) -> str:
    """A stored object's ancillary directory name that says it was made ``seconds_ago``."""
    return f"o{_stamp(seconds_ago)}Z_{uuid.uuid4().hex[:12]}"


def backdate(saver, seconds_ago: float = OLD) -> None:
    """Make a fresh saver's attempt look as if it started ``seconds_ago`` (a save that has run
    that long), before it writes anything: the attempt name is the only clock gc has for it
    besides the lease.
    """
    name = old_attempt_name(seconds_ago)
    saver.attempt = name
    saver.prefix = saver.backend.layout.attempt_prefix(saver.backend_key, name)


def age(path, seconds_ago: float = OLD) -> None:
    """Set the modification time of ``path`` ``seconds_ago`` into the past."""
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def age_lease(attempt_dir, seconds_ago: float = OLD) -> None:
    """Make the lease of an attempt look last renewed ``seconds_ago`` (content and mtime)."""
    lease = attempt_dir / "strata.lease"
    doc = json.loads(lease.read_bytes())
    t = _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=seconds_ago)
    doc["renewed"] = t.isoformat(timespec="microseconds")
    lease.write_text(json.dumps(doc))
    age(lease, seconds_ago)


def temp_name(name: str) -> str:
    """``<name>.<32 hex>.tmp``: one of strata's temporary files."""
    return f"{name}.{uuid.uuid4().hex}.tmp"


def files_below(d) -> set[str]:
    """Relative paths of every file and directory below ``d``."""
    return {str(p.relative_to(d)) for p in d.rglob("*")}


# -- 3. a reader opened before an overwrite ---------------------------------------------------
def test_reader_opened_before_an_overwrite_reads_the_old_data(fe, root):
    old = save(fe, sizes=(600, 400), seed=1)
    old_attempt = fe.get_metadata(KEY).attempt
    lazy, lazy_dask, lazy_fields = fe.loader(KEY), fe.loader(KEY), fe.loader(KEY, fields=["area"])
    new = save(fe, sizes=(300, 900), seed=2, overwrite=True)
    assert fe.get_metadata(KEY).attempt != old_attempt
    assert lazy.to_numpy().tobytes() == old.tobytes()
    assert lazy_dask.array.compute().tobytes() == old.tobytes()
    assert lazy_fields.fields["area"].compute().tobytes() == old["area"].tobytes()
    assert fe.loader(KEY).to_numpy().tobytes() == new.tobytes()

    removed = fe.gc(min_age_seconds=0)  # the default grace period keeps the old attempt
    assert not any(old_attempt in r for r in removed), removed
    assert (_key_dir(root) / old_attempt).is_dir()
    assert lazy.to_numpy().tobytes() == old.tobytes()

    removed = fe.gc(min_age_seconds=0, grace_seconds=0)
    assert f"data/{bk_of(KEY)}/{old_attempt}" in removed
    assert not (_key_dir(root) / old_attempt).exists()
    with pytest.raises(DataCorrupted) as e:
        lazy.to_numpy()
    assert str(KEY) in str(e.value)
    with pytest.raises(DataCorrupted):
        lazy_dask.array.compute()
    with pytest.raises(DataCorrupted):
        lazy_fields.fields["area"].compute()
    assert fe.loader(KEY).to_numpy().tobytes() == new.tobytes()


def test_gc_with_grace_keeps_what_a_reader_may_still_read(fe):
    old = save(fe, seed=1)
    lazy = fe.loader(KEY)
    save(fe, seed=2, overwrite=True)
    save(fe, seed=3, overwrite=True)  # two superseded attempts now
    fe.gc(min_age_seconds=0, grace_seconds=OLD)
    assert lazy.to_numpy().tobytes() == old.tobytes()


# -- 4. gc never races a live save ------------------------------------------------------------
def test_gc_keeps_a_long_save_whose_lease_is_fresh(fe, root):
    parts, intervals = make_run([600, 600, 600], seed=3)
    saver = fe.saver(KEY, STRAX_DTYPE)
    backdate(saver)  # the save started two hours ago ...
    saver.save_partition(parts[0], *intervals[0])  # ... and writes (renewing its lease) now
    attempt_dir = _key_dir(root) / saver.attempt
    assert attempt_dir.is_dir()
    removed = fe.gc(min_age_seconds=600, grace_seconds=0)
    assert not any(saver.attempt in r for r in removed), removed
    assert attempt_dir.is_dir()
    saver.save_partition(parts[1], *intervals[1])
    saver.touch_lease()
    assert fe.gc(min_age_seconds=600, grace_seconds=0) == []
    saver.save_partition(parts[2], *intervals[2])
    saver.close()
    assert fe.loader(KEY).to_numpy().tobytes() == np.concatenate(parts).tobytes()


def test_gc_removes_a_dead_save_whose_lease_is_stale(fe, root):
    parts, intervals = make_run([600], seed=3)
    saver = fe.saver(KEY, STRAX_DTYPE)
    backdate(saver)
    saver.save_partition(parts[0], *intervals[0])
    attempt_dir = _key_dir(root) / saver.attempt
    age_lease(attempt_dir)  # its writer died two hours ago
    removed = fe.gc(min_age_seconds=600, grace_seconds=0)
    assert f"data/{bk_of(KEY)}/{saver.attempt}" in removed
    assert not attempt_dir.exists()


def test_commit_after_the_attempt_was_removed_raises_attempt_missing(fe, root):
    parts, intervals = make_run([600, 600], seed=4)
    saver = fe.saver(KEY, STRAX_DTYPE)
    saver.save_partition(parts[0], *intervals[0])
    removed = fe.gc(min_age_seconds=0, grace_seconds=0)  # by force: every lease is older than 0 s
    assert any(saver.attempt in r for r in removed), removed
    saver.save_partition(parts[1], *intervals[1])
    with pytest.raises(AttemptMissing, match=str(KEY)):
        saver.close()
    assert not fe.is_stored(KEY)
    with pytest.raises(DataNotAvailable):
        fe.loader(KEY)
    assert not (_key_dir(root) / "zarr.json").exists()
    assert fe.list() == []


def test_gc_removes_old_temp_files_and_keeps_young_ones(fe, root):
    data = save(fe)
    fe.write_run_metadata("run_1", {"gain": 2})
    obj = fe.backend.store_object(Measurement(run_id="r1", name="m", value=1))
    dirs = {"key": _key_dir(root), "runs": root / "runs", "objects": root / "objects"}
    names = {
        "key": "zarr.json",
        "runs": "run_1.json",
        "objects": f"{obj}.json",
    }
    old, young = [], []
    for where, d in dirs.items():
        o, y = d / temp_name(names[where]), d / temp_name(names[where])
        o.write_bytes(b"half written, long ago")
        y.write_bytes(b"being written right now")
        age(o)
        old.append(o)
        young.append(y)
    removed = set(fe.gc(min_age_seconds=600))
    for o in old:
        assert not o.exists(), o
        assert str(o.relative_to(root)) in removed
    for y in young:
        assert y.exists(), y
        assert str(y.relative_to(root)) not in removed
    assert fe.loader(KEY).to_numpy().tobytes() == data.tobytes()
    assert fe.run_metadata("run_1") == {"gain": 2}
    assert fe.backend.retrieve_object(obj)[0].name == "m"


def test_gc_removes_orphan_ancillary_directories(fe, root, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    key = fe.backend.store_object(
        Measurement(run_id="r1", name="m", value=1), make_ancillary(str(scratch), "live")
    )
    obj_dir = root / "objects" / key
    (live,) = os.listdir(obj_dir)
    old_orphan = obj_dir / old_object_attempt_name()
    young_orphan = obj_dir / layout.new_object_attempt()
    for d in (old_orphan, young_orphan):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "left.bin").write_bytes(b"left by a crash")
    removed = fe.gc(min_age_seconds=600)
    assert f"objects/{key}/{old_orphan.name}" in removed
    assert not old_orphan.exists()
    assert young_orphan.is_dir()
    assert (obj_dir / live).is_dir()
    _, anc = fe.backend.retrieve_object(key)
    assert open(os.path.join(anc, "payload.bin"), "rb").read().startswith(b"live")


def _leftovers(fe, root, n_keys: int) -> set[str]:
    """Make what killed saves leave (an attempt with two segments, an old temporary file) for
    ``n_keys`` keys; return their paths relative to the root.
    """
    parts, intervals = make_run([200, 200], seed=9)
    out = set()
    # small chunks: each 92 kB partition over the segment target, written as it comes
    fe = DirectoryFrontend(fe.url, chunk_target_mb=0.01)
    for i in range(n_keys):
        key = DataKey("run_1", f"t{i}", lineage(f"t{i}"))
        saver = fe.saver(key, STRAX_DTYPE)
        for p, (s, e) in zip(parts, intervals, strict=True):
            saver.save_partition(p, s, e)  # never closed: the writer "died"
        out.add(f"data/{bk_of(key)}/{saver.attempt}")
        tmp = _key_dir(root, key) / temp_name("zarr.json")
        tmp.write_bytes(b"{")
        age(tmp)
        out.add(f"data/{bk_of(key)}/{tmp.name}")
    return out


def test_two_gcs_at_once_remove_everything_between_them(root):
    fe = DirectoryFrontend(str(root), chunk_target_mb=0.25)
    kept = save(fe)
    leftovers = _leftovers(fe, root, 12)
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def collect() -> None:
        mine = DirectoryFrontend(str(root), chunk_target_mb=0.25)
        try:
            barrier.wait()
            results.append(mine.gc(min_age_seconds=0, grace_seconds=0))
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=collect) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 2
    assert set(results[0]) | set(results[1]) == leftovers
    assert [p for p in leftovers if (root / p).exists()] == []
    assert fe.loader(KEY).to_numpy().tobytes() == kept.tobytes()


def test_gc_dry_run_lists_and_removes_nothing(fe, root, tmp_path):
    save(fe, seed=1)
    superseded = fe.get_metadata(KEY).attempt
    save(fe, seed=2, overwrite=True)
    expected = {f"data/{bk_of(KEY)}/{superseded}"} | _leftovers(fe, root, 2)
    fe.write_run_metadata("run_1", {"gain": 2})
    runs_tmp = root / "runs" / temp_name("run_1.json")
    runs_tmp.write_bytes(b"{")
    age(runs_tmp)
    expected.add(f"runs/{runs_tmp.name}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    key = fe.backend.store_object(
        Measurement(run_id="r1", name="m", value=1), make_ancillary(str(scratch), "x")
    )
    orphan = root / "objects" / key / old_object_attempt_name()
    orphan.mkdir()
    (orphan / "f").write_bytes(b"orphan")
    expected.add(f"objects/{key}/{orphan.name}")

    before = local_tree(root), files_below(root)
    listed = fe.gc(min_age_seconds=0, grace_seconds=0, dry_run=True)
    assert (local_tree(root), files_below(root)) == before
    assert set(listed) == expected
    removed = fe.gc(min_age_seconds=0, grace_seconds=0)
    assert set(removed) == expected
    assert fe.gc(min_age_seconds=0, grace_seconds=0, dry_run=True) == []


# -- 5. copying in place ----------------------------------------------------------------------
def test_copy_in_place_rechunks_and_keeps_every_value(fe):
    data = save(fe, sizes=(600, 600, 50))
    before = fe.get_metadata(KEY)
    written = copy_data(fe, fe, KEY, rechunk_mb=0.5, overwrite=True)
    after = fe.get_metadata(KEY)
    assert after.attempt == written.attempt != before.attempt
    assert after.segments[0].chunk_rows != before.segments[0].chunk_rows
    assert [(p.start, p.end, p.rows) for p in after.partitions] == [
        (p.start, p.end, p.rows) for p in before.partitions
    ]
    assert fe.loader(KEY).to_numpy().tobytes() == data.tobytes()
    fe.gc(min_age_seconds=0, grace_seconds=0)
    assert fe.loader(KEY).to_numpy().tobytes() == data.tobytes()
    area = fe.loader(KEY, fields=["area"]).fields["area"].compute()
    assert area.tobytes() == data["area"].tobytes()


def test_the_heartbeat_renews_a_computing_save_s_lease(fe, root):
    """While the pipeline waits for a slow computation, its heartbeat keeps the lease fresh."""
    from strata.storage.commit import lease_heartbeat

    parts, intervals = make_run([600], seed=5)
    saver = fe.saver(KEY, STRAX_DTYPE)
    backdate(saver)
    saver.save_partition(parts[0], *intervals[0])
    attempt_dir = _key_dir(root) / saver.attempt
    age_lease(attempt_dir)  # as if the save had been computing for two hours since
    assert f"data/{bk_of(KEY)}/{saver.attempt}" in fe.gc(min_age_seconds=600, dry_run=True)
    lease = attempt_dir / "strata.lease"
    stale = lease.read_bytes()
    with lease_heartbeat([saver], interval=0.01):
        deadline = time.monotonic() + 30
        while lease.read_bytes() == stale and time.monotonic() < deadline:  # bounded poll
            time.sleep(0.01)
    assert lease.read_bytes() != stale
    assert fe.gc(min_age_seconds=600, grace_seconds=0) == []
    saver.close()
    assert fe.loader(KEY).to_numpy().tobytes() == parts[0].tobytes()
