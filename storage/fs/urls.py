"""The one parser of storage URLs: ``protocol://path`` or a plain local path."""

from __future__ import annotations

import os

__all__ = ["LOCAL_PROTOCOLS", "split_url"]

LOCAL_PROTOCOLS = ("file", "local")


def split_url(url: str) -> tuple[str, str]:
    """Split ``url`` into ``(protocol, path)``; a plain path is ``("file", abspath)``.

    The protocol is lower-cased and kept whole (``postgresql+psycopg`` stays so); ``file://``
    and ``local://`` URLs and plain paths give an absolute local path.

    >>> split_url("s3://bucket/prefix")
    ('s3', 'bucket/prefix')
    >>> split_url("/data/strata")
    ('file', '/data/strata')
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"storage URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        return "file", os.path.abspath(os.path.expanduser(url))
    protocol, rest = url.split("://", 1)
    protocol = protocol.lower()
    if protocol in LOCAL_PROTOCOLS:
        return "file", os.path.abspath(os.path.expanduser(rest))
    return protocol, rest
