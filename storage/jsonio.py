"""JSON read from storage, parsed with limits: nothing read is trusted.

Every document strata reads back (manifests, run documents, stored objects, index entries)
goes through :func:`load_document`: its size is checked before parsing, its nesting depth
while parsing, and any failure is :class:`~strata.storage.errors.DataCorrupted` naming the
document, so one bad file is an error for its key alone (listings, gc and queries skip it).

>>> load_document(b'{"a": [1, 2]}', "doc")
{'a': [1, 2]}
>>> load_document(b"[" * 100 + b"]" * 100, "doc")
Traceback (most recent call last):
...
strata.storage.errors.DataCorrupted: doc is nested deeper than 64 levels; not reading it
"""

from __future__ import annotations

import json
from typing import Any

from .errors import DataCorrupted

__all__ = ["MAX_DEPTH", "MAX_DOCUMENT_BYTES", "MAX_MANIFEST_BYTES", "load_document"]

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a stored document."""
MAX_DOCUMENT_BYTES = 16 * 2**20
"""Largest run document or stored-object document read back."""
MAX_MANIFEST_BYTES = 256 * 2**20
"""Largest manifest read back (a run of 100,000 chunks needs about 2 MB)."""


def _too_deep(doc: Any, limit: int) -> bool:
    """Whether containers in ``doc`` nest more than ``limit`` deep (iteratively)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def load_document(
    raw: bytes | str,
    where: str,
    *,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse ``raw`` (read from ``where``) as JSON, refusing what is too large, too deep or
    not JSON with :class:`~strata.storage.errors.DataCorrupted`.
    """
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if len(data) > max_bytes:
        raise DataCorrupted(
            f"{where} is {len(data):,} bytes, more than the {max_bytes:,} a stored document "
            "may have; not reading it"
        )
    deep = DataCorrupted(f"{where} is nested deeper than {max_depth} levels; not reading it")
    try:
        doc = json.loads(data)
    except RecursionError:  # deeper than the interpreter's recursion limit
        raise deep from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataCorrupted(
            f"{where} is not valid JSON (truncated or damaged: {e}); remove the key and save again"
        ) from e
    if isinstance(doc, (dict, list)) and _too_deep(doc, max_depth):
        raise deep
    return doc
