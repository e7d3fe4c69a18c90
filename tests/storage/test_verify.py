"""``strata verify`` and ``verify()``: every object a commit names is checked against its
manifest; each kind of damage is a problem naming key, array and chunk, and exit status 1.

Damage is done out of band, on the store's files, with the layout spelled out here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.pipeline.cli import main
from strata.storage import (
    DataKey,
    DirectoryFrontend,
    KeyReport,
    StorageBackend,
    StorageError,
    ZarrBackend,
    verify,
)
from tests.helpers import STRAX_DTYPE, edit_commit, legacy_manifest, lineage, make_run
from tests.stores import FsOutOfBand

V1 = "strata.manifest.v1"

CHUNK_MB = 0.25  # 1000 rows: one chunk of each scalar field, two of `data` (110 floats)


def _key(data_type: str, run_id: str = "run_1") -> DataKey:
    return DataKey(run_id, data_type, lineage(data_type))


def _save(fe, key: DataKey, sizes=(1000, 1000)) -> None:
    parts, intervals = make_run(list(sizes), seed=1)
    fe.saver(key, STRAX_DTYPE).save(parts, intervals).compute()


@pytest.fixture
def url(tmp_path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def fe(url) -> DirectoryFrontend:
    """Two keys of run_1 (``a``, ``b``), each of two segments of 1000 rows."""
    # one object per chunk: the counts below are of chunk files (shards: test_shards)
    fe = DirectoryFrontend(url, chunk_target_mb=CHUNK_MB, shard_target_mb=0)
    for dt in ("a", "b"):
        _save(fe, _key(dt))
    return fe


def _bk(key: DataKey) -> str:
    return f"{key.run_id}/{key.name}"


def _attempt_dir(url: str, key: DataKey) -> Path:
    (attempt,) = [p for p in (Path(url) / "data" / _bk(key)).iterdir() if p.is_dir()]
    return attempt


def _manifest_path(url: str, key: DataKey) -> Path:
    return Path(url) / "data" / _bk(key) / "zarr.json"


def _edit_manifest(url: str, key: DataKey, edit) -> None:
    """Edit the stored manifest of ``key`` and store it with a recomputed checksum."""
    path = _manifest_path(url, key)
    path.write_bytes(edit_commit(path.read_bytes(), edit))


def _cli(url: str, *args: str):
    return CliRunner().invoke(main, ["verify", *args, "-s", url])


def _report(reports: list[KeyReport], key: DataKey) -> KeyReport:
    (r,) = [r for r in reports if r.backend_key == _bk(key)]
    return r


# -- a clean store ------------------------------------------------------------------------------
def test_clean_store_is_ok_and_every_object_is_read(fe, url):
    calls = []
    reports = verify(url, progress=lambda done, total: calls.append((done, total)))
    assert [r.backend_key for r in reports] == [_bk(_key("a")), _bk(_key("b"))]
    assert all(r.ok and not r.problems and not r.notes for r in reports)
    assert calls[-1] == (2, 2)
    # every object of the attempt but the lease, and exactly their bytes
    files = [p for p in _attempt_dir(url, _key("a")).rglob("*") if p.is_file()]
    files = [p for p in files if p.name != "strata.lease"]
    r = _report(reports, _key("a"))
    assert r.key == _key("a")
    assert r.objects == len(files) == 29
    assert r.bytes_read == sum(p.stat().st_size for p in files)

    res = _cli(url)
    assert res.exit_code == 0, res.output
    assert "intact" in res.output and "damaged" in res.output
    assert "damaged key" not in res.output


def test_run_and_target_select_keys(fe, url):
    _save(fe, _key("a", run_id="run_2"), sizes=(10,))
    assert {r.backend_key for r in verify(url, target="a")} == {
        _bk(_key("a")),
        _bk(_key("a", run_id="run_2")),
    }
    assert [r.backend_key for r in verify(url, "run_1", "a")] == [_bk(_key("a"))]
    assert verify(url, "run_3") == []
    res = _cli(url, "run_3")
    assert res.exit_code == 0 and "nothing stored" in res.output


def test_a_backend_verifies_one_key(fe, url):
    backend = ZarrBackend(url)
    assert backend.supports_verify
    r = backend.verify(_bk(_key("b")))
    assert r.ok and r.key == _key("b") and r.objects == 29


# -- damage -------------------------------------------------------------------------------------
def test_deleted_chunk(fe, url):
    chunk = _attempt_dir(url, _key("a")) / "s000000" / "data" / "c" / "1" / "0"
    chunk.unlink()
    a, b = verify(url)
    assert not a.ok and b.ok
    (problem,) = a.problems
    assert "chunk 1 of array 'data' in segment s000000 is missing" in problem
    res = _cli(url)
    assert res.exit_code == 1
    assert f"{_bk(_key('a'))}: chunk 1 of array 'data' in segment s000000 is missing" in res.output
    assert _bk(_key("b")) + ":" not in res.output


def test_flipped_bit(fe, url):
    chunk = _attempt_dir(url, _key("b")) / "s000000" / "channel" / "c" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # size and trailing checksum (the digest) unchanged
    chunk.write_bytes(bytes(raw))
    (problem,) = _report(verify(url), _key("b")).problems
    assert "chunk 0 of array 'channel' in segment s000000 fails its own crc32c" in problem
    res = _cli(url)
    assert res.exit_code == 1 and f"{_bk(_key('b'))}: chunk 0 of array 'channel'" in res.output


def test_truncated_chunk(fe, url):
    chunk = _attempt_dir(url, _key("a")) / "s000001" / "area" / "c" / "0"
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[: len(raw) // 2])
    (problem,) = _report(verify(url), _key("a")).problems
    assert "chunk 0 of array 'area' in segment s000001" in problem
    assert f"{len(raw) // 2:,} bytes" in problem and f"says {len(raw):,} bytes" in problem
    assert "fails its own crc32c" in problem
    res = _cli(url, "run_1", "a")
    assert res.exit_code == 1 and "chunk 0 of array 'area' in segment s000001" in res.output


def _swap(attempt: Path, field: str) -> tuple[bytes, bytes]:
    one, two = (attempt / s / field / "c" / "0" for s in ("s000000", "s000001"))
    raw_one, raw_two = one.read_bytes(), two.read_bytes()
    assert raw_one != raw_two
    one.write_bytes(raw_two)
    two.write_bytes(raw_one)
    return raw_one, raw_two


def test_chunks_swapped_between_segments(fe, url):
    raw_one, raw_two = _swap(_attempt_dir(url, _key("a")), "area")
    assert len(raw_one) != len(raw_two)
    problems = _report(verify(url), _key("a")).problems
    assert len(problems) == 2
    for seg, p in zip(("s000000", "s000001"), problems, strict=True):
        assert f"chunk 0 of array 'area' in segment {seg} is not the object" in p
        assert "swapped" in p  # each chunk is intact in itself: only the manifest tells
    res = _cli(url)
    assert res.exit_code == 1 and "array 'area' in segment s000001" in res.output


def test_chunks_of_one_size_swapped_between_segments(fe, url):
    raw_one, raw_two = _swap(_attempt_dir(url, _key("a")), "time")
    assert len(raw_one) == len(raw_two)
    problems = _report(verify(url), _key("a")).problems
    assert len(problems) == 2
    assert all("array 'time'" in p and "swapped" in p for p in problems)


def test_deleted_segment_is_one_problem(fe, url):
    shutil.rmtree(_attempt_dir(url, _key("b")) / "s000001")
    (problem,) = _report(verify(url), _key("b")).problems
    assert problem.startswith("segment s000001 is missing: none of its 14 objects exist")
    res = _cli(url)
    assert res.exit_code == 1 and f"{_bk(_key('b'))}: segment s000001 is missing" in res.output


def test_deleted_attempt_is_one_problem(fe, url):
    attempt = _attempt_dir(url, _key("a"))
    shutil.rmtree(attempt)
    (problem,) = _report(verify(url), _key("a")).problems
    assert problem.startswith(f"attempt {attempt.name} is missing")


def test_manifest_edited_with_recomputed_checksum(fe, url):
    # a digest the stored chunk does not have: the manifest still parses
    def edit(doc):
        doc["segments"][1]["chunks"]["channel"]["crc32c"][0] ^= 0x5A5A

    _edit_manifest(url, _key("a"), edit)
    (problem,) = _report(verify(url), _key("a")).problems
    assert "chunk 0 of array 'channel' in segment s000001 is not the object" in problem
    assert _cli(url).exit_code == 1


def test_manifest_edited_against_its_structure(fe, url):
    def edit(doc):
        doc["partitions"]["rows"][0] += 1  # rows that its segment does not hold

    _edit_manifest(url, _key("b"), edit)
    a, b = verify(url)
    assert a.ok and not b.ok and b.key is None
    (problem,) = b.problems
    assert problem.startswith("manifest:") and "partition 0" in problem
    res = _cli(url)
    assert res.exit_code == 1 and f"{_bk(_key('b'))}: manifest:" in res.output


def test_damaged_manifest_among_good_keys(fe, url):
    _save(fe, _key("c"))
    _manifest_path(url, _key("b")).write_bytes(b'{"zarr_format": 3, "attributes": {"str')
    reports = verify(url)
    assert [r.ok for r in reports] == [True, False, True]  # a, b, c: the others still verified
    assert all(r.objects == 29 for r in reports if r.ok)
    (problem,) = _report(reports, _key("b")).problems
    assert "not valid JSON" in problem
    res = _cli(url)
    assert res.exit_code == 1
    assert f"{_bk(_key('b'))}: manifest:" in res.output and "1 damaged key(s)" in res.output


def test_uncommitted_key_directory_is_not_a_problem(fe, url):
    _manifest_path(url, _key("a")).unlink()  # a key directory whose save never committed
    assert [r.backend_key for r in verify(url)] == [_bk(_key("b"))]


def test_catalog_entry_without_commit(tmp_path):
    pytest.importorskip("sqlalchemy")
    from strata.storage.frontends.sql import SQLFrontend

    data = tmp_path / "data_store"
    fe = SQLFrontend(f"sqlite:///{tmp_path}/catalog.db", data_url=str(data), chunk_target_mb=1)
    _save(fe, _key("a"))
    _save(fe, _key("b"))
    _manifest_path(str(data), _key("a")).unlink()
    a, b = fe.verify()
    assert b.ok and b.backend == "data"
    (problem,) = a.problems
    assert "catalog lists it" in problem


def test_many_problems_are_printed_up_to_the_limit(fe, url):
    for seg in ("s000000", "s000001"):
        for f in ("time", "area", "channel"):
            (_attempt_dir(url, _key("a")) / seg / f / "c" / "0").unlink()
    assert len(_report(verify(url), _key("a")).problems) == 6
    res = _cli(url, "--max-problems", "2")
    assert res.exit_code == 1
    assert res.output.count(f"{_bk(_key('a'))}: chunk 0") == 2
    assert "and 4 more problem(s)" in res.output


# -- format v1: no digests ----------------------------------------------------------------------
def _as_v1(url: str, key: DataKey) -> None:
    """Replace the commit of ``key`` with a format v1 ``manifest.json`` of the same content."""
    path = _manifest_path(url, key)
    path.with_name("manifest.json").write_bytes(legacy_manifest(path.read_bytes(), V1))
    path.unlink()


def test_v1_manifest_is_a_note_not_a_failure(fe, url):
    _as_v1(url, _key("a"))
    r = _report(verify(url), _key("a"))
    assert r.ok and r.objects == 29
    (note,) = r.notes
    assert "no digests (format v1)" in note
    res = _cli(url)
    assert res.exit_code == 0 and "no digests (format v1)" in res.output


def test_v1_manifest_checks_each_chunks_own_crc32c(fe, url):
    _as_v1(url, _key("a"))
    chunk = _attempt_dir(url, _key("a")) / "s000000" / "area" / "c" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    (_attempt_dir(url, _key("a")) / "s000001" / "data" / "c" / "0" / "0").unlink()
    problems = _report(verify(url), _key("a")).problems
    assert len(problems) == 2
    assert "chunk 0 of array 'area' in segment s000000 fails its own crc32c" in problems[0]
    assert "chunk 0 of array 'data' in segment s000001 is missing" in problems[1]
    assert _cli(url).exit_code == 1


def test_v1_manifest_checks_array_rows(fe, url):
    _as_v1(url, _key("a"))
    meta = _attempt_dir(url, _key("a")) / "s000001" / "time" / "zarr.json"
    doc = json.loads(meta.read_bytes())
    doc["shape"] = [999]
    meta.write_text(json.dumps(doc))
    (problem,) = _report(verify(url), _key("a")).problems
    assert "zarr.json of array 'time' in segment s000001 describes 999 rows" in problem


# -- capabilities -------------------------------------------------------------------------------
class _NoVerify(ZarrBackend):
    """A backend that does not offer verification (the base class's default)."""

    supports_verify = False
    verify = StorageBackend.verify


def test_a_backend_that_cannot_verify(tmp_path, url, fe):
    pytest.importorskip("sqlalchemy")
    from strata.storage.frontends.sql import SQLFrontend

    with pytest.raises(StorageError, match="supports_verify"):
        _NoVerify(url).verify(_bk(_key("a")))
    cat = SQLFrontend(f"sqlite:///{tmp_path}/cat.db", backends={"plain": _NoVerify(url)})
    reports = cat.verify()
    assert len(reports) == 2  # found by listing the backend, not by the (empty) catalog
    assert all(not r.ok and "not verified" in r.problems[0] for r in reports)


# -- S3 -----------------------------------------------------------------------------------------
def test_s3(s3_url, s3_options):
    fe = DirectoryFrontend(
        s3_url, storage_options=s3_options, chunk_target_mb=CHUNK_MB, shard_target_mb=0
    )
    _save(fe, _key("a"))
    _save(fe, _key("b"))
    reports = verify(s3_url, storage_options=s3_options)
    assert [r.ok for r in reports] == [True, True]
    assert all(r.objects == 29 and r.bytes_read > 0 for r in reports)
    oob = FsOutOfBand(s3_url, s3_options)
    attempt = fe.get_metadata(_key("a")).attempt
    oob.fs.rm_file(oob.path(_bk(_key("a")), attempt, "s000001", "length", "c", "0"))
    a, b = verify(s3_url, storage_options=s3_options)
    assert b.ok
    (problem,) = a.problems
    assert "chunk 0 of array 'length' in segment s000001 is missing" in problem
    assert f"data/{_bk(_key('a'))}/{attempt}/s000001/length/c/0" in problem


def test_tight_bounds_still_check_everything(fe, url, monkeypatch):
    from strata.storage.backends.zarr import verify as v

    # one object at a time, a byte budget smaller than any chunk, one segment per batch
    monkeypatch.setattr(v, "IN_FLIGHT_OBJECTS", 1)
    monkeypatch.setattr(v, "IN_FLIGHT_BYTES", 100)
    monkeypatch.setattr(v, "BATCH_OBJECTS", 1)
    (_attempt_dir(url, _key("b")) / "s000001" / "dt" / "c" / "0").unlink()
    a, b = verify(url)
    assert a.ok and a.objects == 29 and b.objects == 29
    (problem,) = b.problems
    assert "chunk 0 of array 'dt' in segment s000001 is missing" in problem
