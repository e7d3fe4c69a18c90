"""Shards: several chunks of an array in one stored object (Zarr v3 ``sharding_indexed``).

What strata writes is what plain Zarr reads; every read (whole shards in one request, runs of
inner chunks as byte ranges, single chunks for Dask tasks) returns exactly the saved rows; and
each kind of damage to a shard (truncated, grown, swapped, an inner chunk flipped or moved with
the index forged to match, deleted, a link) or to the manifest's shard table ends in a
``DataCorrupted`` naming the key and the array, or, for a damaged index alone, in exact data and
a problem from ``verify``. Damage is done out of band on the store's files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from strata.storage import DataCorrupted, DataKey, DirectoryFrontend, verify
from strata.storage import _zarr as zarr_io
from strata.storage.backends.zarr import shards
from tests.helpers import STRAX_DTYPE, edit_commit, lineage, make_run, make_shard, shard_parts

KEY = DataKey("run_1", "records", lineage())
OTHER = DataKey("run_1", "other", lineage("other"))
SIZES = (1000, 800)
CHUNK_MB = 0.05  # `data` (440 bytes a row): 9 and 7 chunks; the scalar fields one each
SHARD_MB = 0.2  # 4 chunks a shard at most: `data` in shards of 3 and of 4 (balanced)


def _save(fe: DirectoryFrontend, key: DataKey = KEY, seed: int = 1) -> np.ndarray:
    parts, intervals = make_run(list(SIZES), seed=seed)
    fe.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards") / "store"
    fe = DirectoryFrontend(str(root), chunk_target_mb=CHUNK_MB, shard_target_mb=SHARD_MB)
    ref = _save(fe)
    other = _save(fe, OTHER, seed=2)
    return root, ref, other


@pytest.fixture
def stored(tmp_path, template):
    """A copy of the template store: (frontend, root, the saved rows of KEY)."""
    src, ref, _ = template
    root = tmp_path / "store"
    shutil.copytree(src, root, symlinks=True)
    return DirectoryFrontend(str(root), chunk_target_mb=CHUNK_MB), root, ref


def _array_dir(fe, root: Path, segment: str, field: str, key: DataKey = KEY) -> Path:
    m = fe.get_metadata(key)
    return (
        root
        / "data"
        / key.run_id
        / f"{key.data_type}-{key.lineage_hash}"
        / m.attempt
        / (f"{segment}/{field}")
    )


def _shard_files(fe, root: Path, segment: str = "s000000", key: DataKey = KEY) -> list[Path]:
    c = _array_dir(fe, root, segment, "data", key) / "c"
    return sorted((p for p in c.rglob("*") if p.is_file()), key=lambda p: int(p.parent.name))


READS = {
    "to_numpy": lambda fe: fe.loader(KEY).to_numpy(),
    "dask": lambda fe: fe.loader(KEY).array.compute(),
    "field": lambda fe: fe.loader(KEY, fields=["data"]).to_numpy(),
    "dask_field": lambda fe: fe.loader(KEY).fields["data"].compute(),
    "time_range": lambda fe: fe.loader(KEY, time_range=_range(fe)).to_numpy(),
}


def _range(fe) -> tuple[int, int]:
    """A time range starting and ending inside shards of segment s000000."""
    t = fe.loader(KEY, fields=["time"]).to_numpy()["time"]
    return int(t[130]), int(t[610])


# -- what is stored ---------------------------------------------------------------------------
def test_layout_manifest_and_index(stored):
    fe, root, _ = stored
    m = fe.get_metadata(KEY)
    seg = m.segments[0]
    assert seg.n_chunks("data") == 9
    assert seg.shard_chunks == {"data": 3}  # 9 chunks, 4 at most: three shards of 3
    assert m.segments[1].shard_chunks == {"data": 4}  # 7 chunks: shards of 4 and of 3
    files = _shard_files(fe, root)
    assert [p.parent.name for p in files] == ["0", "1", "2"]
    for j, p in enumerate(files):
        raw = p.read_bytes()
        parts, entries = shard_parts(raw)
        assert entries == 3
        inner = seg.chunks["data"][3 * j : 3 * j + 3]
        assert [len(x) for x in parts] == [d.size for d in inner]
        assert [int.from_bytes(x[-4:], "little") for x in parts] == [d.crc32c for d in inner]
        assert raw == make_shard(parts, entries)  # the index describes the chunks exactly
        assert len(raw) == shards.object_size(seg.chunks["data"], 3, j)
    # the last shard of s000001 holds 3 chunks and an empty fourth entry
    last = _shard_files(fe, root, "s000001")[-1].read_bytes()
    parts, entries = shard_parts(last)
    assert (len(parts), entries) == (3, 4)
    doc = json.loads((_array_dir(fe, root, "s000000", "data") / "zarr.json").read_bytes())
    commit = json.loads(_manifest(root).read_bytes())  # what plain readers open
    assert commit["consolidated_metadata"]["metadata"][f"{m.attempt}/s000000/data"] == doc
    (codec,) = doc["codecs"]
    assert codec["name"] == "sharding_indexed"
    assert codec["configuration"]["chunk_shape"] == [seg.chunk_rows["data"], 110]
    assert doc["chunk_grid"]["configuration"]["chunk_shape"] == [3 * seg.chunk_rows["data"], 110]
    # fields of one chunk a segment are stored as before: one object, no index
    assert not (_array_dir(fe, root, "s000000", "time") / "c" / "1").exists()
    assert (
        json.loads((_array_dir(fe, root, "s000000", "time") / "zarr.json").read_bytes())["codecs"][
            0
        ]["name"]
        == "bytes"
    )


def test_plain_zarr_reads_the_shards(stored):
    import zarr

    fe, root, ref = stored
    m = fe.get_metadata(KEY)
    key_dir = root / "data" / KEY.run_id / f"{KEY.data_type}-{KEY.lineage_hash}"
    group = zarr.open_group(str(key_dir), mode="r")
    got = np.concatenate([group[m.attempt][s.name]["data"][:] for s in m.segments])
    np.testing.assert_array_equal(got, ref["data"])
    assert group[m.attempt]["s000000"]["data"].shards == (3 * m.segments[0].chunk_rows["data"], 110)


@pytest.mark.parametrize("read", list(READS))
def test_every_read_is_exact(stored, read):
    fe, _, ref = stored
    got = READS[read](fe)
    if read == "time_range":
        t0, t1 = _range(fe)
        want = ref[(ref["time"] >= t0) & (ref["time"] < t1)]
    else:
        want = ref["data"] if "field" in read else ref
    if got.dtype.names and not want.dtype.names:
        got = got["data"]
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("url", ["memory", "local"])
def test_requests_one_per_shard_or_run(tmp_path, url, monkeypatch):
    """On a store read through requests (memory:// here, S3 alike): a whole read fetches each
    shard once; a time range fetches one byte range per run of inner chunks it needs."""
    import uuid

    where = f"memory://shards-{uuid.uuid4().hex}" if url == "memory" else str(tmp_path / "s")
    fe = DirectoryFrontend(where, chunk_target_mb=CHUNK_MB, shard_target_mb=SHARD_MB)
    ref = _save(fe)
    calls: list[tuple[str, str]] = []
    whole, ranged = zarr_io.fetch_key, zarr_io.fetch_range

    async def fetch_key(store, key):
        calls.append(("whole", key))
        return await whole(store, key)

    async def fetch_range(store, key, a, b):
        calls.append(("range", key))
        return await ranged(store, key, a, b)

    monkeypatch.setattr(zarr_io, "fetch_key", fetch_key)
    monkeypatch.setattr(zarr_io, "fetch_range", fetch_range)
    assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    data = [k for kind, k in calls if "/data/" in k]
    if url == "local":
        assert calls == []  # local chunks are read by the decoding threads themselves
        return
    assert len(data) == len(set(data)) == 5  # 3 + 2 shards, each whole, once
    assert all(kind == "whole" for kind, k in calls if "/data/" in k)
    calls.clear()
    t0, t1 = _range(fe)
    got = fe.loader(KEY, time_range=(t0, t1)).to_numpy()
    assert got.tobytes() == ref[(ref["time"] >= t0) & (ref["time"] < t1)].tobytes()
    data_calls = [(kind, k) for kind, k in calls if "/data/" in k]
    # rows 130..610 of 9 chunks of ~112 rows: chunks 1-5, in shards 0 (1-2) and 1 (3-5: all)
    assert sorted(data_calls) == sorted(
        [("range", data_calls[0][1]), ("whole", data_calls[1][1])]
    ), data_calls


# -- damage to the shard objects ----------------------------------------------------------------
def _truncate(files):
    files[1].write_bytes(files[1].read_bytes()[:-30])


def _grow(files):
    files[1].write_bytes(files[1].read_bytes() + b"\0" * 64)


def _swap_shards(files):
    a, b = files[0].read_bytes(), files[1].read_bytes()
    files[0].write_bytes(b)
    files[1].write_bytes(a)


def _flip_inner(files):
    raw = bytearray(files[1].read_bytes())
    raw[len(raw) // 4] ^= 0x04
    files[1].write_bytes(bytes(raw))


def _forge_order(files):
    parts, entries = shard_parts(files[1].read_bytes())
    files[1].write_bytes(make_shard([parts[1], parts[0], *parts[2:]], entries))


def _forge_drop(files):
    """An inner chunk replaced by a copy of its neighbour, the index made to match."""
    parts, entries = shard_parts(files[1].read_bytes())
    files[1].write_bytes(make_shard([parts[0], parts[0], *parts[2:]], entries))


DAMAGE = {
    "truncated": _truncate,
    "grown": _grow,
    "swapped": _swap_shards,
    "flipped": _flip_inner,
    "reordered": _forge_order,
    "duplicated": _forge_drop,
    "deleted": lambda files: files[1].unlink(),
}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_shard_is_named(stored, damage, read):
    fe, root, ref = stored
    DAMAGE[damage](_shard_files(fe, root))
    with pytest.raises(DataCorrupted) as e:
        READS[read](fe)
    msg = str(e.value)
    assert str(KEY) in msg and "/data" in msg, msg
    hit = (0, 1) if damage == "swapped" else (1,)  # the damaged shards
    assert any(f"shard {j} " in msg or f"chunk {3 * j + i} " in msg for j in hit for i in range(3))
    # the other arrays, and the other segment's shards, are intact
    got = fe.loader(KEY, fields=["area"]).to_numpy()["area"]
    np.testing.assert_array_equal(got, ref["area"])
    report = verify(str(root))
    (mine,) = [r for r in report if r.key == KEY]
    assert not mine.ok and any(
        "shard 1 of array 'data' in segment s000000" in p for p in mine.problems
    )
    assert all(r.ok for r in report if r.key == OTHER)


def test_foreign_shard_of_the_same_size_is_refused(stored):
    """Another key's shard in this one's place (its index and crc32c are valid)."""
    fe, root, _ = stored
    mine, theirs = _shard_files(fe, root)[0], _shard_files(fe, root, key=OTHER)[0]
    shutil.copyfile(theirs, mine)
    with pytest.raises(DataCorrupted):
        fe.loader(KEY, fields=["data"]).to_numpy()


def test_a_damaged_index_alone_reads_exactly_and_verify_names_it(stored):
    """strata locates inner chunks from the manifest, not the index: the data still reads
    back exactly; ``verify`` reports the index, which plain Zarr readers would follow."""
    fe, root, ref = stored
    p = _shard_files(fe, root)[2]
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF  # a byte of the index (its crc32c no longer matches)
    p.write_bytes(bytes(raw))
    assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    (mine,) = [r for r in verify(str(root)) if r.key == KEY]
    assert any("index" in q and "shard 2" in q for q in mine.problems), mine.problems


def test_a_symlinked_shard_is_not_followed(stored, tmp_path):
    fe, root, _ = stored
    p = _shard_files(fe, root)[1]
    copy = tmp_path / "outside"
    copy.write_bytes(p.read_bytes())
    p.unlink()
    p.symlink_to(copy)
    with pytest.raises(DataCorrupted, match="symbolic link"):
        fe.loader(KEY, fields=["data"]).to_numpy()


# -- damage to the manifest's shard table ----------------------------------------------------------
def _manifest(root: Path) -> Path:
    return root / "data" / KEY.run_id / f"{KEY.data_type}-{KEY.lineage_hash}" / "zarr.json"


def _set_shards(value):
    def edit(body):
        body["segments"][0]["shard_chunks"] = value

    return edit


def _drop_shards(body):
    del body["segments"][0]["shard_chunks"]


@pytest.mark.parametrize(
    "edit",
    [
        _set_shards({"data": 1}),
        _set_shards({"data": 0}),
        _set_shards({"data": 2**20}),
        _set_shards({"data": "3"}),
        _set_shards({"nonfield": 3}),
        _set_shards([3]),
    ],
    ids=["one", "zero", "huge", "string", "not_a_field", "not_an_object"],
)
def test_a_forged_shard_table_is_refused_at_load(stored, edit):
    fe, root, _ = stored
    path = _manifest(root)
    path.write_bytes(edit_commit(path.read_bytes(), edit))
    with pytest.raises(DataCorrupted, match="shard"):
        fe.loader(KEY)


@pytest.mark.parametrize(
    "edit",
    [_drop_shards, _set_shards({"data": 2}), _set_shards({"data": 9})],
    ids=["dropped", "fewer", "more"],
)
@pytest.mark.parametrize("read", list(READS))
def test_a_shard_table_that_lies_never_reads_fill(stored, edit, read):
    """A table naming other shards (valid by its form) meets objects of other sizes and
    contents: a named error, never zeros or another chunk's rows."""
    fe, root, _ = stored
    path = _manifest(root)
    path.write_bytes(edit_commit(path.read_bytes(), edit))
    with pytest.raises(DataCorrupted) as e:
        READS[read](fe)
    assert str(KEY) in str(e.value)


def test_a_shard_table_for_a_chain_strata_does_not_shard_is_refused(tmp_path):
    fe = DirectoryFrontend(
        str(tmp_path / "s"), compressor="zstd", chunk_target_mb=CHUNK_MB, shard_target_mb=SHARD_MB
    )
    _save(fe)
    m = fe.get_metadata(KEY)
    assert all(not s.shard_chunks for s in m.segments)  # zstd chains: one object per chunk
    path = _manifest(tmp_path / "s")
    path.write_bytes(edit_commit(path.read_bytes(), _set_shards({"data": 3})))
    with pytest.raises(DataCorrupted, match="codecs"):
        fe.loader(KEY)


def test_zero_shard_target_stores_one_object_per_chunk(tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "s"), chunk_target_mb=CHUNK_MB, shard_target_mb=0)
    ref = _save(fe)
    assert all(not s.shard_chunks for s in fe.get_metadata(KEY).segments)
    assert len(_shard_files(fe, tmp_path / "s")) == 9
    assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    with pytest.raises(ValueError, match="shard_target_mb"):
        DirectoryFrontend(str(tmp_path / "t"), shard_target_mb=-1)


def test_verify_reads_every_shard_once(stored):
    fe, root, _ = stored
    (mine,) = [r for r in verify(str(root)) if r.key == KEY]
    assert mine.ok, mine.problems
    m = fe.get_metadata(KEY)
    attempt = root / "data" / KEY.run_id / f"{KEY.data_type}-{KEY.lineage_hash}" / m.attempt
    files = [p for p in attempt.rglob("*") if p.is_file() and p.name != "strata.lease"]
    assert mine.objects == len(files)
    assert mine.bytes_read == sum(p.stat().st_size for p in files)


# -- on S3 (moto) ------------------------------------------------------------------------------
def test_s3_shards_read_exactly_and_damage_is_named(s3_url, s3_options):
    """Whole shards and byte ranges through a real S3 server; a truncated shard is named both
    when read whole and when a range of it is read (a range past its end, S3's 416)."""
    import fsspec

    fe = DirectoryFrontend(
        s3_url, storage_options=s3_options, chunk_target_mb=CHUNK_MB, shard_target_mb=SHARD_MB
    )
    ref = _save(fe)
    assert fe.get_metadata(KEY).segments[0].shard_chunks == {"data": 3}
    assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    t0, t1 = _range(fe)
    want = ref[(ref["time"] >= t0) & (ref["time"] < t1)].tobytes()
    assert fe.loader(KEY, time_range=(t0, t1)).to_numpy().tobytes() == want
    assert fe.loader(KEY).fields["data"].compute().tobytes() == ref["data"].tobytes()
    fs, root = fsspec.core.url_to_fs(s3_url, **s3_options)
    m = fe.get_metadata(KEY)
    key_dir = f"{root.rstrip('/')}/data/{KEY.run_id}/{KEY.data_type}-{KEY.lineage_hash}"
    shard = f"{key_dir}/{m.attempt}/s000000/data/c/0/0"
    fs.pipe_file(shard, fs.cat_file(shard)[:100])  # the first inner chunk, cut short
    for read in (
        lambda: fe.loader(KEY).to_numpy(),
        lambda: fe.loader(KEY, time_range=(t0, t1)).to_numpy(),  # a range of chunks 1-2
        lambda: fe.loader(KEY).fields["data"].compute(),
    ):
        with pytest.raises(DataCorrupted) as e:
            read()
        assert str(KEY) in str(e.value)
        assert "shard 0" in str(e.value) or "chunk " in str(e.value)


def test_a_range_past_a_truncated_shards_end_is_named(monkeypatch):
    """Real S3 answers a range that starts past an object's end with 416 (an error, where
    moto and local files return fewer bytes): the reader then looks at the whole object and
    names the truncated shard, never reports the 416 as a network failure."""
    import uuid

    import fsspec

    url = f"memory://shards-{uuid.uuid4().hex}"
    fe = DirectoryFrontend(url, chunk_target_mb=CHUNK_MB, shard_target_mb=SHARD_MB)
    _save(fe)
    store = fe.backend.store
    real_get = store.get

    async def get(key, prototype, byte_range=None):  # the store as S3 behaves
        buf = await real_get(key, prototype)
        if byte_range is not None and buf is not None and byte_range.start >= len(buf):
            raise OSError(f"InvalidRange: bytes {byte_range.start}- of {len(buf)} ({key})")
        return await real_get(key, prototype, byte_range=byte_range)

    monkeypatch.setattr(store, "get", get)
    t0, t1 = _range(fe)
    want = fe.loader(KEY, time_range=(t0, t1)).to_numpy()  # intact: the ranges read fine
    assert len(want) == 480
    fs = fsspec.filesystem("memory")
    m = fe.get_metadata(KEY)
    key_dir = f"{url[len('memory://') :]}/data/{KEY.run_id}/{KEY.data_type}-{KEY.lineage_hash}"
    shard = f"/{key_dir}/{m.attempt}/s000000/data/c/0/0"
    fs.pipe_file(shard, fs.cat_file(shard)[:100])
    with pytest.raises(DataCorrupted, match=r"shard 0 .* truncated, swapped or replaced"):
        fe.loader(KEY, time_range=(t0, t1)).to_numpy()
    with pytest.raises(DataCorrupted, match="shard 0"):
        fe.loader(KEY).fields["data"].compute()  # one range per inner chunk
