"""Hostile input on local disk: edited manifests and documents (with recomputed checksums),
deleted and swapped chunks, names that try to leave the store, symlinks, bad bounds and names,
documents nested too deep, a full disk.

Each case ends in exact data or a named strata error, never in fill values, and nothing outside
the store root is ever read, written or removed: a ``victim`` directory beside the store must
survive every case byte for byte.

The helpers here (:func:`edit_manifest`, :func:`edit_document`, the manifest editors and
:func:`tree`) are also used by ``tests/storage/test_integrity_gc.py`` and
``tests/remote/test_hostile_remote.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from strata.pipeline.cli import main
from strata.storage import (
    DataCorrupted,
    DataKey,
    DataNotAvailable,
    DirectoryFrontend,
    InvalidKey,
    StorageError,
    layout,
)
from strata.storage.objects.base import _checksum as document_checksum
from tests.helpers import (
    PARTITION_NS,
    STRAX_DTYPE,
    edit_commit,
    lineage,
    make_run,
    make_shard,
    shard_parts,
)
from tests.objects.models import Measurement, MeasurementQuery, SimulationResult
from tests.objects.workers import make_ancillary
from tests.stores import FsOutOfBand

CHUNK_MB = 0.05
"""Small chunks: a 600-row partition has 6 chunks of ``data`` and one of every other field."""
KEY = DataKey("run_1", "records", lineage())
OTHER = DataKey("run_1", "other", lineage("other"))
SIZES = (600, 600)
DEEP = b"[" * 100_000 + b"]" * 100_000
"""Valid JSON, nested 100,000 levels deep."""


# -- helpers (out of band: plain files, the layout spelled out here) -------------------------
def bk_of(key: DataKey) -> str:
    """The backend key of ``key``: ``<run_id>/<data_type>-<hash>``."""
    return f"{key.run_id}/{key.data_type}-{key.lineage_hash}"


def save(fe, key: DataKey = KEY, sizes=SIZES, seed: int = 1, **kw: Any) -> np.ndarray:
    """Save a run of ``sizes`` under ``key``; return the records saved."""
    parts, intervals = make_run(list(sizes), seed=seed)
    fe.saver(key, STRAX_DTYPE, **kw).save(parts, intervals).compute()
    return np.concatenate(parts)


def tree(fs, root: str) -> dict[str, bytes]:
    """Every file below ``root`` of ``fs`` with its bytes."""
    invalidate = getattr(fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate()
    try:
        paths = fs.find(root)
    except FileNotFoundError:
        return {}
    return {str(p): bytes(fs.cat_file(p)) for p in paths}


def edit_manifest(oob: FsOutOfBand, bk: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the stored manifest of ``bk`` and store it with a recomputed checksum,
    compact, as strata writes it: a forgery only the structure checks can catch.
    """
    oob.put_manifest(bk, edit_commit(oob.manifest(bk), edit))


def edit_document(fs, path: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """As :func:`edit_manifest`, for a stored object's document (or index entry) at ``path``."""
    d = json.loads(bytes(fs.cat_file(path)))
    d.pop("checksum")
    edit(d)
    d["checksum"] = document_checksum(d)
    fs.pipe_file(path, json.dumps(d, sort_keys=True, separators=(",", ":")).encode())


def set_attempt(name: str) -> Callable[[dict[str, Any]], None]:
    """A manifest edit naming another attempt."""

    def edit(d: dict[str, Any]) -> None:
        d["attempt"] = name

    return edit


def rename_segment(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    """A manifest edit renaming segment ``old`` (and the partitions in it) to ``new``."""

    def edit(d: dict[str, Any]) -> None:
        for s in d["segments"]:
            if s["name"] == old:
                s["name"] = new
        segs = d["partitions"]["segment"]
        d["partitions"]["segment"] = [new if g == old else g for g in segs]

    return edit


def rename_field(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    """A manifest edit renaming field ``old`` to ``new`` everywhere the manifest names it."""

    def edit(d: dict[str, Any]) -> None:
        for f in d["dtype"]:
            if f["name"] == old:
                f["name"] = new
        d["arrays"][new] = d["arrays"].pop(old)
        for s in d["segments"]:
            s["chunk_rows"][new] = s["chunk_rows"].pop(old)
            if old in (s.get("chunks") or {}):
                s["chunks"][new] = s["chunks"].pop(old)
            meta = s.get("metadata") or {}
            if f"{old}/zarr.json" in meta:
                meta[f"{new}/zarr.json"] = meta.pop(f"{old}/zarr.json")

    return edit


def change_rows(partition: int, delta: int, segment_too: bool) -> Callable[[dict[str, Any]], None]:
    """A manifest edit that lies about the rows of one partition (and totals), optionally
    also about the rows of its segment.
    """

    def edit(d: dict[str, Any]) -> None:
        itemsize = STRAX_DTYPE.itemsize
        cols = d["partitions"]
        cols["rows"][partition] += delta
        cols["nbytes"][partition] += delta * itemsize
        d["rows"] += delta
        d["nbytes"] += delta * itemsize
        if segment_too:
            for s in d["segments"]:
                if s["name"] == cols["segment"][partition]:
                    s["rows"] += delta

    return edit


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def arena(tmp_path):
    """``<tmp>/arena``: holds the store and its victim, nothing else."""
    d = tmp_path / "arena"
    d.mkdir()
    return d


@pytest.fixture
def root(arena):
    return arena / "store"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store holding ``KEY`` and ``OTHER`` (``SIZES``, seeds 1 and 2), saved once per module;
    :func:`fe` copies it (saving is what takes time here).
    """
    root = tmp_path_factory.mktemp("template") / "store"
    fe = DirectoryFrontend(str(root), chunk_target_mb=CHUNK_MB)
    save(fe, KEY, seed=1)
    save(fe, OTHER, seed=2)
    return root


@pytest.fixture
def empty(root):
    """A frontend on an empty store at ``root``."""
    return DirectoryFrontend(str(root), chunk_target_mb=CHUNK_MB)


@pytest.fixture
def fe(root, template):
    """A frontend on a copy of :func:`template` at ``root``."""
    shutil.copytree(template, root, symlinks=True)
    return DirectoryFrontend(str(root), chunk_target_mb=CHUNK_MB)


@pytest.fixture
def oob(root):
    return FsOutOfBand(str(root), {})


class Victim:
    """A directory beside the store root, with files that must survive every attack."""

    def __init__(self, arena) -> None:
        self.arena = arena
        self.path = arena / "victim"
        (self.path / "sub").mkdir(parents=True)
        (self.path / "precious.txt").write_bytes(b"keep me")
        (self.path / "sub" / "zarr.json").write_bytes(b"{}")
        (self.path / "manifest.json").write_bytes(b"not yours")
        self.before = local_tree(self.path)

    def __call__(self) -> None:
        """Assert that nothing outside the store root was changed, removed or created."""
        assert local_tree(self.path) == self.before, "a file outside the store root changed"
        assert set(os.listdir(self.arena)) - {"store"} == {"victim"}, os.listdir(self.arena)


@pytest.fixture
def victim(arena, monkeypatch):
    """The :class:`Victim` beside the store; it is also ``$HOME``, so a ``~`` expanded anywhere
    lands there and never in the real home directory.
    """
    v = Victim(arena)
    monkeypatch.setenv("HOME", str(v.path))
    return v


def local_tree(d) -> dict[str, bytes]:
    """Every file below local directory ``d`` (relative path) with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def _key_dir(root, key: DataKey = KEY):
    return root / "data" / key.run_id / f"{key.data_type}-{key.lineage_hash}"


def _attempt_dir(fe, root, key: DataKey = KEY):
    return _key_dir(root, key) / fe.get_metadata(key).attempt


def _chunks(fe, root, segment: str, field: str, key: DataKey = KEY) -> list:
    """The chunk files of one array, in chunk order."""
    c = _attempt_dir(fe, root, key) / segment / field / "c"
    files = [p for p in c.rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: [int(x) for x in p.relative_to(c).parts])


# -- 1. names read from storage never leave the root -----------------------------------------
# the store is <arena>/store: from its key directory <root>/data/run_1/records-<hash>/ four ".."
# reach <arena>, the victim's parent; from an attempt directory five, from a segment one six
ATTEMPT_ATTACKS = {
    "traversal": "../../../../victim",
    "absolute": "<victim>",
    "home": "~",
    "home_sub": "~/sub",
    "url_encoded": "..%2F..%2F..%2F..%2Fvictim",
    "dot_encoded": "%2e%2e/%2e%2e/%2e%2e/%2e%2e/victim",
    "valid_prefix": "a20260101T000000000000Z_0123456789ab/../../../../../victim",
    "trailing_newline": "a20260101T000000000000Z_0123456789ab\n",
    "backslash": "..\\..\\..\\..\\victim",
    "nul": "a20260101T000000000000Z_0123456789ab\x00/../../../../../victim",
}


def _attack(name: str, victim) -> str:
    return name.replace("<victim>", str(victim.path))


@pytest.mark.parametrize("attack", list(ATTEMPT_ATTACKS), ids=list(ATTEMPT_ATTACKS))
def test_attempt_name_from_manifest_is_validated(fe, oob, root, victim, attack):
    edit_manifest(oob, bk_of(KEY), set_attempt(_attack(ATTEMPT_ATTACKS[attack], victim)))
    with pytest.raises(DataCorrupted, match="attempt"):
        fe.get_metadata(KEY)
    with pytest.raises(DataCorrupted):
        fe.loader(KEY).to_numpy()
    with pytest.raises(DataCorrupted):
        fe.loader(KEY, fields=["time"]).array.compute()
    with pytest.raises(DataCorrupted):
        fe.stored_bytes(KEY)
    with pytest.raises(DataCorrupted):
        fe.backend.stored_bytes(bk_of(KEY))
    assert [e.key for e in fe.list()] == [OTHER]  # the bad key alone is left out
    fe.gc(min_age_seconds=0)
    victim()
    with contextlib.suppress(DataCorrupted):  # the frontend finds the key first
        fe.remove(KEY)
    with contextlib.suppress(DataNotAvailable):  # the backend needs no manifest to remove
        fe.backend.remove(bk_of(KEY))
    assert not fe.is_stored(KEY)
    fe.gc(min_age_seconds=0)
    assert len(fe.loader(OTHER).to_numpy()) == sum(SIZES)
    victim()


@pytest.mark.parametrize("attack", ["traversal", "absolute", "home", "url_encoded", "nul"])
def test_overwriting_a_key_whose_manifest_names_a_hostile_attempt(fe, oob, victim, attack):
    edit_manifest(oob, bk_of(KEY), set_attempt(_attack(ATTEMPT_ATTACKS[attack], victim)))
    new = save(fe, sizes=(300, 700), seed=5, overwrite=True)
    assert fe.loader(KEY).to_numpy().tobytes() == new.tobytes()
    fe.gc(min_age_seconds=0)
    fe.remove(KEY)
    fe.gc(min_age_seconds=0)
    victim()


SEGMENT_ATTACKS = {
    "traversal": "../../../../../victim",
    "parent": "../x",
    "absolute": "<victim>",
    "url_encoded": "..%2F..%2F..%2F..%2F..%2Fvictim",
    "valid_prefix": "s000000/../../../../../../victim",
    "trailing_newline": "s000000\n",
}


@pytest.mark.parametrize("attack", list(SEGMENT_ATTACKS), ids=list(SEGMENT_ATTACKS))
def test_segment_name_from_manifest_is_validated(fe, oob, victim, attack):
    edit_manifest(
        oob, bk_of(KEY), rename_segment("s000000", _attack(SEGMENT_ATTACKS[attack], victim))
    )
    with pytest.raises(DataCorrupted, match="segment"):
        fe.get_metadata(KEY)
    with pytest.raises(DataCorrupted):
        fe.loader(KEY, time_range=(0, PARTITION_NS // 2)).to_numpy()
    fe.gc(min_age_seconds=0)
    with contextlib.suppress(DataCorrupted):
        fe.remove(KEY)
    with contextlib.suppress(DataNotAvailable):
        fe.backend.remove(bk_of(KEY))
    victim()


FIELD_ATTACKS = {
    "traversal": "../../../../../../victim",
    "parent": "../../x",
    "absolute": "<victim>",
    "zarr_json": "zarr.json",
    "chunks_dir": "c",
    "hidden": ".hidden",
    "trailing_newline": "area\n",
}


@pytest.mark.parametrize("attack", list(FIELD_ATTACKS), ids=list(FIELD_ATTACKS))
def test_field_name_from_manifest_is_validated(fe, oob, victim, attack):
    edit_manifest(oob, bk_of(KEY), rename_field("area", _attack(FIELD_ATTACKS[attack], victim)))
    with pytest.raises(DataCorrupted, match="field"):
        fe.get_metadata(KEY)
    with pytest.raises(DataCorrupted):
        fe.loader(KEY).array.compute()
    fe.gc(min_age_seconds=0)
    with contextlib.suppress(DataCorrupted):
        fe.remove(KEY)
    with contextlib.suppress(DataNotAvailable):
        fe.backend.remove(bk_of(KEY))
    victim()


def _object_files(root, key: str) -> list[str]:
    """The document of object ``key`` and its index entries."""
    return [str(p) for p in (root / "objects").rglob(f"{key}.json")]


ANCILLARY_ATTACKS = {
    "traversal": "objects/<key>/../../../victim",
    "parent": "../victim",
    "absolute": "<victim>",
    "url_encoded": "objects/<key>/..%2F..%2F..%2Fvictim",
    "other_object": "objects/<key>/o20260101T000000000000Z_0123456789ab/../../../../victim",
    "data_traversal": "data/run_1/records-abcdefghijkl/../../../../victim",
}


@pytest.mark.parametrize("attack", list(ANCILLARY_ATTACKS), ids=list(ANCILLARY_ATTACKS))
def test_ancillary_path_from_object_document_is_validated(fe, oob, root, tmp_path, victim, attack):
    b = fe.backend
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    good = b.store_object(
        Measurement(run_id="r1", name="good", value=1), make_ancillary(str(scratch), "g")
    )
    key = b.store_object(
        Measurement(run_id="r1", name="bad", value=2), make_ancillary(str(scratch), "b")
    )
    hostile = _attack(ANCILLARY_ATTACKS[attack], victim).replace("<key>", key)

    def edit(d):
        d["ancillary"] = hostile

    for path in _object_files(root, key):  # the document and its index entry
        edit_document(oob.fs, path, edit)
    with pytest.raises(DataCorrupted):
        b.retrieve_object(key)
    found = b.query(MeasurementQuery(run_id="r1"))  # the bad entry is skipped, not fatal
    keys = [k for matches in found.values() for k, _, _ in matches]
    assert keys == [good]
    assert b.retrieve_object(good)[1] is not None
    fe.gc(min_age_seconds=0)
    b.gc_objects(min_age_seconds=0)
    b.rebuild_object_index()
    victim()
    with contextlib.suppress(StorageError):
        b.remove_object(key)
    fe.gc(min_age_seconds=0)
    assert b.retrieve_object(good)[0].name == "good"
    victim()


def test_replacing_an_object_whose_document_names_a_hostile_ancillary_path(
    fe, oob, root, tmp_path, victim
):
    b = fe.backend
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    first = SimulationResult(substance="water", temperature=300, samples=10)
    key = b.store_object(first, make_ancillary(str(scratch), "ten"))
    for path in _object_files(root, key):
        edit_document(oob.fs, path, lambda d: d.update(ancillary=f"objects/{key}/../../../victim"))
    better = SimulationResult(substance="water", temperature=300, samples=20)
    try:
        stored = b.store_object(better, make_ancillary(str(scratch), "twenty"))
    except DataCorrupted:  # refusing to replace a damaged document is fine too
        victim()
    else:
        assert stored == key
        obj, anc = b.retrieve_object(key)
        assert obj.samples == 20
        assert open(os.path.join(anc, "payload.bin"), "rb").read().startswith(b"twenty")
    with contextlib.suppress(StorageError):
        b.remove_object(key)
    fe.gc(min_age_seconds=0)
    victim()


def test_attempt_symlinked_outside_the_root_is_not_followed(fe, root, tmp_path, victim):
    attempt = _attempt_dir(fe, root)
    outside = tmp_path / "outside"
    shutil.move(str(attempt), str(outside))  # the real data, now outside the root
    (outside / "precious.txt").write_bytes(b"keep me too")
    attempt.symlink_to(outside, target_is_directory=True)
    before = local_tree(outside)
    with pytest.raises(StorageError):  # reading the data through the link is the failure
        fe.loader(KEY).to_numpy()
    with pytest.raises(StorageError):
        fe.loader(KEY).array.compute()
    fe.gc(min_age_seconds=0)
    with contextlib.suppress(StorageError):
        fe.remove(KEY)
    with contextlib.suppress(DataNotAvailable):
        fe.backend.remove(bk_of(KEY))
    assert local_tree(outside) == before
    victim()


def test_unreferenced_symlinked_attempt_is_not_followed_by_gc(fe, root, tmp_path, victim):
    link = _key_dir(root) / "a20200101T000000000000Z_0123456789ab"  # old enough for any gc
    link.symlink_to(victim.path, target_is_directory=True)
    fe.gc(min_age_seconds=0)
    fe.remove(KEY)
    fe.gc(min_age_seconds=0)
    victim()


def test_overwrite_does_not_mark_a_symlinked_superseded_attempt(fe, root, tmp_path, victim):
    """The attempt an overwrite replaces gets a ``strata.superseded`` marker, but never
    through a link that leads out of the store."""
    attempt = _attempt_dir(fe, root)
    outside = tmp_path / "outside"
    shutil.move(str(attempt), str(outside))
    attempt.symlink_to(outside, target_is_directory=True)
    before = local_tree(outside)
    data = save(fe, seed=7, overwrite=True)
    assert fe.loader(KEY).to_numpy().tobytes() == data.tobytes()
    assert local_tree(outside) == before  # no marker written through the link
    victim()


def test_overwrite_marks_the_superseded_attempt(fe, root):
    old = _attempt_dir(fe, root)
    save(fe, seed=7, overwrite=True)
    note = json.loads((old / "strata.superseded").read_bytes())
    assert note["superseded_by"] == fe.loader(KEY).manifest.attempt != old.name


# -- 2. committed means complete --------------------------------------------------------------
def _t(frac: float) -> int:
    return int(frac * PARTITION_NS)


READS: dict[str, Callable[[Any, str], Any]] = {
    "to_numpy": lambda fe, f: fe.loader(KEY).to_numpy(),
    "dask": lambda fe, f: fe.loader(KEY).array.compute(),
    "fields": lambda fe, f: fe.loader(KEY, fields=[f]).to_numpy(),
    "field_dask": lambda fe, f: fe.loader(KEY, fields=[f]).fields[f].compute(),
    "time_range": lambda fe, f: fe.loader(KEY, time_range=(_t(0.25), _t(1.5))).to_numpy(),
    "time_range_dask": lambda fe, f: fe.loader(KEY, time_range=(_t(0.25), _t(1.5))).array.compute(),
    "time_range_inner": lambda fe, f: fe.loader(KEY, time_range=(0, _t(2))).to_numpy(),
}


@pytest.mark.parametrize("read", list(READS), ids=list(READS))
@pytest.mark.parametrize("field", ["area", "time"])
def test_deleted_chunk_is_named(fe, root, read, field):
    chunks = _chunks(fe, root, "s000000", field)
    assert len(chunks) >= 1
    chunks[0].unlink()
    with pytest.raises(DataCorrupted) as e:
        READS[read](fe, field)
    msg = str(e.value)
    assert str(KEY) in msg and field in msg and "chunk" in msg, msg


@pytest.mark.parametrize("read", list(READS), ids=list(READS))
def test_deleted_segment_directory_is_named(fe, root, read):
    shutil.rmtree(_attempt_dir(fe, root) / "s000000")
    with pytest.raises(DataCorrupted) as e:
        READS[read](fe, "area")
    assert str(KEY) in str(e.value)


@pytest.mark.parametrize("read", ["to_numpy", "dask", "fields", "time_range"])
def test_manifest_naming_a_missing_attempt(fe, oob, read):
    edit_manifest(oob, bk_of(KEY), set_attempt(layout.new_attempt()))
    with pytest.raises(DataCorrupted) as e:
        READS[read](fe, "area")
    assert str(KEY) in str(e.value)


def _swap(a, b) -> None:
    tmp = a.with_name(a.name + ".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


@pytest.mark.parametrize("read", ["to_numpy", "dask", "fields", "time_range"])
@pytest.mark.parametrize("field", ["area", "time", "channel"])
def test_chunks_swapped_between_segments(fe, root, read, field):
    # "time" and "channel" chunks of both segments have the same size: only their content
    # tells them apart
    a = _chunks(fe, root, "s000000", field)[0]
    b = _chunks(fe, root, "s000001", field)[0]
    assert a.read_bytes() != b.read_bytes()
    _swap(a, b)
    with pytest.raises(DataCorrupted) as e:
        READS[read](fe, field)
    assert str(KEY) in str(e.value) and field in str(e.value)


@pytest.mark.parametrize("read", ["to_numpy", "dask", "fields", "time_range"])
def test_chunks_swapped_within_an_array(fe, root, read):
    # "data" has several chunks a segment, stored in one shard: two of them swapped and the
    # shard's index rewritten to match (plain Zarr readers would take the swap as data)
    (shard,) = _chunks(fe, root, "s000000", "data")
    parts, entries = shard_parts(shard.read_bytes())
    assert len(parts) >= 2
    assert parts[0] != parts[1]
    shard.write_bytes(make_shard([parts[1], parts[0], *parts[2:]], entries))
    with pytest.raises(DataCorrupted) as e:
        READS[read](fe, "data")
    assert str(KEY) in str(e.value) and "chunk" in str(e.value)


def test_segments_swapped(fe, root):
    att = _attempt_dir(fe, root)
    _swap(att / "s000000", att / "s000001")  # same row counts, other values
    with pytest.raises(DataCorrupted):
        fe.loader(KEY).to_numpy()
    with pytest.raises(DataCorrupted):
        fe.loader(KEY, fields=["channel"]).array.compute()


def test_foreign_chunk(fe, root):
    mine = _chunks(fe, root, "s000000", "area")[0]
    theirs = _chunks(fe, root, "s000000", "area", OTHER)[0]
    shutil.copyfile(theirs, mine)  # a valid chunk with a valid crc32c, of other data
    with pytest.raises(DataCorrupted):
        fe.loader(KEY, fields=["area"]).to_numpy()
    assert len(fe.loader(OTHER).to_numpy()) == sum(SIZES)


@pytest.mark.parametrize(
    "edit",
    [
        change_rows(0, -1, segment_too=False),
        change_rows(0, +1, segment_too=False),
        change_rows(1, +600, segment_too=True),
        change_rows(0, -600, segment_too=True),
    ],
    ids=["fewer", "more", "more_with_segment", "none_with_segment"],
)
def test_manifest_lying_about_rows_is_refused_at_load(fe, oob, edit):
    edit_manifest(oob, bk_of(KEY), edit)
    with pytest.raises(DataCorrupted):
        fe.get_metadata(KEY)
    with pytest.raises(DataCorrupted):
        fe.loader(KEY)


# -- 6. bounds --------------------------------------------------------------------------------
BAD_BOUNDS = [(0, 2**70), (-(2**63) - 1, 0), (2**63, 2**63 + 1), (-(2**70), -(2**63))]


@pytest.mark.parametrize(("start", "end"), BAD_BOUNDS)
def test_partition_bounds_beyond_int64_streaming(empty, root, start, end):
    fe = empty
    saver = fe.saver(KEY, STRAX_DTYPE)
    with pytest.raises(ValueError, match="int64"):
        saver.save_partition(np.zeros(0, STRAX_DTYPE), start, end)
    assert not _key_dir(root).exists()
    saver.abort()
    assert not fe.is_stored(KEY)


@pytest.mark.parametrize(
    "intervals",
    [
        [(0, PARTITION_NS), (PARTITION_NS, 2**70)],
        [(-(2**63) - 1, 0)],
        [(0, PARTITION_NS), (2**63, 2**63 + 1)],
        [(-(2**70), -(2**63))],
    ],
)
def test_partition_bounds_beyond_int64_dask(empty, root, intervals):
    fe = empty
    parts, _ = make_run([50])
    empty = np.zeros(0, STRAX_DTYPE)
    data = [parts[0], empty] if len(intervals) == 2 else [empty]
    saver = fe.saver(KEY, STRAX_DTYPE)
    with pytest.raises(ValueError, match="int64"):
        saver.save(data, intervals)
    assert not _key_dir(root).exists()
    assert not fe.is_stored(KEY)


# -- 7. one bad file does not break the store -------------------------------------------------
def _other_things_work(fe, root, keys: set[DataKey], objects: set[str]) -> None:
    """Everything but the damaged document still works: listings, loads, gc, ``strata ls``,
    object retrieval and queries, the index rebuild, the run list.
    """
    assert {e.key for e in fe.list()} == keys
    assert len(fe.loader(OTHER).to_numpy()) == sum(SIZES)
    fe.gc(min_age_seconds=0)
    r = CliRunner().invoke(main, ["ls", "-s", str(root)])
    assert r.exit_code == 0, r.output
    assert OTHER.lineage_hash in r.output
    b = fe.backend
    for key in objects:
        assert b.retrieve_object(key)[0].run_id == "r1"
    found = b.query(MeasurementQuery(run_id="r1"))
    assert {k for matches in found.values() for k, _, _ in matches} == objects
    b.gc_objects(min_age_seconds=0)
    b.rebuild_object_index()
    assert fe.list_runs() == ["run_1"]


@pytest.fixture
def store_with_things(fe, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    good = fe.backend.store_object(
        Measurement(run_id="r1", name="good", value=1), make_ancillary(str(scratch), "g")
    )
    bad = fe.backend.store_object(
        Measurement(run_id="r1", name="bad", value=2), make_ancillary(str(scratch), "b")
    )
    return good, bad


def test_deeply_nested_manifest_is_an_error_for_its_key_alone(fe, oob, root, store_with_things):
    oob.put_manifest(bk_of(KEY), DEEP)
    with pytest.raises(DataCorrupted, match="nested"):
        fe.get_metadata(KEY)
    with pytest.raises(DataCorrupted):
        fe.loader(KEY)
    _other_things_work(fe, root, {OTHER}, set(store_with_things))


def test_deeply_nested_object_document_is_an_error_for_its_key_alone(fe, root, store_with_things):
    good, bad = store_with_things
    for path in _object_files(root, bad):  # the document and its index entry
        with open(path, "wb") as f:
            f.write(DEEP)
    with pytest.raises(DataCorrupted, match="nested"):
        fe.backend.retrieve_object(bad)
    _other_things_work(fe, root, {KEY, OTHER}, {good})


def test_deeply_nested_run_document_is_an_error_for_its_run_alone(fe, root, store_with_things):
    fe.write_run_metadata("run_1", {"gain": 1})
    (root / "runs" / "run_1.json").write_bytes(DEEP)
    with pytest.raises(DataCorrupted, match="nested"):
        fe.run_metadata("run_1")
    _other_things_work(fe, root, {KEY, OTHER}, set(store_with_things))


# -- 8. named errors --------------------------------------------------------------------------
@pytest.mark.parametrize("run_id", ["r" * 300, "run_1\n", "run\x001", "run_1/../x"])
def test_bad_run_ids_are_invalid_keys(empty, run_id):
    fe = empty
    with pytest.raises(InvalidKey):
        DataKey(run_id, "records", lineage())
    with pytest.raises(InvalidKey):
        fe.write_run_metadata(run_id, {"a": 1})
    with pytest.raises(InvalidKey):
        fe.run_metadata(run_id)
    with pytest.raises(InvalidKey):
        fe.list(run_id)


def test_long_data_type_is_an_invalid_key():
    with pytest.raises(InvalidKey):
        DataKey("run_1", "d" * 300, lineage("d" * 300))


@pytest.mark.parametrize(
    "name", ["zarr.json", "c", ".hidden", "a\x00b", "area\n", "../x", "a/b", "manifest.json"]
)
def test_bad_field_names_are_refused_at_saver_creation(empty, root, name):
    fe = empty
    dtype = np.dtype([("time", "<i8"), ("length", "<i4"), ("dt", "<i2"), (name, "<f4")])
    with pytest.raises(InvalidKey):
        fe.saver(KEY, dtype)
    assert not _key_dir(root).exists()


NOISE_DTYPE = np.dtype([("time", "<i8"), ("endtime", "<i8"), ("x", "<f8", (64,))])


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted at ``<tmp>/small`` (needs root; skipped where mounting fails)."""
    d = tmp_path / "small"
    d.mkdir()
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command here to make a small full file system")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs ({r.stderr.strip()}): mounting needs root")
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], check=True)


def test_full_disk_is_a_named_error_and_nothing_is_visible(small_disk):
    root = small_disk / "store"
    fe = DirectoryFrontend(str(root), chunk_target_mb=0.25)
    rng = np.random.default_rng(0)
    parts, intervals = [], []
    for i in range(4):  # about 5 MiB of incompressible values for a 2 MiB file system
        x = np.zeros(2500, NOISE_DTYPE)
        x["time"] = x["endtime"] = np.sort(rng.integers(i * 1000, (i + 1) * 1000, len(x)))
        x["x"] = rng.random((len(x), 64))
        parts.append(x)
        intervals.append((i * 1000, (i + 1) * 1000))
    with pytest.raises(StorageError) as e:
        fe.saver(KEY, NOISE_DTYPE).save(parts, intervals).compute()
    msg = str(e.value)
    assert str(KEY) in msg, msg
    assert str(root) in msg or f"data/{bk_of(KEY)}" in msg, msg
    assert not fe.is_stored(KEY)
    with pytest.raises(DataNotAvailable):
        fe.loader(KEY)
    assert fe.list() == []
