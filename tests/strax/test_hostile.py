"""Damaged and hostile strax directories: edited metadata, truncated, swapped, missing and
bomb chunk files, path-escaping names, evaluable dtypes. Each ends in exact data or an error
naming the key (and the chunk), never in wrong numbers."""

from __future__ import annotations

import bz2
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from strata.storage import DataCorrupted, DataNotAvailable
from tests.strax.conftest import StraxData
from tests.strax.spec import COMPRESSORS, ROWS


def paths(data: StraxData, data_type: str) -> tuple[str, Path, Path]:
    """(folder, metadata file, folder path) of the ``r1`` key of ``data_type``."""
    folder = data.folder("r1", data_type)
    prefix = folder.split("-", 1)[1]
    return folder, data.path / folder / f"{prefix}-metadata.json", data.path / folder


def chunk_file(data: StraxData, data_type: str, i: int) -> Path:
    folder, _, d = paths(data, data_type)
    return d / f"{folder.split('-', 1)[1]}-{i:06d}"


def edit(data: StraxData, data_type: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the metadata of ``data_type`` with ``change`` applied (as strax writes it)."""
    _, md, _ = paths(data, data_type)
    doc = json.loads(md.read_text())
    change(doc)
    md.write_text(json.dumps(doc, sort_keys=True, indent=4))


def load(data: StraxData, data_type: str) -> np.ndarray:
    return data.frontend().loader(data.key("r1", data_type)).to_numpy()


def load_dask(data: StraxData, data_type: str) -> np.ndarray:
    return data.frontend().loader(data.key("r1", data_type)).array.compute()


# -- edited metadata --------------------------------------------------------------------------
def test_more_rows_than_the_file_holds(strax_data):
    # n and nbytes edited together: consistent metadata, so the chunk read is what refuses
    def more(doc: dict[str, Any]) -> None:
        c = doc["chunks"][0]
        c["nbytes"] = c["nbytes"] // c["n"] * (c["n"] + 1)
        c["n"] += 1

    edit(strax_data, "records_blosc", more)
    folder, _, _ = paths(strax_data, "records_blosc")
    lazy = strax_data.frontend().loader(strax_data.key("r1", "records_blosc"))
    assert len(lazy) == sum(ROWS) + 1  # what the metadata claims ...
    pattern = rf"{folder}\): chunk 0 \(records_blosc-\w+-000000\)"
    with pytest.raises(DataCorrupted, match=pattern):  # ... is never returned
        lazy.to_numpy()
    with pytest.raises(DataCorrupted, match=pattern):
        lazy.array.compute()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["chunks"][0].update(n=6), "nbytes"),
        (lambda d: d["chunks"][1].update(start=d["chunks"][1]["start"] + 1), "contiguous"),
        (lambda d: d["chunks"][1].update(end=d["chunks"][1]["start"] - 1), "before its start"),
        (lambda d: d["chunks"][0].update(n=-1, nbytes=0), "n is -1"),
        (lambda d: d["chunks"][0].update(n=True), "n is True"),
        (lambda d: d["lineage"]["records_lz4"][2].update(gain=3.0), "hashes to"),
        (lambda d: d.update(lineage_hash="aaaaaaaaaa"), "lineage_hash field 'aaaaaaaaaa'"),
        (lambda d: d.update(data_type="records_zstd"), "is not the folder's"),
        (lambda d: d.update(run_id="r2"), "is not the folder's 'r1'"),
        (lambda d: d.update(compressor="gzip"), "compressor 'gzip'"),
        (lambda d: d.pop("dtype"), r"lacks \['dtype'\]"),
        (lambda d: d.update(chunks={"0": {}}), "chunks is not a list"),
        (lambda d: d["chunks"][0].update(run_id="r2"), "run_id 'r2'"),
    ],
)
def test_inconsistent_metadata_is_refused(strax_data, change, message):
    edit(strax_data, "records_lz4", change)
    folder, _, _ = paths(strax_data, "records_lz4")
    fe = strax_data.frontend()
    with pytest.raises(DataCorrupted, match=message) as e:
        fe.backend.get_metadata(folder)
    assert folder in str(e.value)
    assert folder not in {x.location.backend_key for x in fe.list()}  # listing goes on ...
    assert any(folder in s for s in fe.skipped)  # ... and names it
    assert len(fe.list()) == len(strax_data.expected["keys"]) - 1


def test_superrun_and_unfinished_saves_are_not_available(strax_data):
    folder, _, _ = paths(strax_data, "records_zstd")
    edit(strax_data, "records_zstd", lambda d: d.update(run_id="_sr1"))
    with pytest.raises(DataNotAvailable, match="superrun"):
        strax_data.frontend().backend.get_metadata(folder)
    edit(strax_data, "records_zstd", lambda d: (d.update(run_id="r1"), d.pop("writing_ended")))
    with pytest.raises(DataNotAvailable, match="never finished"):
        strax_data.frontend().backend.get_metadata(folder)


@pytest.mark.parametrize(
    "dtype",
    [
        "__import__('pathlib').Path('{marker}').touch()",
        "[(('t', 'time'), '<i8')] if open('{marker}', 'w') else []",
        "[('time', '<i8'), ('obj', '|O')]",
        "[('time', '<i8'), ('big', '<f4', (1000000000000,))]",
        "[('time', '<i8'), ('x', 'not a type')]",
        "[('time', '<i8'), ('x', '<f4', 'abc')]",
        "[('time', '<i4')]",
        "[('time', '<i8'), ('time', '<i8')]",
        "[('time', '<i8'), ('../x', '<i8')]",
        "[]",
        "{{'time': '<i8'}}",
        "[" * 5000 + "]" * 5000,
        "[('time', '<i8')]" + " " * (2**20),
    ],
)
def test_dtype_is_parsed_never_evaluated(strax_data, tmp_path, dtype):
    marker = tmp_path / "evaluated"
    edit(strax_data, "records_zstd", lambda d: d.update(dtype=dtype.format(marker=marker)))
    folder, _, _ = paths(strax_data, "records_zstd")
    with pytest.raises(DataCorrupted, match=rf"{folder}.*: dtype"):
        strax_data.frontend().backend.get_metadata(folder)
    assert not marker.exists()


def test_a_dtype_with_another_layout_is_refused(strax_data):
    # area float32 -> float64: every chunk's nbytes stops matching n * itemsize
    edit(
        strax_data,
        "records_bz2",
        lambda d: d.update(dtype=d["dtype"].replace("'<f4'),", "'<f8'),", 1)),
    )
    folder, _, _ = paths(strax_data, "records_bz2")
    with pytest.raises(DataCorrupted, match="nbytes"):
        strax_data.frontend().backend.get_metadata(folder)


@pytest.mark.parametrize(
    "name",
    [
        "../../../../etc/passwd",
        "/etc/passwd",
        "{prefix}-000000/../../{prefix}-000000",
        "{prefix}-metadata.json",
        "{prefix}-000000\x00",
        "{prefix}-1",
        "{prefix}-0000001234",
        "",
        None,
        7,
    ],
)
def test_chunk_file_names_cannot_escape(strax_data, name):
    folder, _, _ = paths(strax_data, "records_blosc")
    prefix = folder.split("-", 1)[1]
    bad = name.format(prefix=prefix) if isinstance(name, str) else name
    edit(strax_data, "records_blosc", lambda d: d["chunks"][0].update(filename=bad))
    with pytest.raises(DataCorrupted, match=r"chunk 0: chunk file name"):
        strax_data.frontend().backend.get_metadata(folder)


def test_a_file_named_by_two_chunks_is_refused(strax_data):
    def twice(doc: dict[str, Any]) -> None:
        doc["chunks"][3]["filename"] = doc["chunks"][0]["filename"]

    edit(strax_data, "records_blosc", twice)
    folder, _, _ = paths(strax_data, "records_blosc")
    with pytest.raises(DataCorrupted, match="named by two chunks"):
        strax_data.frontend().backend.get_metadata(folder)


def test_damaged_metadata_files(strax_data):
    folder, md, _ = paths(strax_data, "sums")
    md.write_bytes(md.read_bytes()[:100])
    with pytest.raises(DataCorrupted, match="not valid JSON"):
        strax_data.frontend().backend.get_metadata(folder)
    md.write_text("[" * 100 + "]" * 100)
    with pytest.raises(DataCorrupted, match="nested deeper"):
        strax_data.frontend().backend.get_metadata(folder)
    md.write_text("[1, 2]")
    with pytest.raises(DataCorrupted, match="not a JSON object"):
        strax_data.frontend().backend.get_metadata(folder)
    md.unlink()
    with pytest.raises(DataNotAvailable):
        strax_data.frontend().backend.get_metadata(folder)


# -- damaged chunk files ----------------------------------------------------------------------
@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("drop_filesize", [False, True])
def test_truncated_chunk(strax_data, compressor, drop_filesize):
    data_type = f"records_{compressor}"
    if drop_filesize:  # strax records no filesize when it saves through an executor
        edit(strax_data, data_type, lambda d: [c.pop("filesize", None) for c in d["chunks"]])
    f = chunk_file(strax_data, data_type, 3)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    folder, _, _ = paths(strax_data, data_type)
    pattern = rf"{folder}\): chunk 3 \({data_type}-\w+-000003\)"
    with pytest.raises(DataCorrupted, match=pattern):
        load(strax_data, data_type)
    with pytest.raises(DataCorrupted, match=pattern):
        load_dask(strax_data, data_type)
    # the chunks before it still read exactly
    fe = strax_data.frontend()
    got = fe.loader(strax_data.key("r1", data_type), time_range=(0, 2000)).to_numpy()
    want = strax_data.array("r1", data_type)
    assert got.tobytes() == want[want["time"] < 2000].tobytes()


@pytest.mark.parametrize(
    "forget", [(), ("filesize",), ("filesize", "first_time", "last_time", "last_endtime")]
)
@pytest.mark.parametrize("compressor", ["blosc", "zstd"])
def test_swapped_chunk_files(strax_data, compressor, forget):
    # chunks 0 and 3 have as many rows: only sizes, recorded times or chunk bounds tell them apart
    data_type = f"records_{compressor}"
    edit(strax_data, data_type, lambda d: [c.pop(k, None) for c in d["chunks"] for k in forget])
    a, b = chunk_file(strax_data, data_type, 0), chunk_file(strax_data, data_type, 3)
    ra, rb = a.read_bytes(), b.read_bytes()
    a.write_bytes(rb)
    b.write_bytes(ra)
    # which check sees it: the file's size, else the recorded times, else the chunk's bounds
    why = {0: "recorded|first_time", 1: "first_time", 4: "outside the chunk"}[len(forget)]
    with pytest.raises(DataCorrupted, match=rf"chunk [03] .*({why})"):
        load(strax_data, data_type)
    with pytest.raises(DataCorrupted, match=rf"chunk [03] .*({why})"):
        load_dask(strax_data, data_type)


def test_a_foreign_chunk_with_the_same_times_and_size_is_what_no_check_sees(strax_data):
    # r2's records_blosc has r1's times and sizes (only gain differs) and strax keeps no
    # checksums of values: the documented limit of reading strax data in place
    edit(strax_data, "records_blosc", lambda d: [c.pop("filesize", None) for c in d["chunks"]])
    folder2 = strax_data.folder("r2", "records_blosc")
    src = strax_data.path / folder2 / f"{folder2.split('-', 1)[1]}-000000"
    chunk_file(strax_data, "records_blosc", 0).write_bytes(src.read_bytes())
    got = load(strax_data, "records_blosc")
    want = strax_data.array("r1", "records_blosc")
    assert got["time"].tobytes() == want["time"].tobytes()
    assert got["area"][:7].tobytes() != want["area"][:7].tobytes()


def test_missing_chunk_file(strax_data):
    chunk_file(strax_data, "records_lz4", 1).unlink()
    folder, _, _ = paths(strax_data, "records_lz4")
    with pytest.raises(DataCorrupted, match=rf"{folder}\): chunk 1 .* is missing"):
        load(strax_data, "records_lz4")


def _bomb(compressor: str, nbytes: int) -> bytes:
    zeros = b"\0" * nbytes
    if compressor == "bz2":
        return bz2.compress(zeros)
    if compressor == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(zeros)
    if compressor == "lz4":
        import lz4.frame

        return lz4.frame.compress(zeros)
    from numcodecs import Blosc

    return bytes(Blosc().encode(np.frombuffer(zeros, np.uint8)))


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_decompression_bombs_stop_at_the_chunk_size(strax_data, compressor):
    data_type = f"records_{compressor}"
    edit(strax_data, data_type, lambda d: [c.pop("filesize", None) for c in d["chunks"]])
    chunk_file(strax_data, data_type, 0).write_bytes(_bomb(compressor, 64 * 2**20))
    with pytest.raises(
        DataCorrupted, match=r"chunk 0 .*(decompresses to \d+\+ bytes|blosc header)"
    ):
        load(strax_data, data_type)


def test_a_lying_blosc_header_is_refused(strax_data):
    f = chunk_file(strax_data, "records_blosc", 0)
    raw = bytearray(f.read_bytes())
    raw[12:16] = (len(raw) + 1000).to_bytes(4, "little")  # cbytes: more than the file has
    f.write_bytes(bytes(raw))
    edit(strax_data, "records_blosc", lambda d: d["chunks"][0].pop("filesize"))
    with pytest.raises(DataCorrupted, match="blosc header"):
        load(strax_data, "records_blosc")


def test_out_of_order_and_out_of_chunk_records(strax_data):
    # a chunk file of records that strax's metadata does not describe: rewrite chunk 0 with its
    # rows reversed (same size, same rows) and without the recorded first/last times
    import zstandard

    data_type = "records_zstd"
    want = strax_data.array("r1", data_type)
    edit(
        strax_data,
        data_type,
        lambda d: [
            c.pop(k, None)
            for c in d["chunks"]
            for k in ("filesize", "first_time", "last_time", "last_endtime")
        ],
    )
    f = chunk_file(strax_data, data_type, 0)
    f.write_bytes(zstandard.ZstdCompressor().compress(want[:7][::-1].tobytes()))
    with pytest.raises(DataCorrupted, match="not sorted by time"):
        load(strax_data, data_type)
    moved = want[:7].copy()
    moved["time"] += 1000
    moved["endtime"] += 1000
    f.write_bytes(zstandard.ZstdCompressor().compress(moved.tobytes()))
    with pytest.raises(DataCorrupted, match=r"outside the chunk \[0, 1000\]"):
        load(strax_data, data_type)
