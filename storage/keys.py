"""Keys: validated run ids and data types, canonical lineage and its deterministic hash.

A piece of stored data is identified by ``(run_id, data_type, lineage)``. The lineage says what
produced the data, recursively::

    {"peaks": ["Peaks", "0.2.0", {"threshold": 3.5}],
     "records": ["Records", "0.1.0", {"gain_model": "run_doc"}]}

Its hash is a sha256 digest of canonical JSON (sorted keys, tuples as lists, numpy scalars as
Python numbers, integral floats as ints), base32-encoded and shortened. It is the same in every
process, machine and Python version, and never falls back to anything random: a value that
cannot be normalised raises :class:`~strata.storage.errors.InvalidKey`.

>>> key = DataKey("run_1", "peaks", {"peaks": ["Peaks", "1", {"threshold": 3}]})
>>> str(key) == f"run_1-peaks-{key.lineage_hash}"
True
>>> lineage_hash({"a": (1, 2.0)}) == lineage_hash({"a": [1, 2]})
True
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .errors import InvalidKey

__all__ = [
    "DataKey",
    "Lineage",
    "canonical_json",
    "lineage_hash",
    "lineage_matches",
    "normalize",
    "validate_data_type",
    "validate_name",
    "validate_run_id",
]

Lineage = dict[str, list[Any]]
"""``{data_type: [plugin class name, version, {option: value}]}``."""

HASH_LENGTH = 12
MAX_NAME_LENGTH = 128
"""Longest run id or data type: names become file names (255 bytes on most file systems)
together with a hash, a suffix and a temporary-file tag."""
_NAME_RE = re.compile(r"^[A-Za-z0-9_.]+\Z")


def validate_name(value: object, what: str) -> str:
    r"""Return ``value`` if it is a safe name for a path component, else raise ``InvalidKey``.

    The rule: a non-empty string of letters, digits, ``_`` and ``.``, and not ``.``/``..`` or
    containing ``..``. So never ``/``, ``\\``, ``-``, NUL or whitespace.
    """
    if not isinstance(value, str):
        raise InvalidKey(f"{what} must be a string, got {value!r} ({type(value).__name__})")
    if not value:
        raise InvalidKey(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidKey(
            f"invalid {what} {value[:40]!r}... ({len(value)} characters): at most "
            f"{MAX_NAME_LENGTH} are allowed (it becomes a file name)"
        )
    if not _NAME_RE.match(value) or ".." in value or value == ".":
        raise InvalidKey(
            f"invalid {what} {value!r}: only letters, digits, '_' and '.' are allowed "
            "(no '/', '\\', '-', '..', NUL, whitespace)"
        )
    return value


def validate_run_id(run_id: object) -> str:
    """Validate a run id (see :func:`validate_name`) and return it."""
    return validate_name(run_id, "run_id")


def validate_data_type(data_type: object) -> str:
    """Validate a data type name (see :func:`validate_name`) and return it."""
    return validate_name(data_type, "data_type")


def normalize(value: Any, path: str = "lineage") -> Any:
    """Return ``value`` as plain JSON types, deterministically, or raise ``InvalidKey``.

    Tuples become lists, numpy scalars and 0-d/1-d arrays become Python numbers and lists,
    floats that are whole numbers become ints (so ``1.0`` and ``1`` hash alike). NaN, infinity,
    sets, non-string dict keys and arbitrary objects are refused, naming where they were found.
    """
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise InvalidKey(f"{path}: {value!r} is not a finite number and cannot enter a lineage")
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidKey(f"{path}: dict key {k!r} is not a string; lineage keys must be")
            out[k] = normalize(v, f"{path}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [normalize(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) and value.ndim <= 2 and value.dtype.kind in "biuf":
        return normalize(value.tolist(), path)
    raise InvalidKey(
        f"{path}: {value!r} ({type(value).__name__}) cannot be normalised to JSON; "
        "use numbers, strings, booleans, None, lists or dicts"
    )


def canonical_json(value: Any) -> str:
    """Canonical JSON of ``value``: normalised, sorted keys, no whitespace."""
    return json.dumps(
        normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def lineage_hash(lineage: Mapping[str, Any]) -> str:
    """Deterministic short hash of a lineage: base32 of sha256 of its canonical JSON."""
    digest = hashlib.sha256(canonical_json(lineage).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:HASH_LENGTH]


def _validate_lineage(lineage: Mapping[str, Any]) -> Lineage:
    if not isinstance(lineage, Mapping):
        raise InvalidKey(f"lineage must be a dict, got {type(lineage).__name__}")
    norm = normalize(lineage)
    for dt, entry in norm.items():
        validate_data_type(dt)
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not isinstance(entry[2], dict)
        ):
            raise InvalidKey(
                f"lineage entry for {dt!r} must be [plugin name, version, {{options}}], "
                f"got {entry!r}"
            )
    return norm


@dataclass(frozen=True, eq=False)
class DataKey:
    """Identifies stored data: ``(run_id, data_type, lineage)``.

    Compares and hashes by ``str(key)``; the lineage is normalised on creation.
    """

    run_id: str
    data_type: str
    lineage: Lineage = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        validate_data_type(self.data_type)
        object.__setattr__(self, "lineage", _validate_lineage(self.lineage))

    @cached_property
    def lineage_hash(self) -> str:
        """The deterministic hash of this key's lineage (computed once: a key is immutable,
        its lineage a normalised copy of what it was made from).
        """
        return lineage_hash(self.lineage)

    @property
    def name(self) -> str:
        """``<data_type>-<lineage_hash>``: the key's name within its run."""
        return f"{self.data_type}-{self.lineage_hash}"

    def __str__(self) -> str:
        return f"{self.run_id}-{self.data_type}-{self.lineage_hash}"

    def __repr__(self) -> str:
        return f"DataKey({self.run_id!r}, {self.data_type!r}, hash={self.lineage_hash!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataKey):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"run_id": self.run_id, "data_type": self.data_type, "lineage": self.lineage}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataKey:
        """Inverse of :meth:`to_dict`."""
        return cls(d["run_id"], d["data_type"], d["lineage"])


def _reduce_lineage(
    lineage: Mapping[str, Any], fuzzy_for: Iterable[str], fuzzy_for_options: Iterable[str]
) -> Any:
    skip_types, skip_opts = set(fuzzy_for), set(fuzzy_for_options)
    out = {}
    for dt, (plugin, version, options) in normalize(lineage).items():
        if dt in skip_types:
            continue
        out[dt] = [plugin, version, {k: v for k, v in options.items() if k not in skip_opts}]
    return out


def lineage_matches(
    stored: Mapping[str, Any],
    wanted: Mapping[str, Any],
    fuzzy_for: Iterable[str] = (),
    fuzzy_for_options: Iterable[str] = (),
) -> bool:
    """Whether a stored lineage satisfies a wanted one.

    Strict (identical canonical JSON) unless loosened: data types in ``fuzzy_for`` are ignored
    entirely (plugin, version and options), and option names in ``fuzzy_for_options`` are
    ignored in every entry.
    """
    fuzzy_for, fuzzy_for_options = tuple(fuzzy_for), tuple(fuzzy_for_options)
    if not fuzzy_for and not fuzzy_for_options:
        return canonical_json(stored) == canonical_json(wanted)
    a = _reduce_lineage(stored, fuzzy_for, fuzzy_for_options)
    b = _reduce_lineage(wanted, fuzzy_for, fuzzy_for_options)
    return canonical_json(a) == canonical_json(b)
