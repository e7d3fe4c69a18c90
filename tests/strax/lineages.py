"""Lineages whose strax hash strata must reproduce: imported by the strax writer (which hashes
them with strax) and by the tests (which hash them with strata), so both see the same objects.

Covers what reaches ``strax.deterministic_hash`` in practice: tuples (strax builds lineages of
them) and lists, nested and unsorted dicts, immutabledict (strax freezes dict options), numpy
scalars and arrays, integral and other floats (``1.0`` is not ``1`` to strax), negative and
large ints, booleans, None, non-ASCII strings, empty containers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # installed with strax (.ci/install-strax.sh); without strax these cases are not hashed
    from immutabledict import immutabledict
except ImportError:  # pragma: no cover
    from types import MappingProxyType as immutabledict

CASES: list[Any] = [
    {"records": ("Records", "0.0.1", {"gain": 2})},
    {"records": ("Records", "0.0.1", {"gain": 2.0})},
    {"records": ["Records", "0.0.1", {"gain": 2.5, "seed": -7, "big": 2**62}]},
    {
        "peaks": ("Peaks", "1.2.3", {"z": 1, "a": [1, 2, (3, 4)], "m": {"y": None, "b": True}}),
        "records": ("Records", "0.0.1", {}),
    },
    {"records": ("Records", "0.0.1", {"opt": immutabledict({"b": 2.5, "a": 1})})},
    {
        "records": (
            "Records",
            "0.0.1",
            {"n": np.int64(5), "x": np.float64(0.1), "f": np.float32(0.5)},
        )
    },
    {"records": ("Records", "0.0.1", {"arr": np.arange(3), "m2": np.array([[1.5, 2], [3, 4]])})},
    {"records": ("Récords", "0.0.1", {"label": "µ-säure ✓", "empty": "", "e": [], "d": {}})},
    {"records": ("Records", "0.0.1", {"tiny": 1e-300, "neg": -0.0, "third": 1 / 3})},
    {"b": ("B", "0", {}), "a": ("A", "0", {}), "c": ("C", "0", {"k": ("x", ("y", ("z",)))})},
]
