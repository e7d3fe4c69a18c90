"""Run selection over storage frontends: strax's ``scan_runs`` / ``select_runs``.

The functions take the frontends themselves (a Context passes ``self.storage`` and
``self.key_for``), so they work without a Context too:

>>> import tempfile
>>> from strata.storage import open_frontend
>>> fe = open_frontend(tempfile.mkdtemp())
>>> fe.write_run_metadata_many({
...     "r1": {"mode": "nice", "tags": [{"name": "interesting"}, {"name": "bad"}]},
...     "r2": {"mode": "nice", "tags": ["interesting"], "source": {"name": "Kr83m"}},
... })
>>> scan_runs([fe], fields=["source.name"])[["run_id", "mode", "tags", "source.name"]]
  run_id  mode             tags source.name
0     r1  nice  interesting,bad        None
1     r2  nice      interesting       Kr83m
>>> list(select_runs([fe], include_tags="interesting", exclude_tags="bad")["run_id"])
['r2']

The filters run where the documents are: an SQL catalog evaluates them in the database
(:meth:`~strata.storage.frontends.base.StorageFrontend.query_runs`), a directory catalog reads
the documents in batches. A run known to several frontends is shown once, from the first
frontend (in the order given) that has its run document, else the first that has its data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from strata.storage import DataKey, DataNotAvailable, StorageFrontend, open_frontend
from strata.storage.frontends.base import RunQuery, RunRecord, as_patterns

from .errors import OptionError, UnknownDataType

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BASE_COLUMNS", "availability", "run_metadata", "scan_runs", "select_runs"]

logger = logging.getLogger(__name__)

BASE_COLUMNS = ("run_id", "mode", "tags", "has_metadata")
"""The columns every run table has, first: ``mode`` and ``tags`` are comma-separated strings
(as in strax), ``has_metadata`` is false for a run with stored data but no run document. The
requested fields follow (named by their dotted paths), then one ``<target>_available`` column
per target checked."""

KeyFor = Callable[[str, str], DataKey]
"""``key_for(run_id, target) -> DataKey``: the key a target of a run is stored under (a
Context's ``key_for``)."""

Storage = StorageFrontend | str


def _frontends(storage: Storage | Iterable[Storage]) -> list[StorageFrontend]:
    if isinstance(storage, (StorageFrontend, str)):
        storage = [storage]
    return [open_frontend(s) for s in storage]


def _targets(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    out = tuple(value)
    if not all(isinstance(t, str) for t in out):
        raise TypeError(f"targets must be data type names, got {value!r}")
    return out


def _query(frontends: Sequence[StorageFrontend], query: RunQuery) -> list[RunRecord]:
    """The records ``query`` selects, one per run: from the first frontend with the run's
    document, else the first that knows the run.
    """
    per_frontend = [fe.query_runs(query) for fe in frontends]
    if len(frontends) == 1:
        return per_frontend[0]
    documented = [fe.run_ids_with_documents() for fe in frontends]
    any_document = set().union(*documented)
    known: set[str] = set()  # runs of earlier frontends (documented or not)
    shadowed: set[str] = set()  # runs with a document in an earlier frontend
    out: dict[str, RunRecord] = {}
    for fe, records, docs in zip(frontends, per_frontend, documented, strict=True):
        for r in records:
            if r.has_metadata:
                if r.run_id not in shadowed:
                    out[r.run_id] = r
            elif r.run_id not in any_document and r.run_id not in known:
                out[r.run_id] = r
        shadowed |= docs
        known |= set(fe.list_runs())
    return [out[r] for r in sorted(out)]


def _frame(records: Sequence[RunRecord], fields: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    data: dict[str, Any] = {
        "run_id": pd.Series([r.run_id for r in records], dtype=str),
        "mode": pd.Series([",".join(r.mode) for r in records], dtype=str),
        "tags": pd.Series([",".join(r.tags) for r in records], dtype=str),
        "has_metadata": pd.Series([r.has_metadata for r in records], dtype=bool),
    }
    for f in fields:  # JSON values as they are (None where missing), not coerced by pandas
        data[f] = pd.Series([r.fields.get(f) for r in records], dtype=object)
    return pd.DataFrame(data, columns=[*BASE_COLUMNS, *fields])


def availability(
    run_ids: Sequence[str],
    targets: str | Iterable[str],
    storage: Storage | Iterable[Storage],
    key_for: KeyFor,
    fuzzy_for: Iterable[str] = (),
    fuzzy_for_options: Iterable[str] = (),
) -> dict[str, list[bool]]:
    """Per target, whether it is stored for each run (in any of the frontends).

    Keys come from ``key_for(run_id, target)``; a run whose key cannot be built (its run
    document lacks an option's ``from_run`` value, ...) has it not available. An unknown
    target raises. The lookups are batched per frontend (``which_stored``: an SQL catalog
    answers from its index, a few queries for any number of runs).
    """
    frontends = _frontends(storage)
    fuzzy = (tuple(fuzzy_for), tuple(fuzzy_for_options))
    out: dict[str, list[bool]] = {}
    for target in _targets(targets):
        keys: list[DataKey] = []
        rows: list[int] = []
        for i, run_id in enumerate(run_ids):
            try:
                keys.append(key_for(run_id, target))
            except UnknownDataType:
                raise
            except (OptionError, DataNotAvailable) as e:
                logger.debug("%s of %s: no key (%s); not available", target, run_id, e)
                continue
            rows.append(i)
        found = [False] * len(keys)
        for fe in frontends:
            todo = [j for j, f in enumerate(found) if not f]
            if not todo:
                break
            for j, hit in zip(todo, fe.which_stored([keys[j] for j in todo], *fuzzy), strict=True):
                found[j] = hit
        column = [False] * len(run_ids)
        for j, i in enumerate(rows):
            column[i] = found[j]
        out[target] = column
    return out


def _add_availability(
    df: pd.DataFrame,
    targets: tuple[str, ...],
    frontends: Sequence[StorageFrontend],
    key_for: KeyFor | None,
    fuzzy_for: Iterable[str],
    fuzzy_for_options: Iterable[str],
) -> pd.DataFrame:
    if not targets:
        return df
    if key_for is None:
        raise ValueError(
            f"checking availability of {list(targets)} needs key_for=(run_id, target) -> "
            "DataKey (a Context's key_for)"
        )
    found = availability(
        list(df["run_id"]), targets, frontends, key_for, fuzzy_for, fuzzy_for_options
    )
    for target, column in found.items():
        df[f"{target}_available"] = column
    return df


def scan_runs(
    storage: Storage | Iterable[Storage],
    fields: str | Iterable[str] = (),
    check_available: str | Iterable[str] = (),
    key_for: KeyFor | None = None,
    fuzzy_for: Iterable[str] = (),
    fuzzy_for_options: Iterable[str] = (),
) -> pd.DataFrame:
    """Every run the frontends know, one row each (see :data:`BASE_COLUMNS`), sorted by run id.

    Parameters
    ----------
    storage
        Frontends (or URLs), in the order their documents take precedence.
    fields
        Dotted paths into the run documents (``"calibration.gains"``), one column each
        (``None`` where a document has no such field).
    check_available
        Targets to add a ``<target>_available`` column for (needs ``key_for``).
    key_for
        ``key_for(run_id, target) -> DataKey`` (a Context's ``key_for``).
    fuzzy_for, fuzzy_for_options
        Loosen the availability match (see ``StorageFrontend.find``).

    """
    frontends = _frontends(storage)
    query = RunQuery(fields=as_patterns(fields, "fields"))
    df = _frame(_query(frontends, query), query.fields)
    return _add_availability(
        df, _targets(check_available), frontends, key_for, fuzzy_for, fuzzy_for_options
    )


def _record_of(row: Mapping[str, Any]) -> RunRecord:
    """A record from a row of a run table (``mode`` and ``tags`` split at commas)."""

    def split(value: Any) -> tuple[str, ...]:
        return tuple(value.split(",")) if isinstance(value, str) and value else ()

    return RunRecord(
        str(row["run_id"]),
        bool(row.get("has_metadata", True)),
        split(row.get("mode")),
        split(row.get("tags")),
    )


def select_runs(
    runs: pd.DataFrame | Storage | Iterable[Storage],
    run_mode: str | Iterable[str] | None = None,
    run_id: str | Iterable[str] | None = None,
    include_tags: str | Iterable[str] | None = None,
    exclude_tags: str | Iterable[str] | None = None,
    available: str | Iterable[str] = (),
    pattern_type: str = "fnmatch",
    ignore_underscore: bool = True,
    fields: str | Iterable[str] = (),
    storage: Storage | Iterable[Storage] | None = None,
    key_for: KeyFor | None = None,
    fuzzy_for: Iterable[str] = (),
    fuzzy_for_options: Iterable[str] = (),
) -> pd.DataFrame:
    """The runs matching every filter given (strax's ``select_runs``), as :func:`scan_runs`
    shows them, with a ``<target>_available`` column per target of ``available``; only runs
    that have all of them stored are kept.

    Parameters
    ----------
    runs
        Frontends (or URLs) to query, or a table :func:`scan_runs` returned to filter again
        (then ``storage`` names the frontends to check ``available`` in).
    run_mode, run_id
        Patterns: a run matches if one of its modes (its id) matches one of them. A run
        without a mode has mode ``""``.
    include_tags, exclude_tags
        Patterns: a run needs a tag matching one of ``include_tags`` and no tag matching one
        of ``exclude_tags`` (exclusion wins). Tags are strings or objects with a ``name``.
    available
        Targets that must be stored (needs ``key_for``).
    pattern_type
        ``"fnmatch"`` (shell wildcards, whole value) or ``"re"`` (Python regular expressions,
        matched at the start of the value).
    ignore_underscore
        A tag ``_x`` also matches the pattern ``x`` (unless the pattern starts with ``_``).
    fields
        Dotted paths into the run documents to add as columns (when querying frontends).
    storage, key_for, fuzzy_for, fuzzy_for_options
        As in :func:`scan_runs`.

    Raises
    ------
    ValueError
        A bad ``pattern_type``, regular expression or field path, or ``available`` without
        ``key_for``.

    Examples
    --------
    ``select_runs(fes, include_tags="blinded")``: runs tagged ``blinded`` or ``_blinded``;
    ``include_tags="*blinded"`` also ``unblinded``; ``include_tags=["blinded", "unblinded"]``
    either; ``include_tags="blinded", exclude_tags=["bad", "messy"]``: blinded runs that are
    neither bad nor messy.

    """
    import pandas as pd

    query = RunQuery(
        run_id=as_patterns(run_id, "run_id"),
        run_mode=as_patterns(run_mode, "run_mode"),
        include_tags=as_patterns(include_tags, "include_tags"),
        exclude_tags=as_patterns(exclude_tags, "exclude_tags"),
        pattern_type=pattern_type,
        ignore_underscore=ignore_underscore,
        fields=as_patterns(fields, "fields"),
    )
    targets = _targets(available)
    if isinstance(runs, pd.DataFrame):
        if query.fields:
            raise ValueError("fields= adds columns when querying frontends, not to a table")
        frontends = _frontends(storage) if storage is not None else []
        keep = [query.matches_record(_record_of(row)) for row in runs.to_dict("records")]
        df = runs[keep].reset_index(drop=True)
    else:
        frontends = _frontends(runs) if storage is None else _frontends(storage)
        df = _frame(_query(_frontends(runs), query), query.fields)
    missing = tuple(t for t in targets if f"{t}_available" not in df.columns)
    if missing and not frontends:
        raise ValueError(f"checking availability of {list(missing)} needs storage=")
    df = _add_availability(df, missing, frontends, key_for, fuzzy_for, fuzzy_for_options)
    for t in targets:
        df = df[df[f"{t}_available"].astype(bool)]
    return df.reset_index(drop=True)


def run_metadata(
    storage: Storage | Iterable[Storage],
    run_id: str,
    projection: str | Iterable[str] | None = None,
) -> dict[str, Any]:
    """The run document of ``run_id`` from the first frontend that has one; ``projection``
    (dotted paths) selects parts of it, nested as in the document (MongoDB's projection).

    Raises ``DataNotAvailable`` naming the frontends if none has it.
    """
    frontends = _frontends(storage)
    for fe in frontends:
        try:
            return fe.run_metadata(run_id, projection=projection)
        except DataNotAvailable:
            continue
    raise DataNotAvailable(
        f"no run metadata for run {run_id!r} in any frontend "
        f"({', '.join(map(repr, frontends)) or 'no storage configured'})"
    )
