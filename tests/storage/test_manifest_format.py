"""The manifest: digests of every object, structure checks, size at 100,000 chunks, v1 reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from strata.storage import DataCorrupted, DataKey, DirectoryFrontend
from strata.storage.keys import canonical_json
from strata.storage.manifest import Digest, Manifest, Partition, Segment, _checksum
from tests.helpers import STRAX_DTYPE, lineage, make_run

KEY = DataKey("run_1", "records", lineage())


def _resign(d: dict) -> bytes:
    d = dict(d)
    d.pop("checksum", None)
    d["checksum"] = _checksum(d)
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture
def stored(tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "store"), chunk_target_mb=0.05)
    parts, intervals = make_run([300, 5, 0, 700])
    m = fe.saver(KEY, STRAX_DTYPE).save(parts, intervals).compute()
    path = tmp_path / "store" / "data" / fe.backend.backend_key(KEY) / "manifest.json"
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
        lambda d: d["partitions"][0].__setitem__(2, d["partitions"][0][2] + 1),  # rows
        lambda d: d["segments"][0].__setitem__("rows", d["segments"][0]["rows"] + 1),
        lambda d: d["segments"][0]["chunks"]["time"].pop(),  # a digest short
        lambda d: d["segments"][0].__setitem__("name", "../s000000"),
        lambda d: d.__setitem__("attempt", "../../../../victim"),
        lambda d: d["partitions"][1].__setitem__(4, "s999999"),  # a segment not listed
        lambda d: d["partitions"][-1].__setitem__(1, 2**70),  # not int64
    ],
)
def test_a_lying_manifest_is_refused_even_with_its_checksum_redone(stored, lie):
    fe, _, path, _ = stored
    d = json.loads(path.read_bytes())
    lie(d)
    path.write_bytes(_resign(d))
    with pytest.raises(DataCorrupted):
        fe.loader(KEY).to_numpy()


def test_a_format_v1_manifest_still_reads(stored):
    fe, _, path, ref = stored
    d = json.loads(path.read_bytes())
    d["format"] = "strata.manifest.v1"
    for k in ("partition_columns", "attempt_metadata"):
        d.pop(k)
    for seg in d["segments"]:
        seg.pop("chunks")
        seg.pop("metadata")
    path.write_bytes(_resign(d))
    lazy = fe.loader(KEY)
    assert not lazy.manifest.has_digests
    assert lazy.to_numpy().tobytes() == ref.tobytes()


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
        arrays={f: {"codecs": []} for f in dtype.names},
        attempt="a20260101T000000000000Z_000000000000",
        partitions=parts,
        segments=segs,
        writing_started="2026-01-01T00:00:00+00:00",
        writing_ended="2026-01-01T00:00:01+00:00",
        attempt_metadata=Digest(1, 1),
    )
    raw = m.to_bytes()
    print(f"\n[manifest size] 100,000 chunks in 1,000 segments: {len(raw) / 1e6:.2f} MB")
    assert len(raw) < 8e6  # one GET
    back = Manifest.from_bytes(raw, "test")
    assert sum(len(d) for s in back.segments for d in s.chunks.values()) == 100_000
    assert canonical_json(back.to_dict()) == canonical_json(m.to_dict())
