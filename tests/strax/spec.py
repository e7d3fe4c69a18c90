"""What the strax writer writes, without strax: shared by the writer, the strata plugins that
mirror its plugins (:mod:`tests.strax.mirror`) and the tests."""

from __future__ import annotations

COMPRESSORS = ("blosc", "zstd", "lz4", "bz2")
"""strax's compressors: one ``records_<compressor>`` key each."""
CHUNK_NS = 1000
"""Every chunk of a ``records_*`` key is ``[i, i + 1) * CHUNK_NS``."""
ROWS = (7, 5, 0, 7)
"""Rows of its four chunks: chunk 2 is empty (strax writes no file for it); chunks 0 and 3
have as many rows, so their files can be swapped without changing any size."""
OPTIONS = {
    "gain": 1.0,
    "seed": 3,
    "label": "µ-läufer",
    "weights": {"b": 2.5, "a": 1},
    "channels": (0, 1, 2),
}
"""The tracked options of the ``records_*`` plugins and their defaults (``gain`` is an integral
float: strax's hash tells ``1.0`` from ``1``, strata's lineage does not)."""
R2_GAIN = 2.5
"""``gain`` of run ``r2``'s ``records_blosc``."""
SUMS_SCALE = 0.5
"""``scale`` of ``sums``."""
RECORDS_VERSION = "0.1.0"
SUMS_VERSION = "1.0.0"
