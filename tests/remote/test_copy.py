"""copy_data between any two frontends: local, memory, S3 and SSH; recompress and rechunk."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from strata.storage import (
    DataCorrupted,
    DataExistsError,
    DataKey,
    DataNotAvailable,
    DirectoryFrontend,
    ReadOnlyError,
)
from strata.storage.copy import _compare, copy_data, partition_digests
from tests.helpers import STRAX_DTYPE, lineage, make_run

KEY = DataKey("run_1", "records", lineage("records", threshold=1))
SIZES = [900, 3, 0, 4, 1500, 0, 700]


@pytest.fixture
def frontends(request, tmp_path):
    """Make a frontend of a kind: local, memory, s3 or ssh (fresh storage each)."""

    def make(kind: str, **kw) -> DirectoryFrontend:
        if kind == "local":
            return DirectoryFrontend(str(tmp_path / uuid.uuid4().hex), **kw)
        if kind == "memory":
            return DirectoryFrontend(f"memory://copy-{uuid.uuid4().hex}", **kw)
        if kind == "s3":
            server = request.getfixturevalue("s3_server")
            url = f"s3://{server.create_bucket()}/strata"
            return DirectoryFrontend(url, storage_options=server.storage_options(), **kw)
        server = request.getfixturevalue("ssh_server")
        url = server.url(f"{tmp_path}/{uuid.uuid4().hex}")
        return DirectoryFrontend(url, storage_options=server.storage_options(), **kw)

    return make


def _source(fe: DirectoryFrontend) -> np.ndarray:
    parts, intervals = make_run(SIZES, seed=5)
    fe.saver(KEY, STRAX_DTYPE, metadata={"origin": "test"}).save(parts, intervals).compute()
    return np.concatenate(parts)


@pytest.mark.parametrize(
    ("src_kind", "dst_kind"), [("local", "s3"), ("s3", "ssh"), ("ssh", "local"), ("memory", "s3")]
)
def test_copy_is_identical_and_committed(frontends, src_kind, dst_kind):
    src = frontends(src_kind, chunk_target_mb=0.25)
    dst = frontends(dst_kind)
    ref = _source(src)
    m = copy_data(src, dst, KEY)
    assert m.key == KEY
    assert m.metadata == {"origin": "test"}
    got = dst.loader(KEY).to_numpy()
    assert got.tobytes() == ref.tobytes()
    src_m = src.get_metadata(KEY)

    def table(man):
        return [(p.start, p.end, p.rows, p.nbytes) for p in man.partitions]

    assert table(m) == table(src_m)
    assert partition_digests(dst.loader(KEY)) == partition_digests(src.loader(KEY))
    assert dst.gc(min_age_seconds=0) == []


def test_recompress_and_rechunk(frontends):
    src = frontends("s3", chunk_target_mb=0.25)
    dst = frontends("ssh")  # its own default: blosc, DEFAULT_CHUNK_TARGET_MB chunks
    ref = _source(src)
    m = copy_data(src, dst, KEY, compressor="zstd-5", rechunk_mb=0.05)
    codecs = [c["name"] for c in m.arrays["data"]["codecs"]]
    assert codecs == ["bytes", "zstd", "crc32c"]
    src_m = src.get_metadata(KEY)
    assert max(s.chunk_rows["data"] for s in m.segments) < max(
        s.chunk_rows["data"] for s in src_m.segments
    )
    assert dst.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    # the destination frontend itself is unchanged
    assert dst.backend.compressor is None
    from strata.storage.backends.zarr.backend import DEFAULT_CHUNK_TARGET_MB

    assert dst.backend.chunk_target_mb == DEFAULT_CHUNK_TARGET_MB


def test_copy_accepts_urls(frontends, tmp_path):
    src = frontends("local")
    ref = _source(src)
    dst_url = str(tmp_path / "by-url")
    copy_data(src.url, dst_url, KEY, compressor="lz4")
    assert DirectoryFrontend(dst_url).loader(KEY).to_numpy().tobytes() == ref.tobytes()


def test_copy_refusals(frontends):
    src, dst = frontends("local"), frontends("memory")
    with pytest.raises(DataNotAvailable):
        copy_data(src, dst, KEY)
    ref = _source(src)
    copy_data(src, dst, KEY)
    with pytest.raises(DataExistsError):
        copy_data(src, dst, KEY)
    copy_data(src, dst, KEY, overwrite=True, compressor="none")
    assert dst.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    with pytest.raises(ReadOnlyError):
        copy_data(src, DirectoryFrontend(dst.url, readonly=True), KEY)
    with pytest.raises(ValueError, match="unknown compressor preset"):
        copy_data(src, frontends("memory"), KEY, compressor="nonsense")


def test_verification_names_differing_partitions():
    _compare(KEY, ["a", "b"], ["a", "b"])
    with pytest.raises(DataCorrupted, match=r"partition\(s\) \[1\] differ"):
        _compare(KEY, ["a", "b", "c"], ["a", "x", "c"])
    with pytest.raises(DataCorrupted, match="2 partitions, the source has 3"):
        _compare(KEY, ["a", "b", "c"], ["a", "b"])
