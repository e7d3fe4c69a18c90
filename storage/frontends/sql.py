"""SQLFrontend: a catalog database, embedded SQLite by default, PostgreSQL for a shared catalog.

The catalog stores, per committed key: run id, data type, lineage (canonical JSON) and its hash,
a summary of the manifest (rows, bytes, time span, partitions, dtype, metadata), a state, and
one location per backend that holds a copy (the same data may be on local disk and in S3).
Run-level metadata documents live in it too, with their modes and tag names in two label
tables written in the same transaction, which run queries filter on (strax's
``select_runs``: patterns evaluated by the database). Payloads stay in the backends (Zarr over
fsspec).

Lookups use indexes only:

- an exact :meth:`~SQLFrontend.find` is one probe of the unique index on
  ``(run_id, data_type, lineage_hash)``, joined to the locations by primary key;
- a fuzzy find is evaluated in SQL too. Each lineage entry is also stored as a row
  ``(entry, data type, plugin, version)`` and each tracked option as a row
  ``(entry, data type, option, hash of its canonical JSON value)``. For a wanted key the
  database takes the entries of the same ``(run_id, data_type)`` (index) and keeps those whose
  non-ignored lineage rows are exactly the wanted ones: the number of rows left after dropping
  the ``fuzzy_for`` data types and the ``fuzzy_for_options`` option names equals the wanted
  number, and so does the number of those rows equal to a wanted one. Python only re-checks the
  one row it returns with :func:`strata.storage.keys.lineage_matches`. The cost grows with the
  number of stored variants of that run and data type, not with the size of the catalog.

Many writers: registration is one short transaction of idempotent upserts
(``INSERT ... ON CONFLICT``); SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` write
transactions and a busy timeout, PostgreSQL with its row locks; transient errors (locked
database, deadlock, serialisation failure) are retried. A key is registered only by the saver
that committed it, after its manifest is written, so the catalog never names uncommitted data.
SQLite catalogs are for one machine (its locking does not work over NFS); use PostgreSQL for a
catalog shared by a cluster.

The schema version is stored in the catalog; opening one of another version raises
:class:`SchemaVersionError`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    event,
    func,
    select,
    tuple_,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from .. import __version__
from ..backends.base import StorageBackend
from ..backends.zarr import ZarrBackend
from ..backends.zarr.backend import DEFAULT_CHUNK_TARGET_MB, DEFAULT_SHARD_TARGET_MB
from ..codecs import CompressorLike
from ..commit import LostRace
from ..errors import (
    DataCorrupted,
    DataExistsError,
    DataNotAvailable,
    InvalidKey,
    ReadOnlyError,
    StorageError,
)
from ..fs import redact_url
from ..keys import (
    HASH_LENGTH,
    DataKey,
    canonical_json,
    lineage_matches,
    normalize,
    validate_run_id,
)
from ..manifest import Manifest, now_iso
from ..saver import Saver
from .base import Entry, Location, RunQuery, RunRecord, StorageFrontend, pattern_matches

__all__ = [
    "SCHEMA_VERSION",
    "SQLFrontend",
    "SchemaVersionError",
    "default_data_url",
    "fnmatch_to_regex",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""Version of the catalog tables; stored in ``strata_info`` under ``schema_version``.
Version 2 added the run label tables (``strata_run_modes``, ``strata_run_tags``); a version 1
catalog is migrated when it is first opened writable (read-only, it is read as it is)."""

_RETRIES = 8
_BATCH = 256  # keys per statement of find_several
_PG_INIT_LOCK = 0x5354_5241_5441  # advisory lock id for schema creation ("STRATA")

T = TypeVar("T")


class SchemaVersionError(StorageError, RuntimeError):
    """The catalog was written with another schema version than this strata supports."""


# -- schema ---------------------------------------------------------------------------------
_Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite auto-increments INTEGER keys only

METADATA = MetaData()

info_table = Table(
    "strata_info",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

entries_table = Table(
    "strata_entries",
    METADATA,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("run_id", String(255), nullable=False),
    Column("data_type", String(255), nullable=False),
    Column("lineage_hash", String(64), nullable=False),
    Column("lineage", Text, nullable=False),  # canonical JSON
    Column("state", String(16), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("nbytes", BigInteger, nullable=False),
    Column("start_ns", BigInteger),
    Column("end_ns", BigInteger),
    Column("partitions", Integer, nullable=False),
    Column("dtype", Text, nullable=False),  # records.dtype_to_json
    Column("meta", Text, nullable=False),  # the manifest's metadata, JSON
    Column("writing_started", String(40), nullable=False),
    Column("writing_ended", String(40), nullable=False),
    Column("strata_version", String(40), nullable=False),
    Column("registered_at", String(40), nullable=False),
    UniqueConstraint("run_id", "data_type", "lineage_hash", name="uq_strata_entries_key"),
)

locations_table = Table(
    "strata_locations",
    METADATA,
    Column("entry_id", _Id, ForeignKey("strata_entries.id", ondelete="CASCADE"), nullable=False),
    Column("backend", String(255), nullable=False),
    Column("backend_key", Text, nullable=False),
    Column("attempt", String(64), nullable=False),
    Column("stored_bytes", BigInteger),  # bytes on storage of this copy, if measured
    Column("registered_at", String(40), nullable=False),
    PrimaryKeyConstraint("entry_id", "backend", name="pk_strata_locations"),
)

deps_table = Table(
    "strata_lineage_deps",
    METADATA,
    Column("entry_id", _Id, ForeignKey("strata_entries.id", ondelete="CASCADE"), nullable=False),
    Column("dep_type", String(255), nullable=False),
    Column("plugin", String(255), nullable=False),
    Column("version", Text, nullable=False),  # canonical JSON of the version
    PrimaryKeyConstraint("entry_id", "dep_type", name="pk_strata_lineage_deps"),
)

options_table = Table(
    "strata_lineage_options",
    METADATA,
    Column("entry_id", _Id, ForeignKey("strata_entries.id", ondelete="CASCADE"), nullable=False),
    Column("dep_type", String(255), nullable=False),
    Column("option", String(255), nullable=False),
    Column("value_hash", String(32), nullable=False),
    Column("value", Text, nullable=False),  # canonical JSON, for people reading the database
    PrimaryKeyConstraint("entry_id", "dep_type", "option", name="pk_strata_lineage_options"),
    Index("ix_strata_options_value", "option", "value_hash"),
)

runs_table = Table(
    "strata_runs",
    METADATA,
    Column("run_id", String(255), primary_key=True),
    Column("doc", Text, nullable=False),
    Column("updated_at", String(40), nullable=False),
)

# The strings of each run document's ``mode`` and the names of its ``tags``, in document
# order, written with the document in one transaction: run queries filter on these, so they
# never parse the documents they do not return (schema version 2).
run_modes_table = Table(
    "strata_run_modes",
    METADATA,
    Column(
        "run_id", String(255), ForeignKey("strata_runs.run_id", ondelete="CASCADE"), nullable=False
    ),
    Column("position", Integer, nullable=False),
    Column("mode", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "position", name="pk_strata_run_modes"),
)

run_tags_table = Table(
    "strata_run_tags",
    METADATA,
    Column(
        "run_id", String(255), ForeignKey("strata_runs.run_id", ondelete="CASCADE"), nullable=False
    ),
    Column("position", Integer, nullable=False),
    Column("tag", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "position", name="pk_strata_run_tags"),
)
_LABEL_TABLES = ((run_modes_table, "mode"), (run_tags_table, "tag"))


def run_labels(doc: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The modes and tag names of a run document, as the label tables hold them (strings
    PostgreSQL cannot store, with a NUL character, are left out).
    """
    record = RunRecord.from_values("_", True, doc.get("mode"), doc.get("tags"), {})
    return (
        tuple(m for m in record.mode if "\x00" not in m),
        tuple(t for t in record.tags if "\x00" not in t),
    )


def _hash_of(canonical: str) -> str:
    """:func:`strata.storage.keys.lineage_hash` of an already canonical lineage JSON."""
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.b32encode(digest).decode().lower()[:HASH_LENGTH]


def value_hash(value: Any) -> str:
    """The hash under which an option value is compared in SQL (of its canonical JSON)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:32]


def lineage_rows(lineage: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The dependency rows and option rows of a (normalised) lineage, without ``entry_id``."""
    deps, opts = [], []
    for dt, (plugin, version, options) in sorted(normalize(lineage).items()):
        deps.append({"dep_type": dt, "plugin": str(plugin), "version": canonical_json(version)})
        for name, v in sorted(options.items()):
            opts.append(
                {
                    "dep_type": dt,
                    "option": name,
                    "value_hash": value_hash(v),
                    "value": canonical_json(v),
                }
            )
    return deps, opts


# -- prepared statements (built once: building SQLAlchemy expressions costs more than the
# indexed lookups they describe) ----------------------------------------------------------
@functools.cache
def _exact_statement() -> Any:
    e, loc = entries_table, locations_table
    where = sa.and_(
        e.c.run_id == bindparam("run_id"),
        e.c.data_type == bindparam("data_type"),
        e.c.lineage_hash == bindparam("hash"),
    )
    return (
        select(
            e.c.id,
            e.c.run_id,
            e.c.data_type,
            e.c.lineage_hash,
            e.c.lineage,
            loc.c.backend,
            loc.c.backend_key,
        )
        .join(loc, loc.c.entry_id == e.c.id)
        .where(where, e.c.state == "committed")
    )


@functools.cache
def _exact_many_statement(size: int) -> Any:
    """``size`` exact lookups in one statement: the wanted keys as a ``VALUES`` table joined to
    the entries, so each is one probe of the unique index (SQLite does not plan a row-value
    ``IN`` list as index probes). Parameters ``r<i>``, ``t<i>``, ``h<i>``. Plain SQL text:
    SQLAlchemy would compile a ``VALUES`` construct again for every call.
    """
    rows = ", ".join(f"(:r{i}, :t{i}, :h{i})" for i in range(size))
    e, loc = entries_table.name, locations_table.name
    return sa.text(
        f"WITH wanted(run_id, data_type, lineage_hash) AS (VALUES {rows}) "
        "SELECT e.id, e.run_id, e.data_type, e.lineage_hash, e.lineage, l.backend, "
        f"l.backend_key FROM wanted JOIN {e} e ON e.run_id = wanted.run_id "
        "AND e.data_type = wanted.data_type AND e.lineage_hash = wanted.lineage_hash "
        f"JOIN {loc} l ON l.entry_id = e.id WHERE e.state = 'committed'"
    )


@functools.cache
def _fuzzy_statement(skip_types: bool, skip_opts: bool, has_deps: bool, has_opts: bool) -> Any:
    """Entries of one ``(run_id, data_type)`` whose lineage rows, less the ignored ones, are
    exactly the wanted ones: as many rows are left as wanted, and as many of them are equal to
    a wanted row (rows are unique per entry, so equal counts mean equal sets).
    """
    e, d, o, loc = entries_table, deps_table, options_table, locations_table

    def count(table: Table, *conds: Any) -> Any:
        return (
            select(func.count())
            .select_from(table)
            .where(table.c.entry_id == e.c.id, *conds)
            .scalar_subquery()
        )

    skip_t: Any = bindparam("skip_types", expanding=True)
    dep_kept = [d.c.dep_type.not_in(skip_t)] if skip_types else []
    opt_kept = [o.c.dep_type.not_in(skip_t)] if skip_types else []
    if skip_opts:
        opt_kept.append(o.c.option.not_in(bindparam("skip_opts", expanding=True)))
    n_deps: Any = bindparam("n_deps")
    n_opts: Any = bindparam("n_opts")
    conds = [count(d, *dep_kept) == n_deps, count(o, *opt_kept) == n_opts]
    want: Any
    if has_deps:
        want = bindparam("want_deps", expanding=True)
        conds.append(count(d, tuple_(d.c.dep_type, d.c.plugin, d.c.version).in_(want)) == n_deps)
    if has_opts:
        want = bindparam("want_opts", expanding=True)
        conds.append(count(o, tuple_(o.c.dep_type, o.c.option, o.c.value_hash).in_(want)) == n_opts)
    return (
        select(e.c.id, e.c.run_id, e.c.data_type, e.c.lineage, loc.c.backend, loc.c.backend_key)
        .join(loc, loc.c.entry_id == e.c.id)
        .where(
            e.c.run_id == bindparam("run_id"),
            e.c.data_type == bindparam("data_type"),
            e.c.state == "committed",
            *conds,
        )
        .order_by(e.c.id.desc())
    )


# -- engines --------------------------------------------------------------------------------
_ENGINES: dict[tuple[str, int], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def normalize_db_url(db_url: str) -> str:
    """``db_url`` with an absolute SQLite path and psycopg 3 as the PostgreSQL driver."""
    if not isinstance(db_url, str) or "://" not in db_url:
        raise ValueError(
            f"catalog URL must look like sqlite:///path or postgresql://..., got {db_url!r}"
        )
    if db_url.startswith("postgres://"):
        db_url = "postgresql://" + db_url[len("postgres://") :]
    url = make_url(db_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not url.database.startswith("file:"):
            url = url.set(database=os.path.abspath(os.path.expanduser(url.database)))
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(
            f"unsupported catalog database {url.get_backend_name()!r}: use sqlite or postgresql"
        )
    return url.render_as_string(hide_password=False)


def _is_memory_sqlite(db_url: str) -> bool:
    url = make_url(db_url)
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _make_engine(db_url: str) -> Engine:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 60, "check_same_thread": False}}
        memory = _is_memory_sqlite(db_url)
        if memory:
            kwargs["poolclass"] = sa.pool.StaticPool
        engine = sa.create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, record: Any) -> None:
            # We issue BEGIN ourselves (below), so pysqlite must not.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 60000")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("PRAGMA cache_size = -32768")  # 32 MiB: the inner B-tree pages stay
            # run queries match patterns inside SQLite with Python's own fnmatch / re
            dbapi_conn.create_function("strata_match", 3, _sqlite_match, deterministic=True)
            if not memory:
                cur.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A write transaction takes the write lock up front: two deferred transactions
            # that both read and then write would deadlock, and SQLite fails one at once.
            write = conn.get_execution_options().get("strata_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    # few idle connections per process: a cluster has many worker processes
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=8)


def _engine(db_url: str) -> Engine:
    """One engine per URL and process (connections never cross a fork)."""
    k = (db_url, os.getpid())
    with _ENGINES_LOCK:
        if k not in _ENGINES:
            _ENGINES[k] = _make_engine(db_url)
        return _ENGINES[k]


def _transient(e: DBAPIError) -> bool:
    code = getattr(e.orig, "sqlstate", None)
    if code in ("40001", "40P01", "55P03", "57P03"):  # serialisation, deadlock, lock, starting
        return True
    msg = str(e.orig).lower()
    return (
        "database is locked" in msg
        or "database is busy" in msg
        or "database table is locked" in msg
    )


def default_data_url(db_url: str) -> str:
    """The data directory of a SQLite catalog without explicit backends: ``<stem>_data`` beside
    the database file (``/x/catalog.db`` -> ``/x/catalog_data``).
    """
    url = make_url(normalize_db_url(db_url))
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise ValueError(
            f"{redact_url(db_url)} has no data directory of its own: pass data_url= or backends="
        )
    db = url.database
    assert db is not None
    if db.startswith("file:"):
        db = db[len("file:") :].split("?", 1)[0]
    stem, _ = os.path.splitext(db)
    return f"{stem}_data"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


# -- run queries in SQL ---------------------------------------------------------------------
def _sqlite_match(kind: str, pattern: str, value: Any) -> int:
    """``strata_match(kind, pattern, value)`` in SQLite: ``kind`` is ``f`` (fnmatch) or ``r``
    (re), with ``u`` appended to strip one leading underscore from the value first.
    """
    if not isinstance(value, str) or not isinstance(pattern, str) or not kind:
        return 0
    if kind.endswith("u") and value.startswith("_"):
        value = value[1:]
    return int(pattern_matches("fnmatch" if kind[0] == "f" else "re", pattern, value))


def _are_char(c: str) -> str:
    """``c`` as a literal in a PostgreSQL (ARE) or Python regular expression."""
    return c if c.isalnum() and c.isascii() else "\\" + c


def _bracket(pat: str, i: int, j: int) -> str | None:
    """The regular-expression set of the fnmatch bracket ``pat[i:j]`` (without ``[`` and
    ``]``), as Python's ``fnmatch.translate`` reads it (3.11: ``!`` negates, ``-`` makes
    ranges, reversed ranges are dropped); ``None`` if it matches no character.
    """
    negate = pat[i] == "!"
    if "-" not in pat[i:j]:
        chunks = [pat[i:j]]
    else:  # Python's chunking: a hyphen right after '[', '[!' or a range is literal
        chunks = []
        k = i + 2 if pat[i] == "!" else i + 1
        while True:
            k = pat.find("-", k, j)
            if k < 0:
                break
            chunks.append(pat[i:k])
            i = k + 1
            k = k + 3
        chunk = pat[i:j]
        if chunk:
            chunks.append(chunk)
        else:
            chunks[-1] += "-"
        for k in range(len(chunks) - 1, 0, -1):  # remove empty ranges
            if chunks[k - 1][-1] > chunks[k][0]:
                chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
                del chunks[k]
    if negate:
        chunks[0] = chunks[0][1:]
    items: list[str] = []
    for n, c in enumerate(chunks):
        body = c
        if n > 0:  # its first character ends the range begun by the previous chunk
            items[-1] = f"{items[-1]}-{_are_char(body[0])}"
            body = body[1:]
        items.extend(_are_char(x) for x in body)
    if not items:
        return "." if negate else None
    return f"[{'^' if negate else ''}{''.join(items)}]"


def fnmatch_to_regex(pattern: str) -> str | None:
    r"""An anchored regular expression, valid for PostgreSQL (ARE) and Python, that matches
    what ``fnmatch.fnmatchcase(value, pattern)`` matches; ``None`` if nothing can match.

    >>> print(fnmatch_to_regex("run_0*[!x]?"))
    ^run\_0.*[^x].$
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")
                continue
            part = _bracket(pattern, i, j)
            if part is None:
                return None
            out.append(part)
            i = j + 1
        else:
            out.append(_are_char(c))
    return "^" + "".join(out) + "$"


_ARE_SAFE = re.compile(r"(?:[^\\(]|\\[^A-Za-z0-9]|\\[dDsSwWnt]|\((?:\?[:=!])?)*\Z")


def _regex_for_postgres(pattern: str) -> str | None:
    r"""A PostgreSQL regular expression matching as ``re.match(pattern, value)``, or ``None``
    when the pattern uses syntax the two read differently (``\b`` is a backspace in
    PostgreSQL, ``(?P<name>...)`` does not exist there, ...): such a query is evaluated in
    Python instead.
    """
    if not _ARE_SAFE.match(pattern) or re.search(r"\[[:.=]", pattern):  # [[:alpha:]] too
        return None
    return f"^(?:{pattern})"


class _RunSQL:
    """Builds the SQL of one :class:`RunQuery` for one dialect; collects its parameters.

    Filters read the label tables (``strata_run_modes``, ``strata_run_tags``), never the
    documents; a document is read (parsed by the database) only for the selected runs, to check
    it is a JSON object and to project the requested fields.
    """

    def __init__(self, dialect: str, query: RunQuery) -> None:
        self.pg = dialect == "postgresql"
        self.q = query
        self.params: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def match(self, expr: str, pattern: str, tag: bool = False) -> str:
        strip = tag and self.q.ignore_underscore and not pattern.startswith("_")
        fn = self.q.pattern_type == "fnmatch"
        if fn and not any(c in pattern for c in "*?["):  # a literal: equality
            if strip:  # "_x" matches "x" too
                return f"({expr} IN ({self.bind(pattern)}, {self.bind('_' + pattern)}))"
            return f"({expr} = {self.bind(pattern)})"
        if not self.pg and fn and "[" not in pattern:  # only * and ?: GLOB is fnmatchcase
            if strip:
                expr = (
                    f"(CASE WHEN substr({expr}, 1, 1) = '_' THEN substr({expr}, 2) ELSE {expr} END)"
                )
            return f"({expr} GLOB {self.bind(pattern)})"
        if not self.pg:
            kind = ("f" if fn else "r") + ("u" if strip else "")
            return f"(strata_match({self.bind(kind)}, {self.bind(pattern)}, {expr}) = 1)"
        regex = fnmatch_to_regex(pattern) if fn else _regex_for_postgres(pattern)
        if regex is None:
            if not fn:
                raise _NotInSQL(pattern)
            return "FALSE"
        if strip:
            expr = f"(CASE WHEN left({expr}, 1) = '_' THEN substr({expr}, 2) ELSE {expr} END)"
        return f"({expr} ~ {self.bind(regex)})"

    def any_of(self, expr: str, patterns: Sequence[str], tag: bool = False) -> str:
        return "(" + " OR ".join(self.match(expr, p, tag) for p in patterns) + ")"

    def labelled(
        self, table: Table, column: str, patterns: Sequence[str] | None, tag: bool = False
    ) -> str:
        """Whether run ``r`` has a label in ``table`` (matching one of ``patterns``).

        SQLite: ``r.run_id IN (labels)``, evaluated once, which lets it fetch only the runs
        found (by primary key) instead of reading every document's row. PostgreSQL:
        ``EXISTS``, which it plans as a semi-join (and ``NOT EXISTS`` as an anti-join, which
        it does not do for ``NOT IN``).
        """
        match = "" if patterns is None else self.any_of(f"l.{column}", patterns, tag)
        if self.pg:
            also = f" AND {match}" if match else ""
            return f"EXISTS (SELECT 1 FROM {table.name} AS l WHERE l.run_id = r.run_id{also})"
        where = f" WHERE {match}" if match else ""
        return f"r.run_id IN (SELECT l.run_id FROM {table.name} AS l{where})"

    def mode_condition(self) -> str:
        modes = self.labelled(run_modes_table, "mode", self.q.run_mode)
        # a run without a mode string has the mode "" (a constant condition, decided here)
        if all(not pattern_matches(self.q.pattern_type, p, "") for p in self.q.run_mode):
            return modes
        return f"({modes} OR NOT {self.labelled(run_modes_table, 'mode', None)})"

    def field(self, path: str) -> str:
        parts = path.split(".")
        if self.pg:
            return f"(d.j #> CAST({self.bind(parts)} AS text[]))"
        sqlite_path = "$" + "".join(f'."{p}"' for p in parts)  # parts hold no '"' (validated)
        return f"(CASE WHEN json_valid(r.doc) THEN r.doc -> {self.bind(sqlite_path)} END)"

    def labels(self, table: Table, column: str) -> str:
        """The labels of run ``r`` in document order: a text array (PostgreSQL) or a JSON
        object ``{position: label}`` (SQLite, whose aggregates keep no order).
        """
        if self.pg:
            return (
                f"ARRAY(SELECT l.{column} FROM {table.name} AS l WHERE l.run_id = r.run_id "
                "ORDER BY l.position)"
            )
        return (
            f"(SELECT json_group_object(l.position, l.{column}) FROM {table.name} AS l "
            "WHERE l.run_id = r.run_id)"
        )

    def statements(self) -> tuple[str, list[str]]:
        """The statement selecting the runs (``run_id``, whether the document is a JSON
        object, [modes, tags,] the fields), and the statements reading the labels of every run
        (``run_id``, label, in document order) when nothing is filtered: then two plain
        scans cost less than one probe per run; with filters, the labels of the selected runs
        come with them (the filters are evaluated once).
        """
        q = self.q
        ok = (
            "(jsonb_typeof(d.j) = 'object')"
            if self.pg
            # valid JSON starting with '{' is an object: one parse, not two
            else "(CASE WHEN json_valid(r.doc) THEN ltrim(r.doc, ' ' || char(9, 10, 13)) "
            "LIKE '{%' ELSE 0 END)"
        )
        conds = []
        if q.run_id:
            conds.append(self.any_of("r.run_id", q.run_id))
        if q.run_mode:
            conds.append(self.mode_condition())
        if q.include_tags:
            conds.append(self.labelled(run_tags_table, "tag", q.include_tags, True))
        if q.exclude_tags:
            conds.append(f"NOT {self.labelled(run_tags_table, 'tag', q.exclude_tags, True)}")
        cols = ["r.run_id", ok]
        if conds:
            cols += [self.labels(table, column) for table, column in _LABEL_TABLES]
        cols += [self.field(f) for f in q.fields]
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        # PostgreSQL parses each selected document once (the filters above apply first)
        source = f"{runs_table.name} AS r"
        if self.pg:
            # OFFSET 0 keeps the planner from copying the cast into every use of d.j
            source += " CROSS JOIN LATERAL (SELECT CAST(r.doc AS jsonb) AS j OFFSET 0) AS d"
        main = f"SELECT {', '.join(cols)} FROM {source}{where}"
        if conds:
            return main, []
        return main, [
            f"SELECT l.run_id, l.{column} FROM {table.name} AS l ORDER BY l.run_id, l.position"
            for table, column in _LABEL_TABLES
        ]


class _NotInSQL(Exception):
    """A pattern this database cannot evaluate as Python would: the query runs in Python."""


def _in_order(labels: str | None) -> list[str]:
    """The labels of an SQLite ``json_group_object(position, label)`` in position order."""
    if labels is None:
        return []
    return [v for _, v in sorted(json.loads(labels).items(), key=lambda kv: int(kv[0]))]


class SQLFrontend(StorageFrontend):
    """A catalog in a SQL database (SQLAlchemy): SQLite by default, PostgreSQL when shared.

    Run queries (:meth:`query_runs`, behind ``scan_runs`` / ``select_runs``) are evaluated in
    the database: the filters read the run label tables (each document's modes and tag names,
    written with it), and the database parses only the selected documents, to project the
    requested fields with its JSON functions.

    Parameters
    ----------
    db_url
        ``sqlite:///relative/catalog.db`` or ``sqlite:////absolute/catalog.db`` (SQLAlchemy's
        convention: three slashes, then the path; a relative path is made absolute) or
        ``postgresql://user:password@host:port/db`` (psycopg 3 is used; another driver may be
        named, e.g. ``postgresql+psycopg://``).
    backends
        ``{name: backend or URL}``, in the order :meth:`find` prefers them. URLs become
        :class:`~strata.storage.backends.zarr.ZarrBackend` objects. Default: one backend called
        ``"data"`` at ``data_url``.
    data_url
        URL of the default backend. Default for a SQLite file: the directory ``<stem>_data``
        next to it (``catalog.db`` -> ``catalog_data``); PostgreSQL needs ``data_url`` or
        ``backends``.
    storage_options, compressor, chunk_target_mb, shard_target_mb
        For backends built here from URLs.
    save_to
        Name of the backend new data goes to; default the first writable one.
    verify_locations
        :meth:`find` checks that a location's manifest exists before returning it and falls
        back to the next backend if not (one small read per find). ``False`` trusts the
        catalog.
    readonly, take_only, exclude
        See :class:`~strata.storage.frontends.base.StorageFrontend`. A read-only frontend never
        creates the catalog.
    storage_kind
        How far the data is (default ``"online"``: a catalog database in front of its data).

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> fe = SQLFrontend(f"sqlite:///{d}/catalog.db")
    >>> fe.backends["data"].url == f"{d}/catalog_data"
    True

    """

    def __init__(
        self,
        db_url: str,
        backends: Mapping[str, StorageBackend | str] | None = None,
        data_url: str | None = None,
        storage_options: dict[str, Any] | None = None,
        save_to: str | None = None,
        verify_locations: bool = True,
        readonly: bool = False,
        take_only: Iterable[str] = (),
        exclude: Iterable[str] = (),
        compressor: CompressorLike = None,
        chunk_target_mb: float = DEFAULT_CHUNK_TARGET_MB,
        storage_kind: str | None = None,
        shard_target_mb: float = DEFAULT_SHARD_TARGET_MB,
    ) -> None:
        super().__init__(
            readonly=readonly, take_only=take_only, exclude=exclude, storage_kind=storage_kind
        )
        self.db_url = normalize_db_url(db_url)
        opts: dict[str, Any] = {
            "storage_options": storage_options,
            "compressor": compressor,
            "chunk_target_mb": chunk_target_mb,
            "shard_target_mb": shard_target_mb,
            "readonly": readonly,
        }
        if backends is None:
            backends = {"data": data_url or default_data_url(self.db_url)}
        elif data_url is not None:
            raise ValueError("pass either backends= or data_url=, not both")
        if not backends:
            raise ValueError("an SQLFrontend needs at least one backend")
        self.backends = {}
        for name, b in backends.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"backend names must be non-empty strings, got {name!r}")
            self.backends[name] = b if isinstance(b, StorageBackend) else ZarrBackend(b, **opts)
        if save_to is not None and save_to not in self.backends:
            raise ValueError(
                f"save_to={save_to!r} is not one of the backends {list(self.backends)}"
            )
        self.save_to = save_to
        self.verify_locations = verify_locations
        self._kwargs = {
            "db_url": self.db_url,
            "backends": dict(self.backends),
            "save_to": save_to,
            "verify_locations": verify_locations,
            "readonly": readonly,
            "take_only": self.take_only,
            "exclude": self.exclude,
        }
        self._open()

    storage_kind = "online"

    # -- identity ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        ro = ", readonly=True" if self.readonly else ""
        return f"SQLFrontend({redact_url(self.db_url)!r}{ro})"

    # -- database plumbing ------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (one per URL and process)."""
        return _engine(self.db_url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def _insert(self, table: Table) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _run(self, fn: Callable[[Connection], T], write: bool = False) -> T:
        """Run ``fn(connection)`` in one transaction, retrying transient failures."""
        for attempt in range(_RETRIES):
            try:
                with self.engine.connect() as conn:
                    if write:
                        conn = conn.execution_options(strata_write=True)
                    with conn.begin():
                        return fn(conn)
            except OperationalError as e:
                if attempt == _RETRIES - 1 or not _transient(e):
                    raise StorageError(
                        f"catalog {self!r}: {type(e.orig).__name__}: {e.orig}"
                    ) from e
            except DBAPIError as e:
                if attempt == _RETRIES - 1 or not _transient(e):
                    raise
            # back off (randomised, growing) before retrying a transient conflict
            time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
            logger.debug("retrying a catalog transaction on %r (attempt %d)", self, attempt + 2)
        raise AssertionError("unreachable")

    def _open(self) -> None:
        """Check the schema version; create the schema first if there is none (unless
        read-only). Checking is one read; only creation takes the write lock.
        """
        url = make_url(self.db_url)
        if url.get_backend_name() == "sqlite" and not _is_memory_sqlite(self.db_url):
            path = url.database or ""
            if not path.startswith("file:"):
                if self.readonly and not os.path.exists(path):
                    raise DataNotAvailable(
                        f"no catalog database at {path} (read-only: not created)"
                    )
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

        def read_version(conn: Connection) -> str | None:
            if not sa.inspect(conn).has_table(info_table.name):
                return None
            return conn.execute(
                select(info_table.c.value).where(info_table.c.name == "schema_version")
            ).scalar()

        def create(conn: Connection) -> str | None:
            if self.dialect == "postgresql":  # one creator at a time
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_INIT_LOCK})
            if sa.inspect(conn).has_table(info_table.name):  # another process was first
                return read_version(conn)
            METADATA.create_all(conn)
            conn.execute(
                info_table.insert(),
                [
                    {"name": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"name": "created_by", "value": f"strata {__version__}"},
                    {"name": "created_at", "value": now_iso()},
                ],
            )
            logger.info("created strata catalog schema v%d in %r", SCHEMA_VERSION, self)
            return str(SCHEMA_VERSION)

        version = self._run(read_version)
        if version is None:
            if self.readonly:
                raise DataNotAvailable(f"{self!r} holds no strata catalog (read-only: not created)")
            version = self._run(create, write=True)
        self._labels = True
        """Whether the run label tables exist (schema 2): run queries filter in SQL."""
        if version == "1":
            if self.readonly:  # read as it is: run queries parse the documents in Python
                self._labels = False
                logger.info("%r has schema version 1: run queries run in Python", self)
                return
            version = self._run(self._migrate_from_1, write=True)
        if version != str(SCHEMA_VERSION):
            raise SchemaVersionError(
                f"catalog {self!r} has schema version {version}; this strata ({__version__}) "
                f"reads version {SCHEMA_VERSION}. Open it with a strata of that version, or "
                "migrate the catalog"
            )

    def _migrate_from_1(self, conn: Connection) -> str:
        """Schema 1 -> 2: create the run label tables and fill them from the documents (one
        transaction; one migrator at a time). Returns the version found at the end.
        """
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_INIT_LOCK})
        row = conn.execute(
            select(info_table.c.value).where(info_table.c.name == "schema_version")
        ).scalar()
        if row != "1":  # another process migrated it meanwhile
            return str(row)
        for table, _ in _LABEL_TABLES:
            table.create(conn, checkfirst=True)
        docs: dict[str, dict[str, Any]] = {}
        for run_id, raw in conn.execute(select(runs_table.c.run_id, runs_table.c.doc)):
            try:
                docs[run_id] = self._parse_run_document(run_id, raw)
            except DataCorrupted as e:  # no labels: queries name it when they meet it
                logger.warning("migrating %r: %s", self, e)
        self._write_labels(conn, docs)
        conn.execute(
            info_table.update()
            .where(info_table.c.name == "schema_version")
            .values(value=str(SCHEMA_VERSION))
        )
        logger.info("migrated %r to schema v%d (%d run documents)", self, SCHEMA_VERSION, len(docs))
        return str(SCHEMA_VERSION)

    def _write_labels(self, conn: Connection, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the label rows of these runs (inside the caller's transaction)."""
        ids = list(docs)
        rows: dict[str, list[dict[str, Any]]] = {"mode": [], "tag": []}
        for run_id, doc in docs.items():
            modes, tags = run_labels(doc)
            rows["mode"] += [
                {"run_id": run_id, "position": i, "mode": m} for i, m in enumerate(modes)
            ]
            rows["tag"] += [{"run_id": run_id, "position": i, "tag": t} for i, t in enumerate(tags)]
        for table, column in _LABEL_TABLES:
            for i in range(0, len(ids), _BATCH):
                conn.execute(table.delete().where(table.c.run_id.in_(ids[i : i + _BATCH])))
            if rows[column]:
                conn.execute(table.insert(), rows[column])

    def rebuild_run_index(self) -> int:
        """Write the run label tables again from the run documents (after documents were
        edited in the database by hand); returns the number of documents indexed.
        """
        self._check_writable("rebuild its run index")

        def rebuild(conn: Connection) -> int:
            docs = {}
            for run_id, raw in conn.execute(select(runs_table.c.run_id, runs_table.c.doc)):
                try:
                    docs[run_id] = self._parse_run_document(run_id, raw)
                except DataCorrupted as e:
                    logger.warning("rebuild_run_index: %s", e)
            for table, _ in _LABEL_TABLES:
                conn.execute(table.delete())
            self._write_labels(conn, docs)
            return len(docs)

        return self._run(rebuild, write=True)

    @property
    def schema_version(self) -> int:
        """The schema version stored in the catalog."""
        return int(
            self._run(
                lambda c: c.execute(
                    select(info_table.c.value).where(info_table.c.name == "schema_version")
                ).scalar_one()
            )
        )

    # -- locations --------------------------------------------------------------------------
    def _choose(
        self, key: DataKey, locs: Sequence[tuple[str, str]], verify: bool | None = None
    ) -> Location | None:
        """The first location, in backend order, that is configured here (and exists)."""
        by_name = dict(locs)
        verify = self.verify_locations if verify is None else verify
        for name, backend in self.backends.items():
            bk = by_name.get(name)
            if bk is None:
                continue
            if verify and not backend.exists(bk):
                logger.warning(
                    "catalog %r lists %s in backend %r at %r, but nothing is committed there",
                    self,
                    key,
                    name,
                    bk,
                )
                continue
            return Location(name, bk)
        return None

    @staticmethod
    def _key_of(row: Any) -> DataKey:
        return DataKey(row.run_id, row.data_type, json.loads(row.lineage))

    # -- find -------------------------------------------------------------------------------
    def _exact_rows(
        self, conn: Connection, keys: Sequence[DataKey]
    ) -> list[tuple[int, list[tuple[str, str]]] | None]:
        """Per key, ``(entry id, [(backend, backend_key), ...])`` if it is registered exactly,
        else ``None``.
        """
        # the lineage's canonical JSON and hash are computed once per distinct lineage: in
        # Python they cost more than the indexed lookup itself, and the keys of many runs
        # share one. A normalised lineage (plain JSON types) is identified by its repr.
        ids, names, wanted = [], [], {}
        by_repr: dict[str, tuple[str, str]] = {}
        by_id: dict[int, tuple[str, str]] = {}
        for k in keys:
            known = by_id.get(id(k.lineage))
            if known is None:
                shown = repr(k.lineage)
                known = by_repr.get(shown)
                if known is None:
                    c = canonical_json(k.lineage)
                    known = by_repr[shown] = (c, _hash_of(c))
                by_id[id(k.lineage)] = known
            lin, h = known
            ids.append((k.run_id, k.data_type, h))
            names.append(f"{k.run_id}-{k.data_type}-{h}")
            wanted[names[-1]] = lin
        found: dict[str, tuple[int, list[tuple[str, str]]]] = {}
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), _BATCH):
            chunk = unique[i : i + _BATCH]
            if len(chunk) == 1:
                run_id, data_type, h = chunk[0]
                params: dict[str, Any] = {"run_id": run_id, "data_type": data_type, "hash": h}
                result = conn.execute(_exact_statement(), params)
            else:
                size = 1 << (len(chunk) - 1).bit_length()  # few statement shapes, all cached
                padded = chunk + [chunk[-1]] * (size - len(chunk))
                flat = {
                    f"{c}{j}": v
                    for j, row in enumerate(padded)
                    for c, v in zip("rth", row, strict=True)
                }
                result = conn.execute(_exact_many_statement(size), flat)
            for r in result:
                s = f"{r.run_id}-{r.data_type}-{r.lineage_hash}"
                if wanted.get(s) != r.lineage:  # a hash collision, or a damaged row
                    logger.warning("catalog row %s does not hold the lineage its hash says", s)
                    continue
                locs = found.setdefault(s, (r.id, []))[1]
                if (r.backend, r.backend_key) not in locs:  # padding repeats a key
                    locs.append((r.backend, r.backend_key))
        return [found.get(n) for n in names]

    def _fuzzy_rows(
        self,
        conn: Connection,
        key: DataKey,
        fuzzy_for: tuple[str, ...],
        fuzzy_for_options: tuple[str, ...],
    ) -> list[Any]:
        """Entries of ``key``'s run and data type whose lineage matches fuzzily, newest first,
        one row per location: the whole comparison is done by the database.
        """
        skip_types, skip_opts = set(fuzzy_for), set(fuzzy_for_options)
        deps, opts = lineage_rows(key.lineage)
        want_deps = [
            (r["dep_type"], r["plugin"], r["version"])
            for r in deps
            if r["dep_type"] not in skip_types
        ]
        want_opts = [
            (r["dep_type"], r["option"], r["value_hash"])
            for r in opts
            if r["dep_type"] not in skip_types and r["option"] not in skip_opts
        ]
        stmt = _fuzzy_statement(bool(skip_types), bool(skip_opts), bool(want_deps), bool(want_opts))
        params: dict[str, Any] = {
            "run_id": key.run_id,
            "data_type": key.data_type,
            "n_deps": len(want_deps),
            "n_opts": len(want_opts),
        }
        for name, value in (
            ("skip_types", sorted(skip_types)),
            ("skip_opts", sorted(skip_opts)),
            ("want_deps", want_deps),
            ("want_opts", want_opts),
        ):
            if value:
                params[name] = value
        return list(conn.execute(stmt, params))

    def _find(
        self, key: DataKey, fuzzy_for: tuple[str, ...], fuzzy_for_options: tuple[str, ...]
    ) -> tuple[Location, DataKey]:
        found = self._find_many([key], fuzzy_for, fuzzy_for_options)[0]
        if found is None:
            fuzzy = (
                f", not even fuzzily (fuzzy_for={list(fuzzy_for)}, "
                f"fuzzy_for_options={list(fuzzy_for_options)})"
                if fuzzy_for or fuzzy_for_options
                else ""
            )
            raise DataNotAvailable(f"{key} is not stored in {self!r}{fuzzy}")
        return found

    def _find_many(
        self,
        keys: Sequence[DataKey],
        fuzzy_for: tuple[str, ...],
        fuzzy_for_options: tuple[str, ...],
        verify: bool | None = None,
    ) -> list[tuple[Location, DataKey] | None]:
        out: list[tuple[Location, DataKey] | None] = [None] * len(keys)
        exact = self._run(lambda conn: self._exact_rows(conn, keys))
        left = []
        for i, k in enumerate(keys):
            hit = exact[i]
            loc = None if hit is None else self._choose(k, hit[1], verify)
            if loc is not None:
                out[i] = (loc, k)
            else:
                left.append(i)
        if not left or not (fuzzy_for or fuzzy_for_options):
            return out

        Candidate = tuple[str, str, str, list[tuple[str, str]]]  # run, type, lineage, locations

        def lookup(conn: Connection) -> dict[int, list[Candidate]]:
            found: dict[int, list[Candidate]] = {}
            for i in left:
                by_id: dict[int, Candidate] = {}
                for r in self._fuzzy_rows(conn, keys[i], fuzzy_for, fuzzy_for_options):
                    c = by_id.setdefault(r.id, (r.run_id, r.data_type, r.lineage, []))
                    c[3].append((r.backend, r.backend_key))
                found[i] = list(by_id.values())  # newest first
            return found

        for i, rows in self._run(lookup).items():
            for run_id, data_type, lin, locs in rows:  # newest first
                stored = DataKey(run_id, data_type, json.loads(lin))
                if not lineage_matches(
                    stored.lineage, keys[i].lineage, fuzzy_for, fuzzy_for_options
                ):
                    logger.warning("catalog fuzzy match %s does not match %s", stored, keys[i])
                    continue
                loc = self._choose(stored, locs, verify)
                if loc is not None:
                    out[i] = (loc, stored)
                    break
        return out

    def which_stored(
        self,
        keys: Sequence[DataKey],
        fuzzy_for: Iterable[str] = (),
        fuzzy_for_options: Iterable[str] = (),
    ) -> list[bool]:
        """Per key, whether the catalog has it (batched queries; the backends are not asked,
        as in :meth:`list`, whatever ``verify_locations`` says).
        """
        keys = list(keys)
        taken = [i for i, k in enumerate(keys) if self.takes(k.data_type)]
        found = self._find_many(
            [keys[i] for i in taken], tuple(fuzzy_for), tuple(fuzzy_for_options), verify=False
        )
        out = [False] * len(keys)
        for i, f in zip(taken, found, strict=True):
            out[i] = f is not None
        return out

    def find_several(
        self,
        keys: Sequence[DataKey],
        fuzzy_for: Iterable[str] = (),
        fuzzy_for_options: Iterable[str] = (),
    ) -> list[Location | None]:
        """:meth:`find` for several keys at once (exact lookups batched into few queries);
        ``None`` for each key not stored.
        """
        keys = list(keys)
        taken = [i for i, k in enumerate(keys) if self.takes(k.data_type)]
        found = self._find_many(
            [keys[i] for i in taken], tuple(fuzzy_for), tuple(fuzzy_for_options)
        )
        out: list[Location | None] = [None] * len(keys)
        for i, f in zip(taken, found, strict=True):
            out[i] = None if f is None else f[0]
        return out

    def locations(self, key: DataKey) -> list[Location]:
        """Every registered location of exactly ``key``, in backend order (unverified)."""
        hit = self._run(lambda c: self._exact_rows(c, [key]))[0]
        if hit is None:
            return []
        by_name = dict(hit[1])
        out = [Location(n, by_name[n]) for n in self.backends if n in by_name]
        out += [Location(n, bk) for n, bk in sorted(by_name.items()) if n not in self.backends]
        return out

    # -- list -------------------------------------------------------------------------------
    def _list(self, run_id: str | None) -> list[Entry]:
        e, loc = entries_table, locations_table
        q = (
            select(e, loc.c.backend, loc.c.backend_key, loc.c.stored_bytes)
            .join(loc, loc.c.entry_id == e.c.id)
            .where(e.c.state == "committed")
            .order_by(e.c.run_id, e.c.data_type, e.c.id)
        )
        if run_id is not None:
            q = q.where(e.c.run_id == run_id)
        rows = self._run(lambda c: list(c.execute(q)))
        grouped: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
        measured: dict[tuple[int, str], int | None] = {}
        for r in rows:
            grouped.setdefault(r.id, (r, []))[1].append((r.backend, r.backend_key))
            measured[(r.id, r.backend)] = r.stored_bytes
        out = []
        for r, locs in grouped.values():
            key = self._key_of(r)
            where = self._choose(key, locs, verify=False)
            if where is None:
                continue  # only on backends this frontend is not configured with
            out.append(
                Entry(
                    key=key,
                    location=where,
                    rows=r.rows,
                    nbytes=r.nbytes,
                    stored_bytes=measured[(r.id, where.backend)],
                    start=r.start_ns,
                    end=r.end_ns,
                    partitions=r.partitions,
                    writing_ended=r.writing_ended,
                )
            )
        return out

    # -- saving and registration ------------------------------------------------------------
    def _backend_for_save(self, key: DataKey) -> str:
        if self.save_to is not None:
            return self.save_to
        for name, b in self.backends.items():
            if not b.readonly:
                return name
        raise ReadOnlyError(f"{self!r} has no writable backend")

    def saver(
        self,
        key: DataKey,
        dtype: Any,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
        lost_race: LostRace = LostRace.RAISE,
        checked_absent: bool = False,
    ) -> Saver:
        """As :meth:`StorageFrontend.saver`; also ``DataExistsError`` if the catalog has the
        key in any backend (unless ``overwrite``, or ``checked_absent``: the caller just found
        it absent).
        """
        if not overwrite and not checked_absent and not self.readonly and self.takes(key.data_type):
            try:
                loc = self.find(key)
            except DataNotAvailable:
                pass
            else:
                raise DataExistsError(
                    f"{key} is already stored in {self!r} (backend {loc.backend!r}); "
                    "pass overwrite=True to replace it"
                )
        try:
            return super().saver(
                key,
                dtype,
                metadata=metadata,
                overwrite=overwrite,
                lost_race=lost_race,
                checked_absent=checked_absent,
            )
        except DataExistsError:
            self._reconcile(key)
            raise

    def _reconcile(self, key: DataKey) -> None:
        """Register ``key`` if its save backend holds a commit the catalog misses (the
        registration after that commit failed): storage and catalog never disagree for good.
        """
        name = self._backend_for_save(key)
        backend = self.backends[name]
        bk = backend.backend_key(key)
        try:
            m = backend.get_metadata(bk)
        except (DataNotAvailable, DataCorrupted):
            return
        if m.key == key:
            logger.warning("%s was committed in %r but not registered; registering it", key, name)
            self._register_many([(key, Location(name, bk, m), m)])

    def _entry_row(self, key: DataKey, manifest: Manifest) -> dict[str, Any]:
        return {
            "run_id": key.run_id,
            "data_type": key.data_type,
            "lineage_hash": key.lineage_hash,
            "lineage": canonical_json(key.lineage),
            "state": "committed",
            "rows": manifest.rows,
            "nbytes": manifest.nbytes,
            "start_ns": manifest.start,
            "end_ns": manifest.end,
            "partitions": len(manifest.partitions),
            "dtype": _json(manifest.dtype),
            "meta": _json(manifest.metadata),
            "writing_started": manifest.writing_started,
            "writing_ended": manifest.writing_ended,
            "strata_version": manifest.strata_version,
            "registered_at": now_iso(),
        }

    def _register_many(self, items: Sequence[tuple[DataKey, Location, Manifest]]) -> None:
        """Register committed data in one transaction (idempotent upserts)."""
        e = entries_table
        summary = [
            c.name
            for c in e.columns
            if c.name not in ("id", "run_id", "data_type", "lineage_hash", "lineage")
        ]
        # measured before the transaction, which must stay short
        rows = [
            (k, loc, self._entry_row(k, m), m.attempt, self._measure(loc, m)) for k, loc, m in items
        ]

        def register(conn: Connection) -> None:
            for key, loc, row, attempt, stored in rows:
                ins = self._insert(e).values(**row)
                stmt = ins.on_conflict_do_update(
                    index_elements=[e.c.run_id, e.c.data_type, e.c.lineage_hash],
                    set_={c: ins.excluded[c] for c in summary},
                ).returning(e.c.id)
                eid = conn.execute(stmt).scalar_one()
                deps, opts = lineage_rows(key.lineage)
                if deps:
                    conn.execute(
                        self._insert(deps_table).on_conflict_do_nothing(),
                        [{"entry_id": eid, **r} for r in deps],
                    )
                if opts:
                    conn.execute(
                        self._insert(options_table).on_conflict_do_nothing(),
                        [{"entry_id": eid, **r} for r in opts],
                    )
                lins = self._insert(locations_table).values(
                    entry_id=eid,
                    backend=loc.backend,
                    backend_key=loc.backend_key,
                    attempt=attempt,
                    stored_bytes=stored,
                    registered_at=row["registered_at"],
                )
                conn.execute(
                    lins.on_conflict_do_update(
                        index_elements=[locations_table.c.entry_id, locations_table.c.backend],
                        set_={
                            "backend_key": lins.excluded.backend_key,
                            "attempt": lins.excluded.attempt,
                            "stored_bytes": lins.excluded.stored_bytes,
                            "registered_at": lins.excluded.registered_at,
                        },
                    )
                )

        self._run(register, write=True)

    def _measure(self, location: Location, manifest: Manifest) -> int | None:
        """Bytes on storage of a committed copy (one listing), or ``None`` if unknown."""
        backend = self.backends.get(location.backend)
        if backend is None:
            return None
        try:
            return backend.stored_bytes(location.backend_key, manifest)
        except (OSError, ValueError, StorageError) as e:
            logger.debug("could not measure %s: %s", location, e)
            return None

    def _data_location(self, backend: str, backend_key: str, attempt: str) -> str | None:
        b = self.backends.get(backend)
        if b is None:
            return None
        try:
            return b.data_location(backend_key, attempt)
        except StorageError as e:  # a bad row names no directory
            logger.warning("catalog row %s:%s: %s", backend, backend_key, e)
            return None

    def _register(self, key: DataKey, location: Location, manifest: Manifest) -> None:
        """Record a commit (called by the saver right after its manifest is written)."""
        try:
            self._register_many([(key, location, manifest)])
        except StorageError as e:
            raise StorageError(
                f"{key} is committed in backend {location.backend!r} but could not be "
                f"registered in {self!r} ({e}); run scan() on this frontend to register it"
            ) from e
        logger.debug("registered %s at %s", key, location)

    def add_location(self, key: DataKey, backend: str) -> Location:
        """Register the copy of ``key`` committed in ``backend`` (e.g. after copying it there).

        Raises ``DataNotAvailable`` if nothing is committed there: the catalog never names
        uncommitted data.
        """
        self._check_writable(f"register {key}")
        b = self._backend(backend)
        loc = Location(backend, b.backend_key(key))
        manifest = b.get_metadata(loc.backend_key)
        if manifest.key != key:
            raise DataCorrupted(f"{backend}:{loc.backend_key} holds {manifest.key}, not {key}")
        self._register_many([(key, loc, manifest)])
        return loc

    def scan(self, backends: Iterable[str] | None = None) -> int:
        """Register every committed data type found in the backends (ZarrBackend layout):
        imports an existing directory store, or repairs a registration a crash prevented.
        Returns the number of keys registered.
        """
        self._check_writable("scan")
        n = 0
        for name in backends or list(self.backends):
            b = self._backend(name)
            if not b.supports_listing:
                logger.warning("scan: backend %r cannot be listed; skipped", name)
                continue
            batch: list[tuple[DataKey, Location, Manifest]] = []
            for bk in b.list_backend_keys():
                try:
                    m = b.get_metadata(bk)
                except (DataNotAvailable, InvalidKey):
                    continue
                except DataCorrupted as e:
                    logger.warning("scan: %s", e)
                    continue
                batch.append((m.key, Location(name, bk, m), m))
                if len(batch) >= 500:
                    self._register_many(batch)
                    n += len(batch)
                    batch = []
            if batch:
                self._register_many(batch)
                n += len(batch)
        return n

    def remove(self, key: DataKey, backend: str | None = None) -> None:
        """Remove ``key`` from the catalog and its data from storage (from every backend, or
        only ``backend``). The catalog row goes first, so no find returns removed data.
        """
        self._check_writable(f"remove {key}")
        e, loc = entries_table, locations_table
        gone: list[tuple[str, str]] = []

        def unregister(conn: Connection) -> None:
            hit = self._exact_rows(conn, [key])[0]
            if hit is None:
                raise DataNotAvailable(f"{key} is not stored in {self!r}")
            eid, locs = hit
            for name, bk in locs:
                if backend is None or name == backend:
                    conn.execute(loc.delete().where(loc.c.entry_id == eid, loc.c.backend == name))
                    gone.append((name, bk))
            left = conn.execute(
                select(func.count()).select_from(loc).where(loc.c.entry_id == eid)
            ).scalar_one()
            if not left:
                for t in (options_table, deps_table):  # also without ON DELETE CASCADE
                    conn.execute(t.delete().where(t.c.entry_id == eid))
                conn.execute(e.delete().where(e.c.id == eid))

        self._run(unregister, write=True)
        if backend is not None and not gone:
            raise DataNotAvailable(f"{key} has no copy in backend {backend!r} of {self!r}")
        for name, bk in gone:
            if name in self.backends:
                try:
                    self.backends[name].remove(bk)
                except DataNotAvailable:
                    logger.warning(
                        "%s was registered at %s:%s but not committed there", key, name, bk
                    )

    def _backend(self, name: str) -> StorageBackend:
        try:
            return self.backends[name]
        except KeyError:
            raise ValueError(
                f"{self!r} has no backend {name!r}; it has {list(self.backends)}"
            ) from None

    def _check_writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyError(f"{self!r} is read-only: cannot {what}")

    # -- run metadata -----------------------------------------------------------------------
    def _read_run_metadata(self, run_id: str) -> dict[str, Any]:
        raw = self._run(
            lambda c: c.execute(
                select(runs_table.c.doc).where(runs_table.c.run_id == run_id)
            ).scalar()
        )
        if raw is None:
            raise DataNotAvailable(f"no run metadata for run {run_id!r} in {self!r}")
        return self._parse_run_document(run_id, raw)

    def _write_run_metadata(self, run_id: str, doc: dict[str, Any]) -> None:
        try:
            raw = json.dumps(doc, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"run metadata of {run_id!r} must be plain JSON: {e}") from e
        ins = self._insert(runs_table).values(run_id=run_id, doc=raw, updated_at=now_iso())
        stmt = ins.on_conflict_do_update(
            index_elements=[runs_table.c.run_id],
            set_={"doc": ins.excluded.doc, "updated_at": ins.excluded.updated_at},
        )

        def write(conn: Connection) -> None:
            conn.execute(stmt)
            self._write_labels(conn, {run_id: doc})

        self._run(write, write=True)

    def _write_run_metadata_many(self, docs: dict[str, dict[str, Any]]) -> None:
        """All documents in one transaction (one statement, many rows)."""
        rows = []
        now = now_iso()
        for run_id, doc in docs.items():
            try:
                raw = json.dumps(doc, sort_keys=True, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"run metadata of {run_id!r} must be plain JSON: {e}") from e
            rows.append({"run_id": run_id, "doc": raw, "updated_at": now})
        if not rows:
            return
        ins = self._insert(runs_table)
        stmt = ins.on_conflict_do_update(
            index_elements=[runs_table.c.run_id],
            set_={"doc": ins.excluded.doc, "updated_at": ins.excluded.updated_at},
        )

        def write(conn: Connection) -> None:
            conn.execute(stmt, rows)
            self._write_labels(conn, docs)

        self._run(write, write=True)

    def _list_runs(self) -> list[str]:
        q = sa.union(select(runs_table.c.run_id), select(entries_table.c.run_id))
        return sorted(self._run(lambda c: [r[0] for r in c.execute(q)]))

    def run_ids_with_documents(self) -> set[str]:
        """Run ids that have a run document in the catalog (one query)."""
        return set(self._run(lambda c: [r[0] for r in c.execute(select(runs_table.c.run_id))]))

    def _data_only_runs(self, conn: Connection) -> list[str]:
        """Run ids with catalog entries but no run document."""
        e, r = entries_table, runs_table
        q = (
            select(e.c.run_id)
            .distinct()
            .where(~sa.exists().where(r.c.run_id == e.c.run_id))
            .order_by(e.c.run_id)
        )
        return [row[0] for row in conn.execute(q)]

    def _valid_run_id(self, run_id: Any) -> bool:
        try:
            validate_run_id(run_id)
        except InvalidKey as e:
            msg = f"catalog {self!r} lists a run with an invalid id: {e}"
            logger.warning("run query: %s", msg)
            self.skipped.append(msg)
            return False
        return True

    def _iter_run_documents(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Every document in one query, each parsed (with limits) in Python."""

        def read(conn: Connection) -> tuple[list[Any], list[str]]:
            q = select(runs_table.c.run_id, runs_table.c.doc).order_by(runs_table.c.run_id)
            return list(conn.execute(q)), self._data_only_runs(conn)

        rows, data_only = self._run(read)
        docs: dict[str, dict[str, Any] | None] = dict.fromkeys(data_only)
        for run_id, raw in rows:
            if not self._valid_run_id(run_id):
                continue
            try:
                docs[run_id] = self._parse_run_document(run_id, raw)
            except DataCorrupted as e:
                logger.warning("run query: %s", e)
                self.skipped.append(str(e))
        for run_id in sorted(docs):
            if run_id in data_only and not self._valid_run_id(run_id):
                continue
            yield run_id, docs[run_id]

    def _query_runs(self, query: RunQuery) -> list[RunRecord]:
        """The query as one SQL statement: the filters read the run label tables (indexed by
        run), the database parses only the selected documents (to check them and project the
        fields); runs with entries but no document come from one more query. On PostgreSQL a
        document that is not valid JSON, or a ``re`` pattern PostgreSQL reads otherwise than
        Python, makes the query run in Python over every document (same result, slower;
        logged); so does a read-only catalog of schema version 1.
        """
        if not self._labels:
            return super()._query_runs(query)
        try:
            build = _RunSQL(self.dialect, query)
            main, label_stmts = build.statements()
        except _NotInSQL as e:
            logger.info("run query: pattern %r is matched in Python, not in PostgreSQL", e.args[0])
            return super()._query_runs(query)
        sqlite = self.dialect == "sqlite"

        def run(conn: Connection) -> tuple[list[Any], list[list[Any]], list[str]]:
            rows = list(conn.execute(sa.text(main), build.params).all())
            labels = [list(conn.execute(sa.text(x)).all()) for x in label_stmts]
            return rows, labels, self._data_only_runs(conn)

        try:
            rows, label_rows, data_only = self._run(run)
        except DataError as e:  # PostgreSQL: a document that is not JSON, or a regex it refuses
            logger.warning(
                "run query on %r runs in Python: the database refused it (%s)",
                self,
                str(e.orig).splitlines()[0] if e.orig is not None else e,
            )
            return super()._query_runs(query)
        every: list[dict[str, list[str]]] = [{} for _ in label_rows]
        for found, into in zip(label_rows, every, strict=True):
            for run_id, label in found:
                into.setdefault(run_id, []).append(label)
        out = []
        for row in rows:
            run_id, ok = row[0], row[1]
            if not self._valid_run_id(run_id):
                continue
            if not ok:
                msg = f"run metadata {run_id!r} in {self!r} is not a JSON object"
                logger.warning("run query: %s", msg)
                self.skipped.append(msg)
                continue
            if every:  # labels of every run, read apart
                modes, tags = (e.get(run_id, []) for e in every)
                values = list(row[2:])
            else:
                modes, tags, values = row[2], row[3], list(row[4:])
                if sqlite:  # {position: label} objects
                    modes, tags = _in_order(modes), _in_order(tags)
            if sqlite:  # fields as JSON text
                values = [None if v is None else json.loads(v) for v in values]
            fields = dict(zip(query.fields, values, strict=True))
            out.append(RunRecord(run_id, True, tuple(modes), tuple(tags), fields))
        for run_id in data_only:
            if self._valid_run_id(run_id):
                record = query.record(run_id, None)
                if query.matches_record(record):
                    out.append(record)
        out.sort(key=lambda r: r.run_id)
        return out

    # -- stored-object queries over the catalog ---------------------------------------------
    def query(self, data_query: Any) -> dict[tuple[Any, ...], list[tuple[str, Any, str | None]]]:
        """Committed array data types matching a
        :class:`~strata.storage.objects.arrays.StoredArrayQuery`, evaluated in the database.

        Returns ``{matched values: [(object key, StoredArrayData, Zarr group path), ...]}``
        like ``StorageBackend.query``; each key's location is the first in backend order.
        """
        from ..objects.arrays import StoredArrayData, StoredArrayQuery
        from ..objects.base import object_key

        if not isinstance(data_query, StoredArrayQuery):
            raise TypeError(
                f"an SQLFrontend answers StoredArrayQuery only, got {type(data_query).__name__}; "
                "query a backend for other stored objects"
            )
        e, d, o, loc = entries_table, deps_table, options_table, locations_table
        conds: list[Any] = [e.c.state == "committed"]
        q = data_query
        if q.run_id is not None:
            conds.append(e.c.run_id == validate_run_id(q.run_id))
        if q.data_type is not None:
            conds.append(e.c.data_type == q.data_type)
        if q.lineage_hash is not None:
            conds.append(e.c.lineage_hash == q.lineage_hash)
        own = [d.c.entry_id == e.c.id, d.c.dep_type == e.c.data_type]
        if q.plugin is not None:
            conds.append(sa.exists().where(*own, d.c.plugin == q.plugin))
        if q.version is not None:
            conds.append(sa.exists().where(*own, d.c.version == canonical_json(q.version)))
        for name, value in (q.options or {}).items():
            h = value_hash(value)
            same = [o.c.entry_id == e.c.id, o.c.option == name]
            conds.append(sa.exists().where(*same, o.c.value_hash == h))
            conds.append(~sa.exists().where(*same, o.c.value_hash != h))
        stmt = (
            select(e, loc.c.backend, loc.c.backend_key, loc.c.attempt)
            .join(loc, loc.c.entry_id == e.c.id)
            .where(*conds)
            .order_by(e.c.id)
        )
        rows = self._run(lambda c: list(c.execute(stmt)))
        order = {n: i for i, n in enumerate(self.backends)}
        best: dict[int, Any] = {}
        for r in rows:
            if r.backend not in order:
                continue
            if r.id not in best or order[r.backend] < order[best[r.id].backend]:
                best[r.id] = r
        results: dict[tuple[Any, ...], list[tuple[str, Any, str | None]]] = {}
        for r in best.values():
            lineage = json.loads(r.lineage)
            entry = lineage.get(r.data_type)
            obj = StoredArrayData(
                run_id=r.run_id,
                data_type=r.data_type,
                lineage_hash=r.lineage_hash,
                lineage=lineage,
                plugin=entry[0] if entry else None,
                version=(entry[1] if isinstance(entry[1], str) else canonical_json(entry[1]))
                if entry
                else None,
                backend_key=r.backend_key,
                attempt=r.attempt,
                rows=r.rows,
                nbytes=r.nbytes,
                start=r.start_ns,
                end=r.end_ns,
                partitions=r.partitions,
                dtype=json.loads(r.dtype),
                metadata=json.loads(r.meta),
                writing_started=r.writing_started,
                writing_ended=r.writing_ended,
                strata_version=r.strata_version,
            )
            matched = data_query.apply(obj)
            if matched is None:
                continue
            path = self._data_location(r.backend, r.backend_key, r.attempt)
            results.setdefault(matched, []).append((object_key(obj), obj, path))
        return {k: sorted(v, key=lambda t: t[0]) for k, v in results.items()}
