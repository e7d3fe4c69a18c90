"""Read data that strax's ``DataDirectory`` wrote, in place: its format, its lineage hash.

strax (AxFoundation/strax, checked against 2.2.3) keeps each stored key in a folder of its
store's root, with the chunks of the key as compressed files beside a metadata JSON::

    <root>/<run_id>-metadata.json                    run metadata (optional)
    <root>/<run_id>-<data_type>-<lineage hash>/      one folder per key
        <data_type>-<lineage hash>-metadata.json     dtype, compressor, lineage, chunk table
        <data_type>-<lineage hash>-000000            chunk 0: the raw records, compressed
        ...                                          (an empty chunk has no file)

The lineage hash is strax's :func:`strax_lineage_hash` (``strax.deterministic_hash``: sha1 of
a JSON form of the lineage, base32, 10 characters), re-implemented here so that strata never
imports strax. A save in progress is a ``..._temp`` folder, which is not a key.

Nothing read is trusted. The metadata is parsed with size and depth limits; its ``dtype`` (the
``repr`` of a numpy ``descr``) with :func:`ast.literal_eval` and checked field by field, never
evaluated; folder and chunk file names against the grammar below before any path is built;
the chunk table against itself (contiguous, ``nbytes == n * itemsize``) and the lineage
against the folder's hash. Every chunk read is checked against the table: file size (when
strax recorded it), the compressor's own frame header, the decompressed size, the row count,
the times of its first and last record and that every record lies inside the chunk. A
truncated, edited, swapped or missing chunk is ``DataCorrupted`` naming the key and the chunk,
never wrong numbers. What no check can see: strax stores no checksum of the values, so a
changed value that keeps sizes and times (a flipped bit of a waveform sample) reads as
written, in strax and here; copied into a strata store it is checksummed from then on.
"""

from __future__ import annotations

import ast
import base64
import bz2
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataCorrupted, DataNotAvailable, InvalidKey, ReadOnlyError
from ..fs import open_fs, redact, redact_url, split_url
from ..jsonio import MAX_MANIFEST_BYTES, load_document
from ..keys import DataKey, lineage_matches, validate_data_type, validate_run_id
from ..lazy import LazyData, select_fields
from ..manifest import INT64_MAX, INT64_MIN, Manifest, Partition, Segment
from ..records import check_dtype, dtype_to_json, endtime
from .base import StorageBackend

if TYPE_CHECKING:
    from ..objects.base import BaseStoredData
    from .zarr.verify import KeyReport

__all__ = [
    "COMPRESSORS",
    "STRAX_HASH_LENGTH",
    "StraxBackend",
    "StraxChunk",
    "StraxManifest",
    "StraxSource",
    "parse_folder_name",
    "parse_strax_dtype",
    "strax_lineage_hash",
]

logger = logging.getLogger(__name__)

STRAX_HASH_LENGTH = 10
"""Characters of strax's lineage hash (``deterministic_hash``'s default length)."""
COMPRESSORS = ("blosc", "zstd", "lz4", "bz2")
"""The compressors of strax's ``strax/io.py``: each chunk file is one compressed frame."""
MAX_DTYPE_CHARS = 2**20
"""Longest ``dtype`` string of a strax metadata document that is parsed."""
MAX_ITEMSIZE = 2**31
"""Largest record (bytes) accepted from a strax dtype."""
_HASH_RE = re.compile(rf"^[a-z2-7]{{{STRAX_HASH_LENGTH}}}\Z")
_CHUNK_SUFFIX_RE = re.compile(r"^-\d{6,9}\Z")
_RUN_METADATA_RE = re.compile(r"^(.+)-metadata\.json\Z")
_BLOSC_HEADER = struct.Struct(
    "<BBBBIII"
)  # version, versionlz, flags, typesize, nbytes, blocksize, cbytes


# -- strax's lineage hash -------------------------------------------------------------------------
def _hashablize(obj: Any) -> Any:
    """As strax 2.2.3's ``strax.utils.hashablize``, rule for rule: mappings become sorted
    ``(key, value)`` pairs, unhashable iterables tuples, arrays tuples of their ``tolist()``;
    hashable values (strings, numbers, hashable tuples) stay as they are.
    """
    if isinstance(obj, Mapping):
        obj = dict(obj)
    try:
        hash(obj)
    except TypeError:
        if isinstance(obj, dict):
            return tuple((k, _hashablize(v)) for k, v in sorted(obj.items()))
        if isinstance(obj, np.ndarray):
            return tuple(obj.tolist())
        if hasattr(obj, "__iter__"):
            return tuple(_hashablize(o) for o in obj)
        raise InvalidKey(
            f"strax lineage hash: cannot hashablize {obj!r} ({type(obj).__name__})"
        ) from None
    return obj


class _StraxJSONEncoder(json.JSONEncoder):
    """strax 2.2.3's ``NumpyJSONEncoder``: iterables as lists, numpy numbers as Python's."""

    def default(self, o: Any) -> Any:
        try:
            iterable = iter(o)
        except TypeError:
            pass
        else:
            return [self.default(item) for item in iterable]
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        return json.JSONEncoder.default(self, o)


def strax_lineage_hash(lineage: Any, length: int = STRAX_HASH_LENGTH) -> str:
    """The hash strax names its folders by: its ``deterministic_hash`` of ``lineage``.

    The rule of strax 2.2.3 (``strax.utils.deterministic_hash``): the lineage made hashable
    (dicts as key-sorted ``[key, value]`` pairs, tuples and lists alike), dumped as JSON with
    Python's default separators, ASCII-escaped, then sha1, base32, the first ``length``
    characters, lower case. Unlike strata's own :func:`~strata.storage.keys.lineage_hash`,
    ``1.0`` and ``1`` hash differently here, as they do in strax.

    >>> strax_lineage_hash({"records": ("Records", "0.0.1", {"gain": 2})})
    'bc4oxptj6x'
    """
    jsonned = json.dumps(_hashablize(lineage), cls=_StraxJSONEncoder)
    digest = hashlib.sha1(jsonned.encode("ascii"), usedforsecurity=False).digest()
    return base64.b32encode(digest)[:length].decode("ascii").lower()


# -- names ----------------------------------------------------------------------------------------
def folder_name(run_id: str, data_type: str, strax_hash: str) -> str:
    """The folder of a key in a strax ``DataDirectory``: ``<run_id>-<data_type>-<hash>``."""
    return f"{run_id}-{data_type}-{strax_hash}"


def parse_folder_name(name: str) -> tuple[str, str, str] | None:
    """``(run_id, data_type, strax hash)`` of a folder name, or ``None`` if it names no key.

    The rule: three parts joined by ``-``; the run id and data type valid strata names
    (letters, digits, ``_`` and ``.``), the hash :data:`STRAX_HASH_LENGTH` base32 characters.
    So a save in progress (``..._temp``) and anything else strax did not write as a key is
    not one.
    """
    parts = name.split("-")
    if len(parts) != 3 or not _HASH_RE.match(parts[2]):
        return None
    try:
        validate_run_id(parts[0])
        validate_data_type(parts[1])
    except InvalidKey:
        return None
    return parts[0], parts[1], parts[2]


def _check_chunk_filename(name: object, prefix: str, where: str) -> str:
    """A chunk file name from strax metadata, if it is ``<data_type>-<hash>-<6 to 9 digits>``
    (the names strax gives them); else ``DataCorrupted``: no ``/``, ``..`` or other file.
    """
    if (
        not isinstance(name, str)
        or not name.startswith(prefix)
        or not _CHUNK_SUFFIX_RE.match(name[len(prefix) :])
    ):
        raise DataCorrupted(
            f"{where}: chunk file name {name!r} is not {prefix}-<6 to 9 digits>, the names "
            "strax writes; not reading it"
        )
    return name


# -- the dtype ------------------------------------------------------------------------------------
def parse_strax_dtype(descr: object, where: str) -> tuple[np.dtype[Any], dict[str, str]]:
    """The record dtype of strax metadata's ``dtype`` (the ``repr`` of a numpy ``descr``), and
    the field titles strax keeps as help texts (``{field: title}``, string titles only).

    Parsed with :func:`ast.literal_eval` (literals only: nothing is evaluated) and checked
    entry by entry: ``(name or (title, name), type string[, shape])``; padding entries
    (``('', '|V4')``) keep their place. The dtype returned has the stored byte layout and no
    titles, and must be one strata stores (:func:`~strata.storage.records.check_dtype`).
    ``DataCorrupted`` naming ``where`` and the rule otherwise.
    """

    def bad(msg: str) -> DataCorrupted:
        return DataCorrupted(f"{where}: dtype {msg}; not reading it")

    if not isinstance(descr, str):
        raise bad(f"is {type(descr).__name__}, not the string strax writes")
    if len(descr) > MAX_DTYPE_CHARS:
        raise bad(f"has {len(descr):,} characters, more than {MAX_DTYPE_CHARS:,}")
    try:
        entries = ast.literal_eval(descr)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise bad(f"is not a literal list of fields ({type(e).__name__}: {e})") from None
    if not isinstance(entries, list) or not entries:
        raise bad("is not a non-empty list of fields")
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    titles: dict[str, str] = {}
    offset = 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, tuple) or len(entry) not in (2, 3):
            raise bad(f"entry {i} {entry!r} is not (name, type[, shape])")
        label, typestr = entry[0], entry[1]
        shape: Any = entry[2] if len(entry) == 3 else ()
        title: object = None
        if isinstance(label, tuple):
            if len(label) != 2:
                raise bad(f"entry {i}: {label!r} is not (title, name)")
            title, label = label
        if not isinstance(label, str) or not isinstance(typestr, str) or len(typestr) > 16:
            raise bad(f"entry {i} {entry!r} has no field name or type string")
        if isinstance(shape, int):
            shape = (shape,)
        if not isinstance(shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < MAX_ITEMSIZE for d in shape
        ):
            raise bad(f"entry {i}: shape {shape!r} is not a tuple of sizes")
        try:
            base = np.dtype(typestr)
        except (TypeError, ValueError) as e:
            raise bad(f"entry {i}: {typestr!r} is not a numpy type ({e})") from None
        size = base.itemsize * math.prod(shape)
        if label == "" and base.kind == "V" and not shape:  # padding: only its bytes count
            offset += size
            continue
        names.append(label)
        formats.append((base, shape) if shape else base)
        offsets.append(offset)
        if isinstance(title, str) and title:
            titles[label] = title
        offset += size
        if offset > MAX_ITEMSIZE:
            raise bad(f"has records of more than {MAX_ITEMSIZE:,} bytes")
    if len(set(names)) != len(names):
        raise bad(f"names a field twice ({names})")
    try:
        dtype = np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": offset}
        )
        check_dtype(dtype)
    except (TypeError, ValueError) as e:  # InvalidKey is a ValueError
        raise bad(f"is not a record dtype strata can read: {e}") from None
    return dtype, titles


# -- decompression --------------------------------------------------------------------------------
def _bounded(decompressor: Any, raw: bytes, nbytes: int) -> tuple[bytes, bool]:
    """Decompress at most ``nbytes + 1`` bytes (a bomb stops there); and whether it ended."""
    out = decompressor.decompress(raw, max_length=nbytes + 1)
    return out, bool(decompressor.eof)


def _decompress(compressor: str, raw: bytes, nbytes: int, where: str) -> np.ndarray:
    """The ``nbytes`` bytes that one chunk file ``raw`` holds, as a writable uint8 array;
    ``DataCorrupted`` naming ``where`` if the frame is damaged, truncated or of another size.
    The output is bounded by ``nbytes`` whatever the file's headers say.
    """

    def bad(msg: str) -> DataCorrupted:
        return DataCorrupted(f"{where}: {msg}; truncated, damaged or not this chunk's file")

    if compressor == "blosc":
        from numcodecs import Blosc

        # blosc1 decodes whatever its header says, reading past a short buffer: check the
        # header against the file and the chunk table first
        if len(raw) < _BLOSC_HEADER.size:
            raise bad(f"{len(raw)} bytes are no blosc frame")
        _, _, _, _, size, blocksize, cbytes = _BLOSC_HEADER.unpack_from(raw)
        if cbytes != len(raw) or size != nbytes or (nbytes and blocksize == 0):
            raise bad(
                f"its blosc header says {size} bytes compressed to {cbytes}; the file has "
                f"{len(raw)} bytes and the chunk {nbytes}"
            )
        out = np.empty(nbytes, dtype=np.uint8)
        try:
            Blosc().decode(raw, out=out)
        except Exception as e:  # any failure of the codec on these bytes
            raise bad(f"blosc cannot decode it ({type(e).__name__}: {e})") from e
        return out
    try:
        if compressor == "zstd":
            zstandard = _import("zstandard", compressor)
            with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as r:
                buf = np.empty(nbytes + 1, dtype=np.uint8)
                got, view = 0, memoryview(buf.data)
                while got <= nbytes:
                    n = r.readinto(view[got:])
                    if not n:
                        break
                    got += n
            if got != nbytes:
                raise bad(
                    f"it decompresses to {got}{'+' if got > nbytes else ''} bytes, not {nbytes}"
                )
            return buf[:nbytes]
        if compressor == "lz4":
            lz4_frame = _import("lz4.frame", compressor)
            data, ended = _bounded(lz4_frame.LZ4FrameDecompressor(), raw, nbytes)
        elif compressor == "bz2":
            data, ended = _bounded(bz2.BZ2Decompressor(), raw, nbytes)
        else:  # checked when the metadata was parsed
            raise bad(f"compressor {compressor!r} is not one of {COMPRESSORS}")
    except DataCorrupted:
        raise
    except ImportError:
        raise
    except Exception as e:  # any failure of the codec on these bytes
        raise bad(f"{compressor} cannot decode it ({type(e).__name__}: {e})") from e
    if len(data) != nbytes or not ended:
        more = "+" if len(data) > nbytes else ""
        raise bad(
            f"it decompresses to {len(data)}{more} bytes{'' if ended else ' (frame unfinished)'}, "
            f"not {nbytes}"
        )
    return np.frombuffer(bytearray(data), dtype=np.uint8)  # writable, one copy


_PACKAGES = {"zstandard": "zstandard", "lz4.frame": "lz4"}


def _import(module: str, compressor: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        pkg = _PACKAGES[module]
        raise ImportError(
            f"reading strax data compressed with {compressor!r} needs the {pkg!r} package "
            f"(as strax does): pip install {pkg} ({e})"
        ) from e


# -- the metadata ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StraxChunk:
    """One row of a strax chunk table, checked: its index, time interval, rows and bytes, and
    for a non-empty chunk its file name and what strax recorded of it (``None`` if not).
    """

    index: int
    start: int
    end: int
    n: int
    nbytes: int
    filename: str | None
    filesize: int | None = None
    first_time: int | None = None
    last_time: int | None = None
    last_endtime: int | None = None


@dataclass(frozen=True)
class StraxSource:
    """What reading a chunk of one strax key needs (small: it travels with every task)."""

    key: str
    folder: str
    compressor: str
    stored_dtype: np.dtype[Any]


@dataclass(frozen=True)
class StraxManifest(Manifest):
    """A :class:`~strata.storage.manifest.Manifest` describing a key strax stored, so it loads
    and copies like any strata key: one partition per strax chunk (an empty chunk is an empty
    partition), one segment per non-empty chunk, the record dtype without titles (the titles
    are ``metadata["field_help"]``, which a copy keeps as array descriptions), and strax's own
    facts under ``metadata["strax"]``. It records no digests (strax keeps none: format v1), and
    its ``attempt`` is a name made from strax's ``writing_started`` and the folder's hash.

    ``folder``, ``compressor``, ``chunks`` and ``stored_dtype`` (the byte layout of the chunk
    files) are what the strax backend reads with; they take no part in comparisons.
    """

    folder: str = field(default="", compare=False)
    compressor: str = field(default="", compare=False)
    chunks: tuple[StraxChunk, ...] = field(default=(), compare=False, repr=False)
    stored_dtype: Any = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> StraxSource:
        """What a task needs to read a chunk of this key."""
        return StraxSource(str(self.key), self.folder, self.compressor, self.stored_dtype)


def _int(value: object, what: str, where: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise DataCorrupted(f"{where}: {what} is {value!r}, not an integer in [{lo}, {hi}]")
    return value


def _opt_int(d: Mapping[str, Any], name: str, where: str) -> int | None:
    return None if d.get(name) is None else _int(d[name], name, where)


def _iso(value: object) -> str:
    """Epoch seconds (as strax records times) as ISO 8601 UTC (``""`` if it recorded none)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        try:
            when = _dt.datetime.fromtimestamp(float(value), _dt.UTC)
        except (OverflowError, OSError, ValueError):
            return ""
        return when.isoformat(timespec="microseconds")
    return ""


def _attempt_name(started: str, strax_hash: str) -> str:
    """A strata attempt name for a strax save (``a<time>Z_<12 hex>``)."""
    try:
        when = _dt.datetime.fromisoformat(started) if started else _dt.datetime(1970, 1, 1)
    except ValueError:
        when = _dt.datetime(1970, 1, 1)
    tag = hashlib.sha256(strax_hash.encode()).hexdigest()[:12]
    return f"a{when.strftime('%Y%m%dT%H%M%S%f')}Z_{tag}"


def _json_safe(value: Any) -> Any:
    """``value`` if it is plain JSON strata can store (finite numbers), else ``None``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


def parse_metadata(folder: str, doc: Any, where: str) -> StraxManifest:
    """Check strax metadata ``doc`` of ``folder`` and describe it as a :class:`StraxManifest`.

    ``DataNotAvailable`` for data strax itself would not load (written by a save that failed,
    or never finished) or that this reader does not read (superruns); ``DataCorrupted`` naming
    ``where`` and the rule for anything malformed or inconsistent.
    """
    parsed = parse_folder_name(folder)
    if parsed is None:
        raise InvalidKey(f"{folder!r} is not a strax key folder (<run_id>-<data_type>-<hash>)")
    run_id, data_type, strax_hash = parsed
    if not isinstance(doc, dict):
        raise DataCorrupted(f"{where} is not a JSON object")
    if "exception" in doc:
        raise DataNotAvailable(
            f"{where}: strax's save of {folder} ended with an exception, so strax does not "
            "load it either; make it again with strax"
        )
    if "writing_ended" not in doc:
        raise DataNotAvailable(f"{where}: strax's save of {folder} never finished")
    missing = [
        k
        for k in ("run_id", "data_type", "dtype", "compressor", "lineage", "chunks")
        if k not in doc
    ]
    if missing:
        raise DataCorrupted(f"{where}: strax metadata lacks {missing}")
    if doc["data_type"] != data_type:
        raise DataCorrupted(
            f"{where}: data_type {doc['data_type']!r} is not the folder's {data_type!r}"
        )
    if doc["run_id"] != run_id:
        if isinstance(doc["run_id"], str) and doc["run_id"].startswith("_"):
            raise DataNotAvailable(
                f"{where}: superrun data (strax define_run) is not read by this frontend"
            )
        raise DataCorrupted(f"{where}: run_id {doc['run_id']!r} is not the folder's {run_id!r}")
    lineage = doc["lineage"]
    if not isinstance(lineage, dict):
        raise DataCorrupted(f"{where}: lineage is not a JSON object")
    try:
        ours = strax_lineage_hash(lineage)
    except InvalidKey as e:
        raise DataCorrupted(f"{where}: {e}") from e
    if ours != strax_hash or doc.get("lineage_hash", strax_hash) != strax_hash:
        raise DataCorrupted(
            f"{where}: its lineage hashes to {ours!r} (lineage_hash field "
            f"{doc.get('lineage_hash')!r}), not to the folder's {strax_hash!r}: the metadata "
            "was edited, or it is another key's"
        )
    try:
        key = DataKey(run_id, data_type, lineage)
    except InvalidKey as e:
        raise DataCorrupted(f"{where}: its lineage is not one strata can key: {e}") from e
    compressor = doc["compressor"]
    if compressor not in COMPRESSORS:
        raise DataCorrupted(f"{where}: compressor {compressor!r} is not one of {COMPRESSORS}")
    stored, titles = parse_strax_dtype(doc["dtype"], where)
    plain = np.dtype([(n, stored[n].base, stored[n].shape) for n in stored.names or ()])
    raw_chunks = doc["chunks"]
    if not isinstance(raw_chunks, list):
        raise DataCorrupted(f"{where}: chunks is not a list")
    prefix = f"{data_type}-{strax_hash}"
    chunks: list[StraxChunk] = []
    seen: set[str] = set()
    for i, c in enumerate(raw_chunks):
        cw = f"{where}, chunk {i}"
        if not isinstance(c, dict):
            raise DataCorrupted(f"{cw} is not a JSON object")
        start, end = _int(c.get("start"), "start", cw), _int(c.get("end"), "end", cw)
        n = _int(c.get("n"), "n", cw, 0)
        nbytes = _int(c.get("nbytes"), "nbytes", cw, 0)
        if end < start:
            raise DataCorrupted(f"{cw}: ends at {end}, before its start {start}")
        if chunks and start != chunks[-1].end:
            raise DataCorrupted(
                f"{cw}: starts at {start}, not where chunk {i - 1} ends ({chunks[-1].end}); "
                "strax chunks are contiguous"
            )
        if nbytes != n * stored.itemsize:
            raise DataCorrupted(
                f"{cw}: {n} rows of {stored.itemsize} bytes are not its nbytes {nbytes}"
            )
        if c.get("run_id", run_id) != run_id:
            raise DataCorrupted(f"{cw}: run_id {c.get('run_id')!r} is not {run_id!r}")
        filename = None
        if n:
            filename = _check_chunk_filename(c.get("filename"), prefix, cw)
            if filename in seen:
                raise DataCorrupted(f"{cw}: file {filename} is named by two chunks")
            seen.add(filename)
        filesize = c.get("filesize")
        chunks.append(
            StraxChunk(
                index=i,
                start=start,
                end=end,
                n=n,
                nbytes=nbytes,
                filename=filename,
                filesize=None if filesize is None or not n else _int(filesize, "filesize", cw, 0),
                first_time=_opt_int(c, "first_time", cw) if n else None,
                last_time=_opt_int(c, "last_time", cw) if n else None,
                last_endtime=_opt_int(c, "last_endtime", cw) if n else None,
            )
        )
    partitions, segments = [], []
    names = list(plain.names or ())
    for c in chunks:
        seg = f"s{c.index:06d}" if c.n else None
        partitions.append(Partition(c.start, c.end, c.n, c.n * plain.itemsize, seg, 0))
        if seg is not None:
            segments.append(Segment(seg, c.n, dict.fromkeys(names, c.n)))
    started, ended = _iso(doc.get("writing_started")), _iso(doc.get("writing_ended"))
    strax_facts = {
        "folder": folder,
        "lineage_hash": strax_hash,
        "compressor": compressor,
        "strax_version": _json_safe(doc.get("strax_version")),
        "chunk_target_size_mb": _json_safe(doc.get("chunk_target_size_mb")),
        "chunks": len(chunks),
    }
    metadata: dict[str, Any] = {"strax": strax_facts}
    if isinstance(doc.get("data_kind"), str):
        metadata["data_kind"] = doc["data_kind"]
    if titles:
        metadata["field_help"] = titles
    return StraxManifest(
        key=key,
        dtype=dtype_to_json(plain),
        arrays={
            n: {"attributes": {"description": titles[n]} if n in titles else {}} for n in names
        },
        attempt=_attempt_name(started, strax_hash),
        partitions=partitions,
        segments=segments,
        writing_started=started,
        writing_ended=ended,
        metadata=metadata,
        strata_version=f"strax {strax_facts['strax_version'] or '?'}",
        attempt_metadata=None,
        format="strata.manifest.v1",
        folder=folder,
        compressor=compressor,
        chunks=tuple(chunks),
        stored_dtype=stored,
    )


# -- the backend ----------------------------------------------------------------------------------
def _rebuild(cls: type[StraxBackend], kwargs: dict[str, Any]) -> StraxBackend:
    return cls(**kwargs)


class StraxBackend(StorageBackend):
    """Reads the folders of a strax ``DataDirectory`` at ``url`` (any fsspec URL or path),
    lazily and in parallel, without strax. Read-only: savers, removals and stored objects are
    refused with ``ReadOnlyError``.

    A backend key is a folder name, ``<run_id>-<data_type>-<strax lineage hash>``. The backend
    pickles by its constructor arguments, so Dask workers read the chunk files directly.

    Parameters
    ----------
    url
        The strax ``DataDirectory`` path (or an fsspec URL of it).
    storage_options
        fsspec options (credentials are never shown).

    """

    readonly = True
    supports_listing = True
    supports_verify = True

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.protocol, _ = split_url(url)
        self.url = url
        self.storage_options = dict(storage_options or {})
        self._fs: tuple[int, Any, str] | None = None
        self._fs_lock = threading.Lock()

    # -- identity ---------------------------------------------------------------------------
    def _init_kwargs(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._init_kwargs()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StraxBackend):
            return NotImplemented
        return type(self) is type(other) and repr(self._init_kwargs()) == repr(other._init_kwargs())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.url, repr(sorted(self.storage_options.items()))))

    def __repr__(self) -> str:
        opts = f", storage_options={redact(self.storage_options)!r}" if self.storage_options else ""
        return f"{type(self).__name__}({redact_url(self.url)!r}{opts})"

    def _token(self) -> str:
        return json.dumps([self.url, repr(sorted(self.storage_options.items()))])

    # -- plumbing ---------------------------------------------------------------------------
    def _fs_and_root(self) -> tuple[Any, str]:
        with self._fs_lock:  # one filesystem per process (a forked worker opens its own)
            if self._fs is None or self._fs[0] != os.getpid():
                fs, root = open_fs(self.url, self.storage_options)
                self._fs = (os.getpid(), fs, root.rstrip("/"))
            return self._fs[1], self._fs[2]

    @property
    def fs(self) -> Any:
        """The synchronous fsspec filesystem of the directory."""
        return self._fs_and_root()[0]

    @property
    def root(self) -> str:
        """The directory's path within :attr:`fs`."""
        return self._fs_and_root()[1]

    def _path(self, *names: str) -> str:
        # every name was checked against its grammar (no '/', no '..') before it gets here
        return "/".join([self.root, *names])

    def _folder(self, backend_key: str) -> str:
        if parse_folder_name(backend_key) is None:
            raise InvalidKey(
                f"{backend_key!r} is not a strax key folder name (<run_id>-<data_type>-<hash>)"
            )
        return backend_key

    def _ls_names(self) -> list[str]:
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def __getstate__(self) -> dict[str, Any]:  # copy.copy / pickle without the open filesystem
        state = self.__dict__.copy()
        state["_fs"] = None
        state.pop("_fs_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fs_lock = threading.Lock()

    # -- keys and metadata ------------------------------------------------------------------
    def backend_key(self, key: DataKey) -> str:
        """The folder strax keeps ``key`` in: named by strax's hash of ``key.lineage``."""
        return folder_name(key.run_id, key.data_type, strax_lineage_hash(key.lineage))

    def get_metadata(self, backend_key: str) -> StraxManifest:
        """The checked strax metadata of the folder ``backend_key``, as a manifest;
        ``DataNotAvailable`` if there is no such key (or strax would not load it either).
        """
        folder = self._folder(backend_key)
        _, data_type, strax_hash = parse_folder_name(folder) or ("", "", "")
        name = f"{data_type}-{strax_hash}-metadata.json"
        where = f"strax metadata {folder}/{name} in {redact_url(self.url)}"
        try:
            raw = self.fs.cat_file(self._path(folder, name))
        except FileNotFoundError:
            raise DataNotAvailable(f"{folder} is not stored in {self!r}") from None
        except IsADirectoryError:
            raise DataCorrupted(f"{where} is a directory") from None
        doc = load_document(raw, where, max_bytes=MAX_MANIFEST_BYTES)
        return parse_metadata(folder, doc, where)

    def list_backend_keys(self, run_id: str | None = None) -> list[str]:
        """Folder names of strax keys (of ``run_id``, if given), sorted."""
        out = []
        for name in self._ls_names():
            parsed = parse_folder_name(name)
            if parsed is not None and (run_id is None or parsed[0] == run_id):
                out.append(name)
        return out

    def list_run_ids(self) -> list[str]:
        """Run ids with a key folder."""
        return sorted({name.split("-", 1)[0] for name in self.list_backend_keys()})

    def find(
        self,
        key: DataKey,
        fuzzy_for: Sequence[str] = (),
        fuzzy_for_options: Sequence[str] = (),
    ) -> tuple[str, StraxManifest]:
        """``(folder, manifest)`` of the stored key whose lineage matches ``key``'s.

        First the folder strax's hash of ``key.lineage`` names (one read, no listing). If that
        holds nothing matching and the lineage has an integer (strata keeps ``1.0`` as ``1``,
        where strax's hash tells them apart) or the match is fuzzy, the run's folders of the
        data type are compared by lineage (one listing). ``DataNotAvailable`` if none
        matches; a damaged candidate is logged and skipped.
        """
        exact = self.backend_key(key)
        try:
            m = self.get_metadata(exact)
            if lineage_matches(m.key.lineage, key.lineage, fuzzy_for, fuzzy_for_options):
                return exact, m
        except DataNotAvailable:
            pass
        if not (fuzzy_for or fuzzy_for_options or _has_int(key.lineage)):
            # no int that strax may have hashed as an integral float: the hash was the answer
            raise DataNotAvailable(f"{key} is not stored in {self!r}")
        for folder in self.list_backend_keys(key.run_id):
            if folder == exact or not folder.startswith(f"{key.run_id}-{key.data_type}-"):
                continue
            try:
                m = self.get_metadata(folder)
            except DataNotAvailable:
                continue
            except (DataCorrupted, InvalidKey) as e:
                logger.warning("skipping %s while looking for %s: %s", folder, key, e)
                continue
            if lineage_matches(m.key.lineage, key.lineage, fuzzy_for, fuzzy_for_options):
                return folder, m
        raise DataNotAvailable(f"{key} is not stored in {self!r}")

    def read_run_metadata(self, run_id: str) -> bytes:
        """The raw bytes of strax's run metadata file ``<run_id>-metadata.json``."""
        validate_run_id(run_id)
        try:
            raw: bytes = self.fs.cat_file(self._path(f"{run_id}-metadata.json"))
        except (FileNotFoundError, IsADirectoryError):
            raise DataNotAvailable(f"no run metadata for run {run_id!r} in {self!r}") from None
        return raw

    def list_run_documents(self) -> list[str]:
        """Run ids that have a run metadata file."""
        out = []
        for name in self._ls_names():
            m = _RUN_METADATA_RE.match(name)
            if m is None:
                continue
            try:
                out.append(validate_run_id(m.group(1)))
            except InvalidKey:
                continue
        return out

    # -- reading ----------------------------------------------------------------------------
    def _manifest(self, backend_key: str, manifest: Manifest) -> StraxManifest:
        if isinstance(manifest, StraxManifest) and manifest.folder == backend_key:
            return manifest
        return self.get_metadata(backend_key)

    def read_chunk(self, m: StraxManifest | StraxSource, chunk: StraxChunk) -> np.ndarray:
        """The records of one chunk of ``m`` (in its stored dtype), read and checked against
        the chunk table: ``DataCorrupted`` naming the key and the chunk if anything differs.
        """
        src = m.source if isinstance(m, StraxManifest) else m
        if chunk.n == 0 or chunk.filename is None:
            return np.zeros(0, dtype=src.stored_dtype)
        where = (
            f"{src.key} (strax {src.folder}): chunk {chunk.index} ({chunk.filename}) in "
            f"{redact_url(self.url)}"
        )
        try:
            raw = self.fs.cat_file(self._path(src.folder, chunk.filename))
        except (FileNotFoundError, IsADirectoryError):
            raise DataCorrupted(f"{where} is missing: the stored data is incomplete") from None
        if chunk.filesize is not None and len(raw) != chunk.filesize:
            raise DataCorrupted(
                f"{where} has {len(raw)} bytes, the metadata recorded {chunk.filesize}: "
                "truncated, or replaced"
            )
        buf = _decompress(src.compressor, raw, chunk.nbytes, where)
        data = buf.view(src.stored_dtype)
        _check_records(data, chunk, where)
        return data

    def loader_from_manifest(
        self,
        backend_key: str,
        manifest: Manifest,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> LazyData:
        """Lazy Dask collections over the strax key: one task per strax chunk (that holds rows
        of the selection) for the records, and for each field one task per such chunk.

        ``fields`` selects fields (every chunk file is decompressed whole: strax stores rows,
        not columns); ``time_range`` ``(t0, t1)`` selects ``t0 <= time < t1``, reading only
        chunks that overlap it; a chunk that straddles an end of the range is read now, so
        row counts are exact before anything is computed (the chunk table's times of first
        and last records spare reading the chunks wholly inside).
        """
        m = self._manifest(backend_key, manifest)
        return _build_lazy(self, m, fields, time_range)

    def stored_bytes(self, backend_key: str, manifest: Manifest | None = None) -> int | None:
        """Bytes of the key's folder on storage."""
        try:
            return int(self.fs.du(self._path(self._folder(backend_key)), total=True))
        except (FileNotFoundError, NotImplementedError):
            return None

    def verify(self, backend_key: str) -> KeyReport:
        """Read every chunk of the key and check it against the metadata (sizes, rows, times);
        a report naming each bad chunk. strax keeps no checksums, which the report notes.
        """
        from .zarr.verify import KeyReport

        try:
            m = self.get_metadata(backend_key)
        except DataCorrupted as e:
            return KeyReport(backend_key, problems=[f"metadata: {e}"])
        problems, read = [], 0
        for c in m.chunks:
            try:
                self.read_chunk(m, c)
            except DataCorrupted as e:
                problems.append(str(e))
            else:
                read += c.filesize or 0
        notes = [
            "strax data: every chunk decompressed and checked against the metadata's sizes, "
            "row counts and times; strax records no checksums of the values"
        ]
        return KeyReport(
            backend_key,
            m.key,
            problems=problems,
            notes=notes,
            objects=sum(1 for c in m.chunks if c.n),
            bytes_read=read,
        )

    # -- refused ----------------------------------------------------------------------------
    def saver(
        self,
        backend_key: str,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
        checked_absent: bool = False,
    ) -> Any:
        """Refused: strax data is read in place, never written (``ReadOnlyError``)."""
        raise ReadOnlyError(f"{self!r} is read-only: cannot save {key}")

    def remove(self, backend_key: str) -> None:
        """Refused (``ReadOnlyError``)."""
        raise ReadOnlyError(f"{self!r} is read-only: cannot remove {backend_key}")

    def _store_object(
        self,
        object_to_store: BaseStoredData,
        storage_key: str | None = None,
        ancillary_data_path: str | None = None,
    ) -> str:
        raise ReadOnlyError(f"{self!r} is read-only: it stores no objects")

    def _retrieve_object(
        self, storage_key: str, expected_type: type[BaseStoredData] | None = None
    ) -> tuple[BaseStoredData | None, str | None]:
        return None, None  # a strax directory holds no stored objects

    def _object_exists(self, storage_key: str) -> bool:
        return False


def _has_int(value: Any) -> bool:
    """Whether a (normalised) lineage holds an integer anywhere (booleans are not)."""
    if isinstance(value, dict):
        return any(_has_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_int(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


def _check_records(data: np.ndarray, chunk: StraxChunk, where: str) -> None:
    """The decoded rows of ``chunk`` are the ones its table entry describes: the count, the
    first and last times strax recorded, sorted times, every record inside the chunk.
    """
    if len(data) != chunk.n:
        raise DataCorrupted(f"{where} holds {len(data)} rows, the metadata says {chunk.n}")
    t = data["time"]
    et = endtime(data)
    facts = (
        ("first_time", chunk.first_time, int(t[0])),
        ("last_time", chunk.last_time, int(t[-1])),
        ("last_endtime", chunk.last_endtime, int(et[-1])),
    )
    for name, want, got in facts:
        if want is not None and want != got:
            raise DataCorrupted(
                f"{where}: {name} is {got}, the metadata says {want}: the file holds other "
                "rows than this chunk's (swapped or replaced)"
            )
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        raise DataCorrupted(f"{where}: its records are not sorted by time")
    if int(t[0]) < chunk.start or int(et.max()) > chunk.end:
        raise DataCorrupted(
            f"{where}: its records span [{int(t[0])}, {int(et.max())}], outside the chunk "
            f"[{chunk.start}, {chunk.end}]"
        )


# -- the lazy load --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Piece:
    """Rows ``[lo, hi)`` of one chunk that a load selects."""

    chunk: StraxChunk
    lo: int
    hi: int


def _select(
    backend: StraxBackend, m: StraxManifest, time_range: tuple[int, int] | None
) -> list[_Piece]:
    if time_range is None:
        return [_Piece(c, 0, c.n) for c in m.chunks if c.n]
    t0, t1 = (int(t) for t in time_range)
    if t1 < t0:
        raise ValueError(f"time_range end {t1} is before its start {t0}")
    pieces = []
    for c in m.chunks:
        # records lie in [start, end] (checked when read): a chunk ending before t0 or
        # starting at or after t1 holds none of the range, one inside it holds only the range
        if not c.n or c.end < t0 or c.start >= t1:
            continue
        if c.start >= t0 and c.end < t1:
            pieces.append(_Piece(c, 0, c.n))
            continue
        # wholly inside by the recorded first and last times: reading the chunk checks them
        # (a chunk that they say lies outside is read all the same: skipping on their word
        # could hide rows)
        if c.first_time is not None and c.last_time is not None:
            if c.first_time >= t0 and c.last_time < t1:
                pieces.append(_Piece(c, 0, c.n))
                continue
        times = backend.read_chunk(m, c)["time"]
        lo = int(np.searchsorted(times, t0, "left"))
        hi = int(np.searchsorted(times, t1, "left"))
        if hi > lo:
            pieces.append(_Piece(c, lo, hi))
    return pieces


def _read_piece(
    backend: StraxBackend, src: StraxSource, piece: _Piece, out_dtype: np.dtype[Any]
) -> np.ndarray:
    data = backend.read_chunk(src, piece.chunk)[piece.lo : piece.hi]
    if data.dtype == out_dtype:
        return data
    out = np.empty(len(data), dtype=out_dtype)
    for name in out_dtype.names or ():
        out[name] = data[name]
    return out


def _build_lazy(
    backend: StraxBackend,
    m: StraxManifest,
    fields: Sequence[str] | None,
    time_range: tuple[int, int] | None,
) -> LazyData:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    dtype = m.np_dtype
    sel = select_fields(dtype, fields, m.key)
    out_dtype = np.dtype([(f, dtype[f].base, dtype[f].shape) for f in sel])
    pieces = _select(backend, m, time_range)
    src = m.source
    token = tokenize(backend._token(), m.folder, m.writing_ended, pieces, sel)
    name = f"{m.key.data_type}-strax-{token}"
    if pieces:
        dsk: dict[Any, Any] = {
            (name, i): (_read_piece, backend, src, p, out_dtype) for i, p in enumerate(pieces)
        }
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        chunks = (tuple(p.hi - p.lo for p in pieces),)
        struct_arr = da.Array(graph, name, chunks, dtype=out_dtype)
    else:
        struct_arr = da.from_array(np.zeros(0, dtype=out_dtype), chunks=-1)
    field_arrays = {f: struct_arr[f] for f in sel}

    def reader(out: np.ndarray, threads: int) -> None:
        _fill(backend, src, pieces, out, threads)

    return LazyData(key=m.key, manifest=m, array=struct_arr, fields=field_arrays, reader=reader)


def _fill(
    backend: StraxBackend, src: StraxSource, pieces: list[_Piece], out: np.ndarray, threads: int
) -> None:
    """Decode every piece straight into its place in ``out``, on ``threads`` threads (the
    codecs release the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    offsets, at = [], 0
    for p in pieces:
        offsets.append(at)
        at += p.hi - p.lo
    if at != len(out):
        raise ValueError(f"out has {len(out)} rows; the selection has {at}")

    def one(i: int) -> None:
        p = pieces[i]
        data = backend.read_chunk(src, p.chunk)[p.lo : p.hi]
        block = out[offsets[i] : offsets[i] + p.hi - p.lo]
        for name in out.dtype.names or ():
            block[name] = data[name]

    if threads <= 1 or len(pieces) <= 1:
        for i in range(len(pieces)):
            one(i)
        return
    with ThreadPoolExecutor(min(threads, len(pieces)), thread_name_prefix="strata-strax") as pool:
        for _ in pool.map(one, range(len(pieces))):
            pass
