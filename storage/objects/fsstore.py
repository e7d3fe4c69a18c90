"""Stored objects on an fsspec filesystem (the object store of ``ZarrBackend``).

Layout under the backend root::

    objects/<key>.json                                 the document: written last, atomically
    objects/<key>/<attempt>/...                        its ancillary files (a copy)
    objects/_index/<class>/<v1>/<v2>/.../<key>.json    index copy, by the class's index_fields

Every write is a whole-file atomic write (temporary file and rename on local disk, a single
PUT on object stores), so a crash never leaves a truncated document visible. A new object is
created with an exclusive create, so of two processes storing the same object one writes it
and the other finds it. Ancillary files are uploaded into a fresh attempt directory *before*
the document that names it, so a document never names missing files; a replacement writes a
new attempt and removes the old one after the new document is in place. Two processes that
replace the same :class:`~strata.storage.objects.base.ReplaceableData` at the same moment are not
serialised (object stores offer no compare-and-swap): the last document written wins, and the
other's attempt directory is left for :meth:`FsObjectStore.gc_objects`.

The index holds one small file per object under directories named after the values of the
class's ``index_fields`` (e.g. ``run_id`` and ``data_type``). Writers never share a file, so
any number of processes can index at once without locks, and a query that fixes those values
lists and reads only its own directory. The index entry is written after the document and
removed before it, so every indexed object exists; a crash in between leaves an object that
queries miss until it is stored again or :meth:`FsObjectStore.rebuild_object_index` runs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fsspec.implementations.local import LocalFileSystem

from .. import layout
from ..errors import DataCorrupted, DataNotAvailable, InvalidKey, ReadOnlyError
from ..fs import atomic_write, exclusive_write, redact_url
from ..keys import canonical_json
from ..layout import Layout
from .arrays import StoredArrayData
from .base import (
    BaseStoredData,
    UnknownObjectClass,
    document_bytes,
    from_document,
    key_for_identity,
    object_key,
    parse_document,
    validate_object_key,
)
from .store import ObjectStore

if TYPE_CHECKING:
    from ..manifest import Manifest

__all__ = ["FsObjectStore"]

logger = logging.getLogger(__name__)

OBJECTS = layout.OBJECTS
INDEX = layout.INDEX
_SAFE = re.compile(r"^[A-Za-z0-9_.]{1,64}\Z")


def index_component(value: Any) -> str:
    """The directory name an index value is filed under.

    Short safe strings are used as they are; anything else becomes a hash of its canonical
    JSON. Different values may share a directory (``"1"`` and ``1``): queries filter again.
    """
    if isinstance(value, str):
        s = value
    else:
        try:
            s = canonical_json(value)
        except (ValueError, TypeError):
            s = repr(value)
    if _SAFE.match(s) and s not in (".", "..") and ".." not in s and not s.startswith("_h_"):
        return s
    return "_h_" + hashlib.sha256(s.encode()).hexdigest()[:24]


class FsObjectStore(ObjectStore):
    """The object-store primitives and a concurrent, partitioned index on an fsspec root.

    Mixed into :class:`~strata.storage.backends.zarr.ZarrBackend`, which provides ``fs``, ``url``,
    ``protocol``, ``readonly``, ``path()`` and ``_invalidate()``.
    """

    if TYPE_CHECKING:
        fs: Any
        url: str
        protocol: str
        readonly: bool

        def path(self, *parts: str) -> str: ...  # noqa: D102

        @property
        def layout(self) -> Layout: ...  # noqa: D102

        def _invalidate(self, path: str) -> None: ...

        def parse_backend_key(self, backend_key: str) -> tuple[str, str, str]: ...  # noqa: D102

        def list_backend_keys(self, run_id: str | None = None) -> list[str]: ...  # noqa: D102

        def get_metadata(self, backend_key: str) -> Manifest: ...  # noqa: D102

    # -- paths ------------------------------------------------------------------------------
    def _doc_path(self, key: str) -> str:
        return self.path(OBJECTS, f"{validate_object_key(key)}.json")

    def _index_path(self, key: str, obj: BaseStoredData) -> str:
        data = obj.model_dump(mode="json")
        parts = [index_component(data[f]) for f in type(obj).index_fields]
        return self.path(OBJECTS, INDEX, type(obj).stored_name, *parts, f"{key}.json")

    def _where(self, key: str) -> str:
        return f"{redact_url(self.url)}/{OBJECTS}/{key}.json"

    def _ancillary_location(self, rel: str | None, key: str) -> str | None:
        """The path (local) or URL (remote) of a document's ancillary directory."""
        if not rel:
            return None
        parts = rel.split("/") if isinstance(rel, str) else []
        ok = (
            len(parts) == 3
            and parts[0] == OBJECTS
            and parts[1] == key
            and layout.is_object_attempt(parts[2])
        ) or (
            len(parts) == 4
            and parts[0] == layout.DATA
            and layout.is_attempt(parts[3])
            and _is_backend_key(f"{parts[1]}/{parts[2]}")
        )
        if not ok:
            raise DataCorrupted(f"stored object {self._where(key)} names a bad directory {rel!r}")
        if isinstance(self.fs, LocalFileSystem):
            return self.path(*parts)
        return f"{self.url.rstrip('/')}/{rel}"  # keeps the host (and port) of ssh:// URLs

    def _read_raw(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def _read_doc(self, key: str) -> dict[str, Any] | None:
        raw = self._read_raw(self._doc_path(key))
        return None if raw is None else parse_document(raw, self._where(key))

    def _upload(self, local_dir: str, rel: str) -> None:
        """Copy a local directory to ``rel`` below the root (the caller's copy stays)."""
        dest = self.path(*rel.split("/"))
        if isinstance(self.fs, LocalFileSystem):
            shutil.copytree(local_dir, dest, symlinks=False)
            return
        self.fs.makedirs(dest, exist_ok=True)
        for root, _, files in os.walk(local_dir):
            sub = os.path.relpath(root, local_dir)
            for name in files:
                target = f"{dest}/{name}" if sub == "." else f"{dest}/{sub}/{name}"
                self.fs.put_file(os.path.join(root, name), target.replace(os.sep, "/"))

    def _rm_tree(self, rel: str) -> None:
        p = self.path(*rel.split("/"))
        try:
            self._invalidate(p)
            if self.fs.exists(p):
                self.fs.rm(p, recursive=True)
        except FileNotFoundError:
            pass

    def _write_new(
        self, obj: BaseStoredData, key: str, ancillary_data_path: str | None, exclusive: bool
    ) -> bool:
        rel = (
            self.layout.object_attempt_rel(key, layout.new_object_attempt())
            if ancillary_data_path
            else None
        )
        raw = document_bytes(obj.to_document(key, rel))  # serialise before uploading anything
        path = self._doc_path(key)
        try:
            if rel is not None:
                assert ancillary_data_path is not None
                self._upload(ancillary_data_path, rel)
            if exclusive:
                exclusive_write(self.fs, path, raw)
            else:
                atomic_write(self.fs, path, raw)
        except FileExistsError:
            if rel is not None:
                self._rm_tree(rel)
            return False
        except BaseException:
            if rel is not None:
                self._rm_tree(rel)
            raise
        finally:
            self._invalidate(path.rsplit("/", 1)[0])
        return True

    # -- primitives -------------------------------------------------------------------------
    def _object_exists(self, storage_key: str) -> bool:
        path = self._doc_path(storage_key)
        self._invalidate(path.rsplit("/", 1)[0])
        return bool(self.fs.exists(path))

    def _retrieve_object(
        self, storage_key: str, expected_type: type[BaseStoredData] | None = None
    ) -> tuple[BaseStoredData | None, str | None]:
        doc = self._read_doc(storage_key)
        if doc is None:
            return None, None
        obj = from_document(doc, expected_type, self._where(storage_key))
        return obj, self._ancillary_location(doc.get("ancillary"), storage_key)

    def _create_object(
        self, object_to_store: BaseStoredData, storage_key: str, ancillary_data_path: str | None
    ) -> bool:
        return self._write_new(object_to_store, storage_key, ancillary_data_path, exclusive=True)

    def _store_object(
        self,
        object_to_store: BaseStoredData,
        storage_key: str | None = None,
        ancillary_data_path: str | None = None,
    ) -> str:
        key = storage_key or object_key(object_to_store)
        try:
            old = self._read_doc(key)
        except DataCorrupted:
            old = None
        self._write_new(object_to_store, key, ancillary_data_path, exclusive=False)
        old_rel = (old or {}).get("ancillary")
        if old_rel and str(old_rel).startswith(f"{OBJECTS}/{key}/"):
            self._rm_tree(str(old_rel))
        return key

    def _remove_object(self, storage_key: str) -> None:
        doc = self._read_doc(storage_key)
        if doc is None:
            raise DataNotAvailable(f"no stored object {storage_key!r} in {self!r}")
        self.fs.rm_file(self._doc_path(storage_key))
        self._rm_tree(f"{OBJECTS}/{storage_key}")
        self._invalidate(self.path(OBJECTS))

    def remove_object(self, storage_key: str) -> None:
        """Remove a stored object and its ancillary files.

        Array data types are removed with ``remove(backend_key)`` (or through their frontend),
        which also removes their object.
        """
        validate_object_key(storage_key)
        doc = self._read_doc(storage_key)
        if doc is not None and str(doc.get("ancillary") or "").startswith("data/"):
            raise InvalidKey(
                f"object {storage_key} describes stored array data; remove the data itself "
                "(backend.remove(backend_key) or frontend.remove(key))"
            )
        super().remove_object(storage_key)

    # -- index ------------------------------------------------------------------------------
    def _index_add(self, key: str, obj: BaseStoredData) -> None:
        raw = self._read_raw(self._doc_path(key))
        if raw is not None:
            atomic_write(self.fs, self._index_path(key, obj), raw)

    def _index_discard(self, key: str, obj: BaseStoredData) -> None:
        path = self._index_path(key, obj)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        self._invalidate(path.rsplit("/", 1)[0])

    def _index_contains(self, key: str, obj: BaseStoredData) -> bool:
        doc = self._read_raw(self._doc_path(key))
        return doc is not None and self._read_raw(self._index_path(key, obj)) == doc

    def _index_search(
        self, classes: list[type[BaseStoredData]], constraints: dict[str, Any]
    ) -> Iterator[tuple[str, BaseStoredData, str | None]]:
        for cls in classes:
            fields = cls.index_fields
            prefix: list[str] = []
            for f in fields:
                if f not in constraints:
                    break
                prefix.append(index_component(constraints[f]))
            wanted = {
                i: index_component(constraints[f])
                for i, f in enumerate(fields)
                if i >= len(prefix) and f in constraints
            }
            root = self.path(OBJECTS, INDEX, cls.stored_name, *prefix)
            paths = []
            for path in self._find(root):
                rel = path[len(root) :].strip("/").split("/")
                if len(rel) != len(fields) - len(prefix) + 1 or not rel[-1].endswith(".json"):
                    continue  # a temporary file of a write in progress, or not ours
                if any(rel[i - len(prefix)] != v for i, v in wanted.items()):
                    continue
                paths.append(path)
            if not paths:
                continue
            raws = self.fs.cat(paths, on_error="omit")  # one batch: concurrent on object stores
            for path in sorted(raws):
                key = path.rsplit("/", 1)[-1][: -len(".json")]
                try:
                    doc = parse_document(raws[path], f"index entry {path}")
                    if doc.get("key") != key or doc.get("class") != cls.stored_name:
                        raise DataCorrupted(f"index entry {path} does not describe {key}")
                    obj = from_document(doc, cls, self._where(key))
                    yield key, obj, self._ancillary_location(doc.get("ancillary"), key)
                except (DataCorrupted, UnknownObjectClass, TypeError) as e:
                    logger.warning("query skips a damaged index entry: %s", e)

    def _index_class_names(self) -> set[str]:
        """The class directories of the index (one listing)."""
        root = self.path(OBJECTS, INDEX)
        self._invalidate(root)
        try:
            entries = self.fs.ls(root, detail=True)
        except FileNotFoundError:
            return set()
        return {
            str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            for e in entries
            if e.get("type") == "directory"
        }

    def _fetch_ancillary(self, location: str, dest: str) -> str:
        """The ancillary directory itself on a local file system; else its files downloaded
        into ``dest`` (names checked: nothing is written outside ``dest``).
        """
        if isinstance(self.fs, LocalFileSystem):
            return super()._fetch_ancillary(location, dest)
        base = self.url.rstrip("/") + "/"
        if not location.startswith(base):
            raise DataCorrupted(
                f"ancillary location {redact_url(location)!r} is not under {redact_url(self.url)}"
            )
        src = self.path(*location[len(base) :].split("/"))
        target = os.path.join(dest, "ancillary")
        os.makedirs(target)
        for path in self._find(src):
            rel = str(path)[len(src) :].strip("/")
            parts = rel.split("/")
            if not rel or any(p in ("", ".", "..") for p in parts):
                raise DataCorrupted(f"ancillary file {path!r} has a bad name")
            local = os.path.join(target, *parts)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self.fs.get_file(path, local)
        return target

    def _find(self, root: str) -> list[str]:
        self._invalidate(root)
        try:
            found = self.fs.find(root)
        except FileNotFoundError:
            return []
        return [str(p) for p in found]

    # -- array data types -------------------------------------------------------------------
    def _index_array(self, backend_key: str, manifest: Manifest) -> None:
        """Index committed data at ``backend_key`` as a :class:`StoredArrayData` object.

        Called right after a save commits. A failure is logged, not raised: the data is
        committed either way, and :meth:`rebuild_object_index` indexes it later.
        """
        try:
            obj = StoredArrayData.from_manifest(manifest, backend_key)
            key = object_key(obj)
            rel = self.layout.attempt_prefix(backend_key, manifest.attempt)
            raw = document_bytes(obj.to_document(key, rel))
            with self._object_lock:
                self._cache_discard(key)
                paths = [self._doc_path(key), self._index_path(key, obj)]
                remote = not isinstance(self.fs, LocalFileSystem)
                if remote and getattr(self.fs, "async_impl", False):
                    # remote: both documents at once (one round trip after the commit)
                    with ThreadPoolExecutor(2, thread_name_prefix="strata-index") as pool:
                        for done in [pool.submit(atomic_write, self.fs, p, raw) for p in paths]:
                            done.result()
                else:
                    for path in paths:
                        atomic_write(self.fs, path, raw)
        except Exception as e:
            logger.warning(
                "%s is committed but could not be indexed as a stored object (%s); "
                "rebuild_object_index() will index it",
                manifest.key,
                e,
            )

    def _unindex_array(self, backend_key: str) -> None:
        """Remove the object of the data at ``backend_key`` (before the data is removed)."""
        run_id, data_type, h = self.parse_backend_key(backend_key)
        ident = {"run_id": run_id, "data_type": data_type, "lineage_hash": h}
        key = key_for_identity(StoredArrayData.stored_name, ident)
        self._cache_discard(key)
        for path in (
            self.path(
                OBJECTS,
                INDEX,
                StoredArrayData.stored_name,
                index_component(run_id),
                index_component(data_type),
                f"{key}.json",
            ),
            self._doc_path(key),
        ):
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass

    # -- maintenance ------------------------------------------------------------------------
    def rebuild_object_index(self) -> int:
        """Rewrite the object index from the stored documents and the committed manifests.

        Repairs what a crash between two writes left (an object or a commit that queries do
        not find, a stale index entry). Returns the number of objects indexed.
        """
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot rebuild its object index")
        count = 0
        live: set[str] = set()
        with self._object_lock:
            for bk in self.list_backend_keys():
                try:
                    m = self.get_metadata(bk)
                except (DataNotAvailable, DataCorrupted, InvalidKey):
                    continue
                self._index_array(bk, m)
            for path in self._find(self.path(OBJECTS)):
                rel = path[len(self.path(OBJECTS)) :].strip("/")
                if "/" in rel or not rel.endswith(".json"):
                    continue
                key = rel[: -len(".json")]
                try:
                    doc = self._read_doc(key)
                    if doc is None:
                        continue
                    obj = from_document(doc, None, self._where(key))
                except (DataCorrupted, UnknownObjectClass, InvalidKey) as e:
                    logger.warning("rebuild_object_index skips %s: %s", key, e)
                    continue
                self._index_add(key, obj)
                live.add(self._index_path(key, obj))
                count += 1
            for path in self._find(self.path(OBJECTS, INDEX)):
                if path.endswith(".json") and path not in live:
                    logger.info("removing stale index entry %s", path)
                    self.fs.rm_file(path)
        return count

    def gc_objects(self, min_age_seconds: float = 3600.0, dry_run: bool = False) -> list[str]:
        """Remove ancillary attempt directories no document names (left by crashes or by the
        loser of two simultaneous replacements) and stale temporary files.

        Only attempts older than ``min_age_seconds`` are removed. Returns the removed paths,
        relative to the root.
        """
        if not dry_run and self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot gc")
        removed = []
        now = _dt.datetime.now(_dt.UTC)
        base = self.path(OBJECTS)
        self._invalidate(base)
        try:
            names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        except FileNotFoundError:
            return []
        for name in sorted(names):
            if name == INDEX or name.endswith(".json") or name.endswith(".tmp"):
                continue
            try:
                doc = self._read_doc(name)
            except (DataCorrupted, InvalidKey):
                continue
            live = (doc or {}).get("ancillary")
            self._invalidate(f"{base}/{name}")
            try:
                subs = self.fs.ls(f"{base}/{name}", detail=False)
            except FileNotFoundError:  # removed meanwhile (another gc, a removal)
                continue
            for sub in subs:
                att = str(sub).rstrip("/").rsplit("/", 1)[-1]
                started = layout.attempt_started(att) if layout.is_object_attempt(att) else None
                if started is None or f"{OBJECTS}/{name}/{att}" == live:
                    continue
                if (now - started).total_seconds() < min_age_seconds:
                    continue
                removed.append(f"{OBJECTS}/{name}/{att}")
                if not dry_run:
                    self._rm_tree(f"{OBJECTS}/{name}/{att}")
        for path in self._find(base):
            rel = path[len(base) :].strip("/")
            # our temporary files: of documents (objects/) and index entries (objects/_index/);
            # never anything inside an ancillary directory
            if not rel.endswith(".tmp") or ("/" in rel and not rel.startswith(f"{INDEX}/")):
                continue
            try:
                modified = self.fs.modified(path)
            except (FileNotFoundError, NotImplementedError):
                continue
            if modified.tzinfo is None:
                modified = modified.replace(tzinfo=_dt.UTC)
            if (now - modified).total_seconds() < min_age_seconds:
                continue
            removed.append(path[len(self.path()) :].strip("/"))
            if not dry_run:
                try:
                    self.fs.rm_file(path)
                except FileNotFoundError:
                    pass
        return removed


def _is_backend_key(bk: str) -> bool:
    try:
        layout.parse_backend_key(bk)
    except InvalidKey:
        return False
    return True
