"""Compression presets and codec chains for stored arrays.

Every array is written with ``[bytes, <compressors...>, crc32c]``: the checksum is always last,
so a flipped bit on disk raises instead of decoding to wrong numbers.

Only Zarr v3 core codecs are used by default (blosc, zstd, gzip, crc32c), so every Zarr v3
reader (zarr-python, tensorstore, zarrita, ...) opens what strata writes. numcodecs codecs that
have a core equivalent are translated to it (``numcodecs.Zstd`` → ``zstd``, ``numcodecs.Blosc``
→ ``blosc``, ``numcodecs.GZip`` → ``gzip``); the others (lz4, zlib, bz2, lzma) are zarr-python
extensions that other readers cannot read, and are refused unless the caller passes
``allow_nonstandard=True`` (then with a warning).

>>> [c["name"] for c in codec_chain("zstd")]
['bytes', 'zstd', 'crc32c']
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any, TypeAlias

import numcodecs
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "CompressorLike",
    "NonstandardCodecWarning",
    "codec_chain",
    "compressors",
]

CompressorLike: TypeAlias = str | BytesBytesCodec | numcodecs.abc.Codec | Sequence[Any] | None

PRESETS = {
    "zstd": "zstd, level 3",
    "zstd-N": "zstd at level N (1..22)",
    "lz4": "lz4 inside blosc, no shuffle (a core Zarr v3 codec)",
    "blosc": "blosc with zstd level 1 in 1 MiB blocks and byte shuffle (the default)",
    "blosc-lz4": "blosc with lz4 level 5 and byte shuffle",
    "blosc-zstd-N": "blosc with zstd level N and byte shuffle",
    "none": "no compression (the crc32c checksum stays)",
}

DEFAULT_PRESET = "blosc"
"""The preset used when no compressor is given."""

BLOSC_BLOCKSIZE = 2**20
"""Block size (bytes) of the ``blosc`` preset."""


class NonstandardCodecWarning(UserWarning):
    """A codec that only zarr-python (with numcodecs) can read was chosen."""


_CORE = (BloscCodec, ZstdCodec, GzipCodec, Crc32cCodec)
_NOT_READ_BY = "tensorstore, zarrita and other Zarr v3 readers"


def _numcodecs_to_zarr(codec: numcodecs.abc.Codec, allow_nonstandard: bool) -> BytesBytesCodec:
    import zarr.codecs.numcodecs as zn

    cfg = {k: v for k, v in codec.get_config().items() if k != "id"}
    if codec.codec_id == "zstd":
        return ZstdCodec(level=int(cfg.get("level", 0)), checksum=bool(cfg.get("checksum", False)))
    if codec.codec_id == "gzip":
        return GzipCodec(level=int(cfg.get("level", 5)))
    if codec.codec_id == "blosc":
        shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle", -1: "shuffle"}
        blosc: Any = BloscCodec  # its Literal-typed arguments come from numcodecs' config here
        return blosc(
            cname=str(cfg.get("cname", "lz4")),
            clevel=int(cfg.get("clevel", 5)),
            shuffle=shuffle.get(int(cfg.get("shuffle", 1)), "shuffle"),
            blocksize=int(cfg.get("blocksize", 0)),
        )

    cls_name = {
        "zstd": "Zstd",
        "lz4": "LZ4",
        "blosc": "Blosc",
        "zlib": "Zlib",
        "gzip": "GZip",
        "bz2": "BZ2",
        "lzma": "LZMA",
    }.get(codec.codec_id or "")
    if cls_name is None:
        raise ValueError(
            f"numcodecs codec {codec!r} is not a bytes-to-bytes compressor strata can store; "
            "use zstd, lz4, blosc, zlib, gzip, bz2 or lzma"
        )
    _check_nonstandard(f"numcodecs.{codec.codec_id}", allow_nonstandard)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codec_cls: Any = getattr(zn, cls_name)
        out: BytesBytesCodec = codec_cls(**cfg)
        return out


def _check_nonstandard(name: str, allow_nonstandard: bool) -> None:
    if not allow_nonstandard:
        raise ValueError(
            f"codec {name!r} is not a Zarr v3 core codec: {_NOT_READ_BY} cannot read it; "
            "use a preset (zstd, blosc, lz4, ...) or pass allow_nonstandard=True"
        )
    warnings.warn(
        f"codec {name!r} is a zarr-python extension: {_NOT_READ_BY} cannot read these arrays",
        NonstandardCodecWarning,
        stacklevel=4,
    )


def _preset(name: str) -> list[BytesBytesCodec]:
    n = name.lower().strip()
    if n == "none":
        return []
    if n == "zstd":
        return [ZstdCodec(level=3)]
    if n == "lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")]
    if n in ("blosc", "blosc-zstd"):
        # blosc's clevel 1 is zstd level 1 (its clevel 3 is zstd level 5: 4x slower to write,
        # no smaller); 1 MiB blocks compress better than blosc's automatic ~64 KiB and decode
        # faster. See tests/benchmarks/bench_storage.py.
        return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", blocksize=BLOSC_BLOCKSIZE)]
    if n == "blosc-lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    m = re.fullmatch(r"(blosc-)?zstd-(\d+)", n)
    if m and 1 <= int(m.group(2)) <= 22:
        level = int(m.group(2))
        if m.group(1):
            return [BloscCodec(cname="zstd", clevel=min(level, 9), shuffle="shuffle")]
        return [ZstdCodec(level=level)]
    raise ValueError(f"unknown compressor preset {name!r}; known presets: {', '.join(PRESETS)}")


def compressors(spec: CompressorLike, allow_nonstandard: bool = False) -> list[BytesBytesCodec]:
    """The bytes-to-bytes codecs for ``spec``: a preset name, a zarr codec, a numcodecs codec,
    or a list of those. ``None`` means the default preset (:data:`DEFAULT_PRESET`).

    Codecs outside the Zarr v3 core set raise ``ValueError`` unless ``allow_nonstandard`` (then
    a :class:`NonstandardCodecWarning` names the readers that cannot read them).
    """
    if spec is None:
        return _preset(DEFAULT_PRESET)
    if isinstance(spec, str):
        return _preset(spec)
    if isinstance(spec, BytesBytesCodec):
        if not isinstance(spec, _CORE):
            name = str(spec.to_dict().get("name", type(spec).__name__))
            _check_nonstandard(name, allow_nonstandard)
        return [spec]
    if isinstance(spec, numcodecs.abc.Codec):
        return [_numcodecs_to_zarr(spec, allow_nonstandard)]
    if isinstance(spec, Sequence):
        out: list[BytesBytesCodec] = []
        for s in spec:
            out.extend(compressors(s if s is not None else "none", allow_nonstandard))
        return out
    raise ValueError(
        f"compressor {spec!r} is not a preset name, zarr codec or numcodecs codec; "
        f"presets: {', '.join(PRESETS)}"
    )


def codec_chain(spec: CompressorLike) -> list[dict[str, Any]]:
    """The full Zarr v3 codec list as JSON: bytes, the compressors, then crc32c."""
    chain: list[Any] = [BytesCodec(), *compressors(spec), Crc32cCodec()]
    return [c.to_dict() for c in chain]
