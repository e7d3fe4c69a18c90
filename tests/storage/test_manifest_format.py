"""The manifest: digests of every object, structure checks, the checksum rule, size at 100,000
chunks, v1 and v2 manifests still read."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from strata.storage import DataCorrupted, DataKey, DirectoryFrontend
from strata.storage.backends.zarr.arrays import array_templates, consolidated
from strata.storage.codecs import compressors
from strata.storage.keys import canonical_json
from strata.storage.manifest import Digest, Manifest, Partition, Segment
from tests.helpers import STRAX_DTYPE, commit_body, edit_commit, legacy_manifest, lineage, make_run

KEY = DataKey("run_1", "records", lineage())


@pytest.fixture
def stored(tmp_path):
    # one object per chunk (as every manifest before shards): the legacy forms below describe
    # that layout; sharded arrays' digests are tested in test_shards
    fe = DirectoryFrontend(str(tmp_path / "store"), chunk_target_mb=0.05, shard_target_mb=0)
    parts, intervals = make_run([300, 5, 0, 700])
    m = fe.saver(KEY, STRAX_DTYPE).save(parts, intervals).compute()
    path = tmp_path / "store" / "data" / fe.backend.backend_key(KEY) / "zarr.json"
    return fe, m, path, np.concatenate(parts)


def test_chunk_digests_tell_chunks_apart(stored):
    """(A crc32c over a chunk that ends with its own crc32c is one constant for all chunks.)"""
    _, m, _, _ = stored
    crcs = [d.crc32c for s in m.segments for ds in s.chunks.values() for d in ds]
    assert len(set(crcs)) == len(crcs) > 10


def test_every_chunk_and_document_has_a_digest(stored):
    fe, m, _, _ = stored
    assert m.has_digests and m.attempt_metadata is not None
    root = fe.backend.layout.attempt_dir(fe.backend.backend_key(KEY), m.attempt)
    for seg in m.segments:
        assert set(seg.metadata) == {"zarr.json", *(f"{f}/zarr.json" for f in STRAX_DTYPE.names)}
        for f in STRAX_DTYPE.names:
            assert len(seg.chunks[f]) == seg.n_chunks(f) >= 1
            for i, d in enumerate(seg.chunks[f]):
                raw = open(
                    f"{root}/{seg.name}/{f}/c/{i}" + "/0" * (STRAX_DTYPE[f].ndim), "rb"
                ).read()
                from strata.storage._zarr import object_crc32c

                assert Digest(len(raw), object_crc32c(np.frombuffer(raw, "u1"), True)) == d


@pytest.mark.parametrize(
    "lie",
    [
        lambda d: d["partitions"]["rows"].__setitem__(0, d["partitions"]["rows"][0] + 1),
        lambda d: d["segments"][0].__setitem__("rows", d["segments"][0]["rows"] + 1),
        lambda d: d["segments"][0]["chunks"]["time"]["size"].pop(),  # a digest short
        lambda d: d["segments"][0].__setitem__("name", "../s000000"),
        lambda d: d.__setitem__("attempt", "../../../../victim"),
        lambda d: d["partitions"]["segment"].__setitem__(1, "s999999"),  # a segment not listed
        lambda d: d["partitions"]["end"].__setitem__(-1, 2**70),  # not int64
        lambda d: d["partitions"]["offset"].pop(),  # a column short
        lambda d: d["segments"][0]["chunks"]["time"]["crc32c"].__setitem__(0, 1.5),  # not int
        lambda d: d["dtype"][0].__setitem__("shape", "x"),
    ],
)
def test_a_lying_manifest_is_refused_even_with_its_checksum_redone(stored, lie):
    fe, _, path, _ = stored
    path.write_bytes(edit_commit(path.read_bytes(), lie))
    with pytest.raises(DataCorrupted):
        fe.loader(KEY).to_numpy()


def test_the_checksum_rule_in_one_sentence(stored):
    """``checksum`` is ``sha256:`` + the SHA-256 of the file's bytes with those 64 hex digits
    replaced by ``0``: checked here with hashlib alone, and one flipped byte fails it.
    """
    fe, _, path, _ = stored
    raw = path.read_bytes()
    (digits,) = re.findall(rb'"checksum":"sha256:([0-9a-f]{64})"', raw)
    assert hashlib.sha256(raw.replace(digits, b"0" * 64)).hexdigest().encode() == digits
    i = raw.index(b'"writing_ended":"') + len(b'"writing_ended":"') + 3
    path.write_bytes(raw[:i] + (b"8" if raw[i : i + 1] != b"8" else b"7") + raw[i + 1 :])
    with pytest.raises(DataCorrupted, match="fails its checksum"):
        fe.loader(KEY)


def test_the_manifest_has_labelled_fields_only(stored):
    """No positional rows: the partition table and digests are named columns."""
    _, m, path, _ = stored
    body = commit_body(path.read_bytes())
    assert set(body["partitions"]) == {"start", "end", "rows", "nbytes", "segment", "offset"}
    assert body["partitions"]["rows"] == [p.rows for p in m.partitions]
    assert all(set(f) == {"name", "dtype", "shape"} for f in body["dtype"])
    seg = body["segments"][0]
    assert set(seg["chunks"]["time"]) == {"size", "crc32c"}
    assert set(body["attempt_metadata"]) == {"size", "crc32c"}


@pytest.mark.parametrize("fmt", ["strata.manifest.v1", "strata.manifest.v2"])
def test_a_manifest_of_an_earlier_format_still_reads(stored, fmt):
    fe, _, path, ref = stored
    path.with_name("manifest.json").write_bytes(legacy_manifest(path.read_bytes(), fmt))
    path.unlink()
    lazy = fe.loader(KEY)
    assert lazy.manifest.has_digests == (fmt != "strata.manifest.v1")
    assert lazy.manifest.format == fmt
    assert lazy.to_numpy().tobytes() == ref.tobytes()


def test_overwriting_a_v2_key_commits_v3_and_drops_the_old_manifest(stored):
    fe, _, path, _ = stored
    legacy = path.with_name("manifest.json")
    legacy.write_bytes(legacy_manifest(path.read_bytes()))
    path.unlink()
    parts, intervals = make_run([40, 60], seed=9)
    fe.saver(KEY, STRAX_DTYPE, overwrite=True).save(parts, intervals).compute()
    assert path.exists() and not legacy.exists()
    assert fe.loader(KEY).to_numpy().tobytes() == np.concatenate(parts).tobytes()


def test_manifest_of_100_000_chunks_opens_in_one_get():
    """A run of 100,000 chunks (1,000 segments x 10 fields x 10 chunks): the manifest size."""
    dtype = np.dtype([("time", "<i8")] + [(f"f{i}", "<f4") for i in range(9)])
    segs, parts = [], []
    for s in range(1000):
        name = f"s{s:06d}"
        chunks = {
            f: [Digest(100_000 + i, 4_000_000_000 + i) for i in range(10)] for f in dtype.names
        }
        meta = {
            "zarr.json": Digest(120, 1),
            **{f"{f}/zarr.json": Digest(400, 2) for f in dtype.names},
        }
        segs.append(Segment(name, 10_000, dict.fromkeys(dtype.names, 1000), chunks, meta))
        parts.append(
            Partition(s * 10**9, (s + 1) * 10**9, 10_000, 10_000 * dtype.itemsize, name, 0)
        )
    from strata.storage.records import dtype_to_json

    m = Manifest(
        key=KEY,
        dtype=dtype_to_json(dtype),
        arrays=array_templates(dtype, compressors("zstd")),
        attempt="a20260101T000000000000Z_000000000000",
        partitions=parts,
        segments=segs,
        writing_started="2026-01-01T00:00:00+00:00",
        writing_ended="2026-01-01T00:00:01+00:00",
        attempt_metadata=Digest(1, 1),
    )
    meta = consolidated(m)
    raw = m.to_document(meta)
    bare = len(json.dumps(m.to_dict(), separators=(",", ":")))
    print(
        f"\n[commit size] 100,000 chunks in 1,000 segments: {len(raw) / 1e6:.2f} MB "
        f"(manifest {bare / 1e6:.2f} MB, consolidated metadata of {len(meta)} nodes the rest)"
    )
    assert len(raw) < 16e6  # one GET
    back = Manifest.from_bytes(raw, "test")
    assert sum(len(d) for s in back.segments for d in s.chunks.values()) == 100_000
    assert canonical_json(back.to_dict()) == canonical_json(m.to_dict())
