"""The write path's own encoder and its writes in flight: the same bytes as zarr's pipeline,
exact data, a commit that refuses when an object it names is gone, and nothing left behind.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import zarr

from strata.storage import DataKey, DirectoryFrontend, _zarr
from strata.storage.backends.zarr.arrays import SegmentDocuments, array_templates
from strata.storage.backends.zarr.encode import encoder_for
from strata.storage.backends.zarr.pending import PendingWrites
from strata.storage.codecs import PRESETS, compressors
from strata.storage.commit import AttemptMissing
from strata.storage.manifest import Segment
from tests.helpers import STRAX_DTYPE, lineage, make_run

KEY = DataKey("run_1", "records", lineage("records", threshold=14))

FIELD_DTYPE = np.dtype(
    [
        ("time", "<i8"),
        ("big", ">i4"),
        ("data", "<f4", (7,)),
        ("flag", "?"),
        ("u8", "u1"),
        ("name", "U3"),
    ]
)


def _zarr_bytes(template: dict, rows: np.ndarray, chunk_rows: int) -> bytes:
    meta = _zarr.metadata_from_dict(
        {
            **template,
            "shape": [chunk_rows, *rows.shape[1:]],
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": [chunk_rows, *rows.shape[1:]]},
            },
        }
    )
    arr = _zarr.writable_array(zarr.storage.MemoryStore(), "a", meta)
    buf = _zarr.run(_zarr.encode_chunk(arr, 0, np.ascontiguousarray(rows)))
    return bytes(buf.to_bytes())


@pytest.mark.parametrize("preset", ["blosc", "blosc-lz4", "zstd", "zstd-1", "none"])
@pytest.mark.parametrize("rows", [50, 37], ids=["whole", "edge"])
def test_encoder_writes_the_bytes_zarr_writes(preset, rows):
    from strata.storage.backends.zarr.dtypes import is_mapped, to_storage

    rng = np.random.default_rng(1)
    data = np.zeros(50, FIELD_DTYPE)
    data["time"] = np.cumsum(rng.integers(1, 9, 50))
    data["big"] = rng.integers(-(2**30), 2**30, 50)
    data["data"] = rng.normal(size=(50, 7))
    data["flag"] = rng.integers(0, 2, 50).astype(bool)
    data["u8"] = rng.integers(0, 255, 50)
    data["name"] = ["ab", "xyz", ""] * 16 + ["a", "b"]
    templates = array_templates(FIELD_DTYPE, [*compressors(preset), zarr.codecs.Crc32cCodec()])
    for f in FIELD_DTYPE.names:
        enc = encoder_for(templates[f])
        assert enc is not None, (preset, f)
        col = data[f][:rows]  # a strided view out of the records
        if is_mapped(templates[f]):
            col = to_storage(np.ascontiguousarray(col), FIELD_DTYPE[f].base)
        ours = enc.encode(col, 50)
        assert ours == _zarr_bytes(templates[f], col, 50), (preset, f)


@pytest.mark.parametrize(
    "preset", [p.replace("-N", "-5") for p in PRESETS] + [zarr.codecs.GzipCodec(level=1)], ids=str
)
def test_segment_documents_are_what_zarr_writes(preset):
    """The documents a save writes (zarr normalises one per field, the numbers of shape and
    chunks go in) are byte for byte what zarr writes for each segment's metadata, sharded or
    not, and name the chunk keys zarr would use.
    """
    from strata.storage.backends.zarr.arrays import _with_shape, stored_shape

    templates = array_templates(FIELD_DTYPE, [*compressors(preset), zarr.codecs.Crc32cCodec()])
    docs = SegmentDocuments(templates, FIELD_DTYPE)
    names = list(FIELD_DTYPE.names or ())
    for rows, chunk_rows, shard in [
        (0, 1, 1),
        (1, 1, 1),
        (37, 10, 1),
        (9360, 9360, 7),
        (65_520, 9360, 7),
        (100, 7, 3),
    ]:
        seg = Segment(
            "s000001",
            rows,
            dict.fromkeys(names, chunk_rows),
            shard_chunks=dict.fromkeys(names, shard) if shard > 1 else {},
        )
        for f in names:
            tpl = templates[f]
            meta = _zarr.metadata_from_dict(
                _with_shape(tpl, rows, chunk_rows, stored_shape(tpl, FIELD_DTYPE[f]), shard)
            )
            want = _zarr.metadata_buffers(meta)["zarr.json"].to_bytes()
            assert docs.document_bytes(seg, f) == want, (preset, f, rows, chunk_rows, shard)
            for i in (0, 1, 12):
                assert docs.chunk_key(f, i) == str(
                    meta.encode_chunk_key((i, *[0] * (len(meta.shape) - 1)))
                )


def test_encoder_leaves_other_chains_to_zarr():
    chain = [zarr.codecs.GzipCodec(level=1), zarr.codecs.Crc32cCodec()]
    templates = array_templates(STRAX_DTYPE, chain)
    assert all(encoder_for(t) is None for t in templates.values())


def test_pending_writes_raise_the_first_failure_and_bound_bytes():
    writes = PendingWrites(2, max_bytes=10)

    async def fail() -> None:
        raise OSError("disk full")

    async def ok() -> None:
        return None

    writes.submit(ok(), 8)
    writes.submit(fail(), 8)  # waits for the first: 16 bytes would exceed 10
    with pytest.raises(OSError, match="disk full"):
        writes.wait()
    writes.wait()  # reported once
    with pytest.raises(ValueError, match="at least 1"):
        PendingWrites(0, 10)


def test_dask_save_with_writes_in_flight_is_exact(tmp_path):
    fe = DirectoryFrontend(str(tmp_path), chunk_target_mb=0.05)
    parts, intervals = make_run([700, 0, 1300, 30, 30, 900], seed=5)
    with dask.config.set(scheduler="threads", num_workers=3):
        fe.saver(KEY, STRAX_DTYPE).save(parts, intervals).compute()
    got = fe.loader(KEY).to_numpy()
    np.testing.assert_array_equal(got, np.concatenate(parts))
    report = fe.backend.verify(fe.find(KEY).backend_key)
    assert report.problems == [] and report.objects > 10  # every size and crc32c as recorded


def test_commit_refuses_when_a_named_object_vanished(tmp_path):
    fe = DirectoryFrontend(str(tmp_path), chunk_target_mb=0.05)
    parts, intervals = make_run([600, 600], seed=6)
    saver = fe.saver(KEY, STRAX_DTYPE)
    for p, (s, e) in zip(parts, intervals, strict=True):
        saver.save_partition(p, s, e)
    attempt = tmp_path / "data" / "run_1" / saver.backend_key.split("/")[1] / saver.attempt
    chunk = next(p for p in sorted(attempt.rglob("*")) if p.is_file() and "/c/" in str(p))
    chunk.unlink()  # one chunk of the attempt is gone; its segment folder is still there
    with pytest.raises(AttemptMissing, match="chunk"):
        saver.close()
    assert not fe.is_stored(KEY)


def test_checked_absent_saver_never_replaces_what_is_stored(tmp_path):
    """``checked_absent=True`` skips only the early existence check: a saver told so while
    the key is in fact stored still cannot replace it (its commit raises, the stored data
    reads back unchanged and its attempt is gone)."""
    from strata.storage import DataExistsError

    fe = DirectoryFrontend(str(tmp_path), chunk_target_mb=0.05)
    parts, intervals = make_run([500, 400], seed=7)
    fe.saver(KEY, STRAX_DTYPE).save(parts, intervals).compute()
    with pytest.raises(DataExistsError):
        fe.saver(KEY, STRAX_DTYPE)  # the early check
    other, _ = make_run([500, 400], seed=8)
    saver = fe.saver(KEY, STRAX_DTYPE, checked_absent=True)
    with pytest.raises(DataExistsError):
        saver.save(other, intervals).compute()
    np.testing.assert_array_equal(fe.loader(KEY).to_numpy(), np.concatenate(parts))
    key_dir = tmp_path / "data" / "run_1" / saver.backend_key.split("/")[1]
    assert not (key_dir / saver.attempt).exists()


def test_prechecked_saver_still_refuses_another_dtype(tmp_path):
    """A saver whose partitions were validated by its caller still checks dtype and shape."""
    fe = DirectoryFrontend(str(tmp_path), chunk_target_mb=0.05)
    parts, intervals = make_run([50], seed=9)
    saver = fe.saver(KEY, STRAX_DTYPE)
    saver.prechecked = True
    wrong = parts[0].astype(
        [(n, "<f8") if n == "area" else (n, STRAX_DTYPE[n]) for n in STRAX_DTYPE.names]
    )
    with pytest.raises(ValueError, match="dtype"):
        saver.save([wrong], intervals).compute()
    assert not fe.is_stored(KEY)


def test_backend_templates_are_made_once_and_handed_out_as_copies(tmp_path):
    backend = DirectoryFrontend(str(tmp_path)).backend
    first = backend.array_templates(FIELD_DTYPE)
    assert first == array_templates(FIELD_DTYPE, backend.compressors)
    first["time"]["fill_value"] = 99  # a caller's change stays its own
    again = backend.array_templates(FIELD_DTYPE)
    assert again["time"]["fill_value"] == 0
    described = backend.array_templates(FIELD_DTYPE, descriptions={"time": "ns since epoch"})
    assert described["time"]["attributes"]["description"] == "ns since epoch"
    assert "description" not in backend.array_templates(FIELD_DTYPE)["time"]["attributes"]
    other = DirectoryFrontend(str(tmp_path / "z"), compressor="zstd").backend
    assert other.array_templates(FIELD_DTYPE)["time"]["codecs"] != again["time"]["codecs"]


def test_encoding_pool_keeps_order_bounds_lookahead_and_raises_in_place():
    from strata.storage.backends.zarr.encode import _pool, in_order

    pulled = []

    def jobs(n, bad=None):
        for i in range(n):
            pulled.append(i)

            def job(i=i):
                if i == bad:
                    raise ValueError(f"job {i}")
                return i * i

            yield job

    assert list(in_order(jobs(50))) == [i * i for i in range(50)]
    assert list(in_order(jobs(7), parallel=False)) == [i * i for i in range(7)]
    pulled.clear()
    gen = in_order(jobs(100))
    assert next(gen) == 0
    ahead = 2 * _pool()[1]
    assert len(pulled) == ahead + 1  # the first `ahead`, then one more as the first is taken
    gen.close()  # the consumer stops: nothing more is taken from the jobs
    assert len(pulled) == ahead + 1
    gen = in_order(jobs(20, bad=5))
    assert [next(gen) for _ in range(5)] == [0, 1, 4, 9, 16]
    with pytest.raises(ValueError, match="job 5"):
        next(gen)
