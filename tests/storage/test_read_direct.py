"""The direct read path (storage/backends/zarr/chunks.py): chunks decoded by strata itself
(blosc, uncompressed) or by zarr's pipeline (other codecs) read back exactly, every way a load
reads them, and damaged chunks are DataCorrupted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from strata.storage import DataCorrupted, DataKey, DirectoryFrontend
from strata.storage.backends.zarr import chunks
from strata.storage.backends.zarr.arrays import array_meta
from tests.helpers import lineage

KEY = DataKey("run_1", "kinds", lineage("kinds"))
NS = 1_000_000
DTYPE = np.dtype(
    [
        ("time", "<i8"),
        ("endtime", "<i8"),
        ("i1", "i1"),
        ("u2", "<u2"),
        ("f8", "<f8"),
        ("flag", "?"),
        ("name", "S5"),
        ("label", "<U3"),
        ("when", "<M8[ns]"),
        ("wave", "<f4", (7,)),
        ("grid", "<i2", (3, 2)),
    ]
)
# preset -> whether strata decodes it itself (else zarr's codec pipeline does)
PRESETS = {"blosc": True, "blosc-lz4": True, "lz4": True, "none": True, "zstd": False}


def _part(i: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    x = np.zeros(n, DTYPE)
    x["time"] = np.sort(rng.integers(i * NS, (i + 1) * NS - 100, n))
    x["endtime"] = x["time"] + rng.integers(0, 100, n)
    x["i1"] = rng.integers(-128, 128, n)
    x["u2"] = rng.integers(0, 2**16, n)
    x["f8"] = rng.standard_normal(n)
    x["flag"] = rng.random(n) < 0.5
    x["name"] = [f"n{k % 977}".encode() for k in range(n)]
    x["label"] = [f"é{k % 9}" for k in range(n)]
    x["when"] = x["time"].astype("M8[ns]")
    x["wave"] = rng.standard_normal((n, 7))
    x["grid"] = rng.integers(-1000, 1000, (n, 3, 2))
    return x


SIZES = (1500, 0, 2300, 700)


def _save(root: Path, preset: str, shard_mb: float = 0) -> tuple[DirectoryFrontend, np.ndarray]:
    # tiny chunks: many per segment, edge chunks shorter than the others; one file per chunk
    # unless shard_mb (the damage of shards is tested in test_shards)
    fe = DirectoryFrontend(
        str(root), compressor=preset, chunk_target_mb=0.01, shard_target_mb=shard_mb
    )
    parts = [_part(i, n) for i, n in enumerate(SIZES)]
    intervals = [(i * NS, (i + 1) * NS) for i in range(len(SIZES))]
    fe.saver(KEY, DTYPE).save(parts, intervals).compute()
    return fe, np.concatenate(parts)


@pytest.mark.parametrize("shard_mb", [0, 64], ids=["chunks", "shards"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_kind_reads_back_exactly(tmp_path, preset, shard_mb):
    fe, ref = _save(tmp_path / "store", preset, shard_mb)
    m = fe.get_metadata(KEY)
    seg = m.segments[0]
    assert seg.chunk_rows["wave"] < seg.rows  # several chunks per array, or nothing is tested
    # the chains strata decodes itself are stored in shards when asked, the others per chunk
    assert (seg.shard("wave") > 1) == bool(shard_mb and PRESETS[preset]), seg.shard_chunks
    for f in DTYPE.names:
        path = fe.backend.layout.array_prefix(
            fe.backend.backend_key(KEY), m.attempt, seg.name, f, "test"
        )
        plan = chunks.plan_for(fe.backend.store, path, array_meta(m, seg, f))
        assert (plan.codec is not None) == PRESETS[preset], f
    # the structured reader, every field alone (a contiguous destination), each Dask array
    assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    assert fe.loader(KEY).array.compute().tobytes() == ref.tobytes()
    for f in DTYPE.names:
        alone = fe.loader(KEY, fields=[f]).to_numpy()
        np.testing.assert_array_equal(alone[f], ref[f], err_msg=f)
        np.testing.assert_array_equal(fe.loader(KEY).fields[f].compute(), ref[f], err_msg=f)
    # rows cut out of the middle of chunks
    t0, t1 = int(ref["time"][1000]), int(ref["time"][3000])
    got = fe.loader(KEY, time_range=(t0, t1)).to_numpy()
    assert got.tobytes() == ref[(ref["time"] >= t0) & (ref["time"] < t1)].tobytes()
    got = fe.loader(KEY, fields=["wave", "time"], time_range=(t0, t1)).to_numpy()
    np.testing.assert_array_equal(got["wave"], ref["wave"][1000:3000])


def _wave_chunks(fe: DirectoryFrontend) -> list[Path]:
    m = fe.get_metadata(KEY)
    bk = fe.backend.backend_key(KEY)
    c = Path(fe.backend.path("data", bk, m.attempt)) / m.segments[0].name / "wave" / "c"
    files = [p for p in c.rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: [int(x) for x in p.relative_to(c).parts])


def _flip(files: list[Path]) -> None:
    p = files[1]
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    p.write_bytes(bytes(raw))


def _truncate(files: list[Path]) -> None:
    p = files[1]
    p.write_bytes(p.read_bytes()[:-7])


def _swap(files: list[Path]) -> None:
    a, b = files[1].read_bytes(), files[2].read_bytes()
    assert a != b
    files[1].write_bytes(b)
    files[2].write_bytes(a)


@pytest.mark.parametrize("damage", [_flip, _truncate, _swap], ids=["flip", "truncate", "swap"])
@pytest.mark.parametrize("preset", ["blosc", "none", "zstd"])
def test_a_damaged_chunk_is_named(tmp_path, preset, damage):
    fe, ref = _save(tmp_path / "store", preset)
    files = _wave_chunks(fe)
    assert len(files) >= 3
    damage(files)
    reads = {
        "to_numpy": lambda: fe.loader(KEY).to_numpy(),
        "field alone": lambda: fe.loader(KEY, fields=["wave"]).to_numpy(),
        "dask field": lambda: fe.loader(KEY).fields["wave"].compute(),
    }
    for what, read in reads.items():
        with pytest.raises(DataCorrupted) as e:
            read()
        msg = str(e.value)
        named = "chunk 1 of" in msg or (damage is _swap and "chunk 2 of" in msg)
        assert str(KEY) in msg and named and "/wave" in msg, what
    # the other arrays are intact
    np.testing.assert_array_equal(fe.loader(KEY, fields=["grid"]).to_numpy()["grid"], ref["grid"])


def test_a_chunk_decoding_to_other_rows_is_corrupted(tmp_path):
    """A chunk whose bytes match the manifest but decode to another number of rows than the
    array's metadata says (a forged manifest) is refused, never partly filled."""
    fe, _ = _save(tmp_path / "store", "blosc")
    m = fe.get_metadata(KEY)
    seg = m.segments[0]
    bk = fe.backend.backend_key(KEY)
    path = fe.backend.layout.array_prefix(bk, m.attempt, seg.name, "wave", "test")
    meta = array_meta(m, seg, "wave")
    rows = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    forged = {
        **meta,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [rows + 1, 7]}},
    }
    plan = chunks.plan_for(fe.backend.store, path, forged)
    assert plan.codec == "blosc"
    out = np.zeros((rows + 1, 7), np.float32)
    read = chunks.ChunkRead(plan, path, 0, ((0, rows + 1, out),), tuple(seg.chunks["wave"]))
    with pytest.raises(DataCorrupted, match="decodes to"):
        chunks.read_chunks([read], str(KEY), "test store")
    assert not out.any()  # nothing was decoded into the destination


def test_a_symlinked_chunk_is_not_followed(tmp_path):
    """A chunk file replaced by a symbolic link (to a file holding the very same bytes, so no
    checksum could tell) is refused: the local reader does not follow links."""
    fe, ref = _save(tmp_path / "store", "blosc")
    files = _wave_chunks(fe)
    copy = tmp_path / "outside-chunk"
    copy.write_bytes(files[1].read_bytes())
    files[1].unlink()
    files[1].symlink_to(copy)
    with pytest.raises(DataCorrupted, match="symbolic link") as e:
        fe.loader(KEY, fields=["wave"]).to_numpy()
    assert str(KEY) in str(e.value) and "chunk 1 of" in str(e.value)
    np.testing.assert_array_equal(fe.loader(KEY, fields=["grid"]).to_numpy()["grid"], ref["grid"])


def test_a_deleted_chunk_is_missing_not_fill(tmp_path):
    """The local reader reads each chunk file itself: a deleted one is DataCorrupted naming
    the chunk, never zeros."""
    fe, _ = _save(tmp_path / "store", "blosc")
    files = _wave_chunks(fe)
    files[2].unlink()
    for read in (
        lambda: fe.loader(KEY).to_numpy(),
        lambda: fe.loader(KEY, fields=["wave"]).to_numpy(),
    ):
        with pytest.raises(DataCorrupted, match=r"chunk 2 of .* is missing"):
            read()


def test_plans_follow_the_committed_manifest(tmp_path):
    """Read plans are kept per parsed manifest: after an overwrite with other chunking, a
    read uses the new commit's arrays, not a plan of the old one."""
    root = tmp_path / "store"
    fe, ref = _save(root, "blosc")
    assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    fe2 = DirectoryFrontend(str(root), compressor="none", chunk_target_mb=0.02)
    parts = [_part(i, n) for i, n in enumerate(SIZES)]
    for x in parts:
        x["f8"] += 1.0
        x["wave"] *= -1
    intervals = [(i * NS, (i + 1) * NS) for i in range(len(SIZES))]
    fe2.saver(KEY, DTYPE, overwrite=True).save(parts, intervals).compute()
    new = np.concatenate(parts)
    assert fe.loader(KEY).to_numpy().tobytes() == new.tobytes()
    assert fe.loader(KEY, fields=["wave"]).to_numpy()["wave"].tobytes() == new["wave"].tobytes()


def test_an_oversized_chunk_file_is_refused_without_reading_it_all(tmp_path):
    """A chunk file replaced by a much larger one is DataCorrupted (the reader reads a byte
    more than the manifest's size, never the whole file)."""
    fe, _ = _save(tmp_path / "store", "blosc")
    files = _wave_chunks(fe)
    files[1].write_bytes(files[1].read_bytes() + b"\0" * (64 << 20))
    with pytest.raises(DataCorrupted, match="chunk 1 of") as e:
        fe.loader(KEY, fields=["wave"]).to_numpy()
    assert "truncated, swapped or replaced" in str(e.value)
    assert chunks._raw.buf.nbytes < 32 << 20  # this thread's read buffer never held the file
