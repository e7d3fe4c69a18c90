"""StraxDirectoryFrontend: data written by strax's ``DataDirectory``, read in place, read-only.

A strax user's existing data stays where it is: this catalog finds its keys by strax's own
lineage hash, loads them lazily into Dask like any strata key (``fields=``, ``time_range=``,
one task per strax chunk), lists them, exposes strax's run metadata files, and refuses every
write with ``ReadOnlyError``. ``strata.storage.copy_data`` (``strata copy``) moves a key into a
strata store, verified. The format and its checks are in :mod:`strata.storage.backends.strax`;
strax itself is never imported.

>>> fe = StraxDirectoryFrontend("strax:///data/strax_data")
>>> fe
StraxDirectoryFrontend('/data/strax_data')
>>> fe.readonly
True
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ..backends.strax import StraxBackend, parse_folder_name
from ..errors import DataCorrupted, DataNotAvailable, InvalidKey, ReadOnlyError
from ..fs import redact_url, split_url
from ..keys import DataKey
from .base import Entry, Location, StorageFrontend

__all__ = ["SCHEME", "StraxDirectoryFrontend", "strax_directory_url"]

logger = logging.getLogger(__name__)

SCHEME = "strax"
"""The URL scheme of strax directories: ``strax:///abs/path``, ``strax://relative/path``, and
``strax+<fsspec protocol>://...`` (``strax+s3://bucket/prefix``) for one on another file
system."""


def strax_directory_url(url: str) -> str:
    """The fsspec URL or path of the strax directory that ``url`` names.

    ``strax://PATH`` is the local path ``PATH`` (``strax:///data/x`` is ``/data/x``,
    ``strax://x`` is ``x`` relative to the working directory); ``strax+PROTO://REST`` is
    ``PROTO://REST``; anything else (a path, an fsspec URL) is taken as it is.

    >>> strax_directory_url("strax+s3://bucket/strax")
    's3://bucket/strax'
    >>> strax_directory_url("strax:///data/strax")
    '/data/strax'
    """
    protocol, rest = split_url(url)
    if protocol == SCHEME:
        if not rest:
            raise ValueError(f"{url!r} names no directory: use strax:///absolute/path")
        return rest
    if protocol.startswith(f"{SCHEME}+"):
        return f"{protocol[len(SCHEME) + 1 :]}://{rest}"
    return url


class StraxDirectoryFrontend(StorageFrontend):
    """A read-only catalog of the keys a strax ``DataDirectory`` stored at ``url``.

    :meth:`find` looks a key up by strax's hash of its lineage (the folder
    ``<run_id>-<data_type>-<hash>``: one read, no listing); strata's lineages have strax's
    shape, ``{data_type: [plugin class name, version, {option: value}]}``, so a strata plugin
    that mirrors a strax plugin (class name, version, tracked options) finds what strax made.
    If that folder does not match, the run's folders of the data type are compared by lineage
    (strata stores ``1.0`` as ``1``, which strax's hash tells apart), as for fuzzy matches.

    Parameters
    ----------
    url
        ``strax:///path``, ``strax+s3://bucket/prefix`` (see :func:`strax_directory_url`), a
        path, or an fsspec URL of the directory strax's ``DataDirectory`` writes.
    storage_options
        fsspec options (credentials are never shown).
    take_only, exclude
        See :class:`~strata.storage.frontends.base.StorageFrontend`.
    readonly
        Must be true (the default): strax data is never written here.
    storage_kind
        How far the data is; default ``local`` for a local path, ``remote`` otherwise.

    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        take_only: Iterable[str] = (),
        exclude: Iterable[str] = (),
        readonly: bool = True,
        storage_kind: str | None = None,
    ) -> None:
        if not readonly:
            raise ValueError(
                f"{type(self).__name__} is read-only (readonly=False given): strax data is "
                "read in place; copy it into a strata store to write beside it"
            )
        super().__init__(readonly=True, take_only=take_only, exclude=exclude)
        self.backend = StraxBackend(strax_directory_url(url), storage_options=storage_options)
        self.backends = {"strax": self.backend}
        if storage_kind is not None:
            self.storage_kind = storage_kind
        elif self.backend.protocol != "file":
            self.storage_kind = "remote"
        self._kwargs = {
            "url": url,
            "storage_options": storage_options,
            "take_only": self.take_only,
            "exclude": self.exclude,
        }

    def _default_storage_kind(self) -> str:
        return "local" if self.backend.protocol == "file" else "remote"

    @property
    def url(self) -> str:
        """The directory's URL or path."""
        return self.backend.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.backend.url)!r})"

    # -- primitives -------------------------------------------------------------------------
    def _find(
        self, key: DataKey, fuzzy_for: tuple[str, ...], fuzzy_for_options: tuple[str, ...]
    ) -> tuple[Location, DataKey]:
        try:
            folder, m = self.backend.find(key, fuzzy_for, fuzzy_for_options)
        except DataNotAvailable:
            fuzzy = (
                f" (fuzzy_for={list(fuzzy_for)}, fuzzy_for_options={list(fuzzy_for_options)})"
                if fuzzy_for or fuzzy_for_options
                else ""
            )
            raise DataNotAvailable(
                f"{key} is not stored in {self!r}{fuzzy}: no strax folder "
                f"{self.backend.backend_key(key)} and no other {key.run_id}-{key.data_type}-* "
                "folder with this lineage"
            ) from None
        return Location("strax", folder, m), m.key

    def _list(self, run_id: str | None) -> list[Entry]:
        out = []
        for folder in self.backend.list_backend_keys(run_id):
            parsed = parse_folder_name(folder)
            if parsed is None or not self.takes(parsed[1]):
                continue
            try:
                m = self.backend.get_metadata(folder)
            except DataNotAvailable as e:  # a failed strax save, or a superrun
                self.skipped.append(str(e))
                continue
            except (DataCorrupted, InvalidKey) as e:
                logger.warning("listing: %s", e)
                self.skipped.append(str(e))
                continue
            files = [c.filesize for c in m.chunks if c.n]
            known = all(f is not None for f in files)
            stored = sum(f for f in files if f is not None) if known else None
            out.append(Entry.of(m, Location("strax", folder, m), stored))
        return out

    def _backend_for_save(self, key: DataKey) -> str:
        raise ReadOnlyError(f"{self!r} is read-only: cannot save {key}")

    def _read_run_metadata(self, run_id: str) -> dict[str, Any]:
        return self._parse_run_document(run_id, self.backend.read_run_metadata(run_id))

    def _write_run_metadata(self, run_id: str, doc: dict[str, Any]) -> None:
        raise ReadOnlyError(f"{self!r} is read-only: cannot write run metadata of {run_id!r}")

    def _list_runs(self) -> list[str]:
        return sorted(set(self.backend.list_run_documents()) | set(self.backend.list_run_ids()))
