"""The one redaction of secrets for reprs, logs and error messages (invariant 7).

:func:`redact` takes storage options (or any mapping, list, tuple, set or string) and returns
a copy fit to show; :func:`redact_url` is its URL part, for strings that are (or contain)
URLs. Both are for display only: nothing redacted is ever used to reach a store.

What counts as a secret:

- an option *named* like one, at any depth: names containing ``secret``, ``passw``,
  ``passphrase``, ``token``, ``credential``, ``auth``, ``private``, ``signature``,
  ``cookie``, ``dsn``, ``connection_string``, ``conn_str``; names ending in ``key``/``keys``
  (``key``, ``access_key``, ``client_keys``, ``aws_secret_access_key``) or in ``pass``
  (``pass``, ``db_pass``); and ``pwd``/``pw``. Their whole value is replaced, whatever its
  type, unless it is ``None`` or a boolean (which cannot carry a secret);
- private-key material under *any* name (``-----BEGIN ... PRIVATE KEY-----``, PuTTY key
  files), as text or bytes;
- in any URL, wherever it appears (a value such as ``endpoint_url``, a list element, a
  sentence of an error message): the password of ``user:password@`` userinfo and the values
  of query parameters named like secrets (``?password=...``, ``X-Amz-Signature=...``).

Names that only look close stay visible: ``key_file_name``, ``keyfile``, ``known_hosts``,
``username``, ``endpoint_url`` (its userinfo redacted), ``region_name``, ``profile``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "is_secret_name", "redact", "redact_url"]

MASK = "***"
"""What a secret is replaced with."""

_SECRET_PARTS = (
    "secret",
    "passw",
    "passphrase",
    "token",
    "credential",
    "auth",
    "private",
    "signature",
    "cookie",
    "dsn",
    "connection_string",
    "conn_str",
)
_SECRET_SUFFIXES = ("key", "keys", "pass")
_SECRET_NAMES = frozenset({"pwd", "pw"})

_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|PuTTY-User-Key-File-")
_PRIVATE_KEY_BYTES = re.compile(_PRIVATE_KEY.pattern.encode())
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*")
_QUERY_PAIR = re.compile(r"([^=&;]+)=([^&;]*)")
_MAX_DEPTH = 32


def is_secret_name(name: object) -> bool:
    """Whether an option called ``name`` holds a secret (see the module docstring).

    >>> [is_secret_name(n) for n in ("passwd", "client_keys", "key_file_name", "region_name")]
    [True, True, False, False]
    """
    n = str(name).lower().replace("-", "_")
    return (
        n in _SECRET_NAMES
        or n.endswith(_SECRET_SUFFIXES)
        or any(part in n for part in _SECRET_PARTS)
    )


def _redact_one_url(match: re.Match[str]) -> str:
    url = match.group(0)
    scheme, rest = url.split("://", 1)
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            cut = min(cut, i)
    netloc, tail = rest[:cut], rest[cut:]
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + MASK
        netloc = f"{userinfo}@{host}"
    if "?" in tail:
        path, _, query = tail.partition("?")
        query, hash_, fragment = query.partition("#")

        def pair(m: re.Match[str]) -> str:
            return f"{m.group(1)}={MASK}" if is_secret_name(m.group(1)) else m.group(0)

        tail = f"{path}?{_QUERY_PAIR.sub(pair, query)}{hash_}{fragment}"
    return f"{scheme}://{netloc}{tail}"


def redact_url(url: str) -> str:
    """``url`` (or any text containing URLs) with userinfo passwords and secret query values
    replaced by ``'***'``.

    >>> redact_url("http://alice:s3cr3t@host:9000/bucket?X-Amz-Signature=abc&part=1")
    'http://alice:***@host:9000/bucket?X-Amz-Signature=***&part=1'
    >>> redact_url("ssh://alice@cluster/data")
    'ssh://alice@cluster/data'
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    return _URL.sub(_redact_one_url, url)


def _redact(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, str):
        return MASK if _PRIVATE_KEY.search(value) else redact_url(value)
    if isinstance(value, bytes | bytearray):
        return MASK if _PRIVATE_KEY_BYTES.search(value) else value
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if is_secret_name(k) and v is not None and not isinstance(v, bool):
                out[k] = MASK
            else:
                out[k] = _redact(v, depth + 1)
        return out
    if isinstance(value, list):
        return [_redact(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact(v, depth + 1) for v in value)
    if isinstance(value, set | frozenset):
        return type(value)(_redact(v, depth + 1) for v in value)
    return value


def redact(obj: Any) -> Any:
    """A copy of ``obj`` fit to show: storage options, a list, a URL, an error message.

    Mappings come back as dicts, lists and tuples as lists and tuples, strings as strings;
    other values are returned as they are. ``None`` gives ``{}`` (no storage options).

    >>> redact({"key": "AKIA", "secret": "x", "client_kwargs": {"endpoint_url":
    ...     "http://u:pw@minio:9000", "region_name": "eu"}, "use_ssl": True})
    {'key': '***', 'secret': '***', 'client_kwargs': {'endpoint_url': 'http://u:***@minio:9000', 'region_name': 'eu'}, 'use_ssl': True}
    """  # noqa: E501
    if obj is None:
        return {}
    return _redact(obj, 0)
