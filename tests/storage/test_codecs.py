"""Compression presets, numcodecs codecs, and what the stored arrays say about them."""

from __future__ import annotations

import numcodecs
import pytest
from zarr.codecs import ZstdCodec

from strata.storage import DataKey, ZarrBackend, codec_chain
from strata.storage.codecs import NonstandardCodecWarning
from tests.helpers import STRAX_DTYPE, lineage, make_run


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("zstd", "zstd"),
        ("zstd-9", "zstd"),
        ("lz4", "blosc"),
        ("blosc", "blosc"),
        ("blosc-lz4", "blosc"),
        ("blosc-zstd-5", "blosc"),
        (numcodecs.Zstd(level=2), "zstd"),
        (numcodecs.Blosc(cname="lz4"), "blosc"),
        (numcodecs.GZip(level=3), "gzip"),
        (ZstdCodec(level=7), "zstd"),
        (["lz4"], "blosc"),
    ],
)
def test_presets_round_trip(tmp_path, spec, name):
    b = ZarrBackend(str(tmp_path), compressor=spec, chunk_target_mb=0.25)
    key = DataKey("run_1", "records", lineage())
    parts, intervals = make_run([700, 300])
    m = b.saver(b.backend_key(key), key, STRAX_DTYPE).save(parts, intervals).compute()
    names = [c["name"] for c in m.arrays["data"]["codecs"]]
    assert names == ["bytes", name, "crc32c"]
    got = b.loader(b.backend_key(key)).to_numpy()
    assert got.tobytes() == b"".join(p.tobytes() for p in parts)


@pytest.mark.parametrize("codec", [numcodecs.LZ4(), numcodecs.Zlib(), numcodecs.BZ2()])
def test_nonstandard_codecs_are_refused_unless_asked_for(tmp_path, codec):
    with pytest.raises(ValueError, match="not a Zarr v3 core codec") as e:
        ZarrBackend(str(tmp_path), compressor=codec)
    assert "tensorstore" in str(e.value) and "allow_nonstandard=True" in str(e.value)
    with pytest.warns(NonstandardCodecWarning, match="tensorstore, zarrita"):
        b = ZarrBackend(str(tmp_path), compressor=codec, allow_nonstandard_codecs=True)
    key = DataKey("run_1", "records", lineage())
    parts, intervals = make_run([200])
    m = b.saver(b.backend_key(key), key, STRAX_DTYPE).save(parts, intervals).compute()
    assert m.arrays["area"]["codecs"][1]["name"] == f"numcodecs.{codec.codec_id}"
    assert b.loader(b.backend_key(key)).to_numpy().tobytes() == parts[0].tobytes()


@pytest.mark.parametrize("preset", ["zstd", "zstd-9", "lz4", "blosc", "blosc-lz4", "blosc-zstd-5"])
def test_every_preset_is_core_zarr(preset):
    assert {c["name"] for c in codec_chain(preset)} <= {"bytes", "blosc", "zstd", "gzip", "crc32c"}


def test_none_keeps_the_checksum():
    assert [c["name"] for c in codec_chain("none")] == ["bytes", "crc32c"]


def test_blosc_shuffles_by_element_size(tmp_path):
    b = ZarrBackend(str(tmp_path), compressor="blosc")
    key = DataKey("run_1", "records", lineage())
    parts, intervals = make_run([10])
    m = b.saver(b.backend_key(key), key, STRAX_DTYPE).save(parts, intervals).compute()
    blosc = m.arrays["time"]["codecs"][1]["configuration"]
    assert blosc["shuffle"] == "shuffle" and blosc["typesize"] == 8


@pytest.mark.parametrize("bad", ["zstd-99", "snappy", "", 42, numcodecs.Delta("i8")])
def test_bad_compressors_are_named(bad, tmp_path):
    with pytest.raises(ValueError) as e:
        ZarrBackend(str(tmp_path), compressor=bad)
    assert repr(bad) in str(e.value) or str(bad) in str(e.value)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_chunk_target(bad, tmp_path):
    with pytest.raises(ValueError, match="chunk_target_mb"):
        ZarrBackend(str(tmp_path), chunk_target_mb=bad)
