"""The Zarr v3 backend.

:class:`ZarrBackend` is in ``backend``, its read path in ``read`` and its write path
(:class:`ZarrSaver`) in ``write``.
"""

from __future__ import annotations

from .backend import ZarrBackend
from .write import ZarrSaver

__all__ = ["ZarrBackend", "ZarrSaver"]
