"""Dask graphs of one run: load what is stored, compute the rest partition by partition.

Every data type in a graph becomes a :class:`Stream`: its partition intervals and one
``Delayed`` per partition that yields a numpy record array. A stored type is *loaded* (slices
of the lazy array of the first frontend that has it, one per stored partition); any other type
is *computed*: one task per partition calls the plugin on the aligned partitions of its
dependencies. A computed type that is to be saved gets a :class:`~strata.storage.Saver` sink per
writable frontend. Nothing runs here: :mod:`pipeline.execute` computes the sinks and outputs
together, so shared work is done once.

Dependencies with different partitioning are aligned by time (:func:`align_intervals`): the
output partitions are cut only where no partition of any dependency straddles the cut, so
every dependency partition lies wholly inside one output partition and each output partition
receives exactly the dependency records with ``time`` in ``[start, end)``.

Stored data is looked for nearest frontend first (:func:`loading_order`: by ``storage_kind``,
the given order breaking ties); computed data is saved to every writable frontend, in the given
order.

For a superrun (:mod:`pipeline.lineage`), a data type whose plugin does not ``allow_superrun``
is a *concatenation*: the streams of its subruns (each loaded, or computed and saved as a
target of that subrun, by a child builder that adds to the same graph), restricted to the
subruns' time ranges and put in time order. Types whose plugins allow superruns are computed
from those as from any dependency, and saved under the superrun only with ``write_superruns``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import operator
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from strata.storage import (
    DataCorrupted,
    DataExistsError,
    DataKey,
    DataNotAvailable,
    Location,
    ReadOnlyError,
    StorageFrontend,
)
from strata.storage.commit import LostRace
from strata.storage.keys import canonical_json, lineage_matches
from strata.storage.saver import Saver

from .dtypes import merge_arrays, merged_dtype
from .errors import CreationForbidden, IncompatibleTargets, InvalidRequest, InvalidRunDefinition
from .lineage import RunPlugins, Subrun, piece_spans, spans_of, without_piece
from .plugin import Plugin, SaveWhen

__all__ = [
    "STORAGE_KIND_ORDER",
    "Found",
    "GraphBuilder",
    "StoredPiece",
    "Stream",
    "align_intervals",
    "loading_order",
    "partitions_in",
    "partitions_overlapping",
    "select_dtype",
    "selection_windows",
    "source_partitions",
]

logger = logging.getLogger(__name__)

Interval = tuple[int, int]

STORAGE_KIND_ORDER: tuple[str, ...] = ("memory", "local", "online", "compressed", "remote", "tape")
"""Storage kinds, nearest first (strax's order): loads come from the nearest frontend."""


def loading_order(frontends: Sequence[StorageFrontend]) -> list[StorageFrontend]:
    """``frontends`` nearest first by their ``storage_kind`` (a frontend without one counts
    as ``"local"``); the given order breaks ties. ``InvalidRequest`` for an unknown kind.
    """

    def rank(fe: StorageFrontend) -> int:
        kind = getattr(fe, "storage_kind", "local")
        try:
            return STORAGE_KIND_ORDER.index(kind)
        except ValueError:
            raise InvalidRequest(
                f"{fe!r} has storage_kind {kind!r}; known kinds, nearest first: "
                f"{', '.join(STORAGE_KIND_ORDER)}"
            ) from None

    return sorted(frontends, key=rank)


@dataclass
class Stream:
    """One data type of one run in a Dask graph: intervals and a ``Delayed`` per partition."""

    data_type: str
    key: DataKey
    dtype: np.dtype[Any]
    intervals: list[Interval]
    parts: list[Any]
    loaded_from: StorageFrontend | None = None
    """The frontend it is loaded from; ``None`` if it is computed."""
    stored_key: DataKey | None = None
    """The key it is loaded under (differs from :attr:`key` for a fuzzy match)."""
    fuzzy: bool = False
    """Loaded by a fuzzy match, or computed from such data: never saved."""
    subruns: list[Stream] = field(default_factory=list)
    """For a superrun's concatenated type: the subruns' streams it is made of, in time order."""
    inputs: list[tuple[Stream, list[list[int]]]] = field(default_factory=list)
    """For a computed type: each dependency's stream and, per partition of this one, the
    indices of that dependency's partitions it is computed from."""
    tasks: list[Any] = field(default_factory=list)
    """For a computed type: the compute task of each partition (shared with the plugin's
    other outputs)."""
    held: dict[int, StoredPiece] = field(default_factory=dict)
    """Partition mode: the partitions read from stored pieces instead of computed."""
    save_plugin: Plugin | None = None
    """Partition mode: the plugin whose metadata a piece of this type is saved with (``None``:
    not saved)."""

    @property
    def stored(self) -> bool:
        """Whether it comes from storage: loaded, or concatenated from loaded subrun streams."""
        if self.loaded_from is not None:
            return True
        return bool(self.subruns) and all(s.stored for s in self.subruns)


class Found(NamedTuple):
    """Where a data type is stored: the frontend, the stored key (differs from the wanted one
    for a fuzzy match) and its location there (holding the manifest when finding read it).
    """

    frontend: StorageFrontend
    key: DataKey
    location: Location

    def loader(
        self, fields: Sequence[str] | None = None, time_range: tuple[int, int] | None = None
    ) -> Any:
        """Lazy data at this location (the manifest is not read again if already read)."""
        return self.frontend.loader_at(self.location, fields=fields, time_range=time_range)


@dataclass(frozen=True)
class StoredPiece:
    """A stored piece of a data type: a key holding only some partitions of a run.

    ``indices`` are the partitions of the full partition list it holds (in order), ``spans``
    the ``[start, end)`` time spans its lineage names (one per run of consecutive
    partitions).
    """

    key: DataKey
    frontend: StorageFrontend
    location: Location
    indices: tuple[int, ...]
    spans: tuple[Interval, ...]
    rows: int

    def loader(self) -> Any:
        """Lazy data of the piece (its manifest is not read again)."""
        return self.frontend.loader_at(self.location)


@dataclass
class SaveTask:
    """A saver sink in the graph and the frontend it commits to."""

    saver: Saver
    frontend: StorageFrontend
    sink: Any


def align_intervals(
    lists: Sequence[Sequence[Interval]],
) -> tuple[list[Interval], list[list[list[int]]]]:
    """Common partitioning of several time-ordered interval lists.

    Returns ``(intervals, members)`` where ``members[j][i]`` lists the indices of the
    intervals of ``lists[j]`` inside output interval ``i``. A single list is returned as is.
    Otherwise the output is cut at every boundary of any input that falls inside no interval
    of any input (a cut never splits an input partition); output intervals that contain no
    input interval are dropped.

    >>> align_intervals([[(0, 10), (10, 20)], [(0, 5), (5, 10), (10, 20)]])[0]
    [(0, 10), (10, 20)]
    >>> align_intervals([[(0, 10), (10, 20)], [(0, 15), (15, 20)]])[0]
    [(0, 20)]
    """
    if len(lists) == 1:
        return list(lists[0]), [[[i] for i in range(len(lists[0]))]]
    starts = [[s for s, _ in ivs] for ivs in lists]

    def splits(c: int) -> bool:
        for ivs, st in zip(lists, starts, strict=True):
            k = bisect.bisect_left(st, c) - 1  # last interval starting before c
            if k >= 0 and ivs[k][1] > c:
                return True
        return False

    candidates = sorted({t for ivs in lists for iv in ivs for t in iv})
    cuts = [c for c in candidates if not splits(c)]
    bounds = list(itertools.pairwise(cuts)) or ([(cuts[0], cuts[0])] if cuts else [])
    members: list[list[list[int]]] = [[[] for _ in bounds] for _ in lists]
    lows = [lo for lo, _ in bounds]
    for j, ivs in enumerate(lists):
        for k, (s, _) in enumerate(ivs):
            i = max(0, bisect.bisect_right(lows, s) - 1)
            members[j][i].append(k)
    keep = [i for i in range(len(bounds)) if any(members[j][i] for j in range(len(lists)))]
    return [bounds[i] for i in keep], [[m[i] for i in keep] for m in members]


def select_dtype(dtype: np.dtype[Any], fields: Sequence[str] | None, what: str) -> np.dtype[Any]:
    """The dtype of ``fields`` of ``dtype`` (all if ``None``); ``ValueError`` for unknown ones."""
    names = list(dtype.names or ())
    if fields is None:
        return dtype
    sel = list(dict.fromkeys([fields] if isinstance(fields, str) else fields))
    unknown = [f for f in sel if f not in names]
    if unknown or not sel:
        raise InvalidRequest(f"{what} has no field(s) {unknown or sel}; its fields are {names}")
    return np.dtype([(f, dtype[f].base, dtype[f].shape) for f in sel])


# -- task functions (module level, so they pickle by reference to distributed workers) ------
def _compute_task(
    plugin: Plugin, index: int, start: int, end: int, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    return plugin.compute_partition(index, start, end, inputs)


def _as_array(data: Any, dtype: np.dtype[Any]) -> np.ndarray:
    out = np.asarray(data)
    return out if out.dtype == dtype else out.astype(dtype)


def _concat(parts: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _assemble(
    parts: list[np.ndarray],
    names: list[str],
    out_dtype: np.dtype[Any],
    time_range: tuple[int, int] | None,
) -> np.ndarray:
    data = parts[0] if len(parts) == 1 else merge_arrays(parts, names)
    if time_range is not None:
        t = data["time"]
        data = data[(t >= time_range[0]) & (t < time_range[1])]
    if data.dtype == out_dtype:
        return data
    out = np.empty(len(data), dtype=out_dtype)
    for name in out_dtype.names or ():
        out[name] = data[name]
    return out


def _rows(data: np.ndarray) -> int:
    return len(data)


def _select_ranges(data: np.ndarray, ranges: list[Interval]) -> np.ndarray:
    t = data["time"]
    keep = np.zeros(len(data), dtype=bool)
    for t0, t1 in ranges:
        keep |= (t >= t0) & (t < t1)
    return data if keep.all() else data[keep]


def overlapping_ranges(ranges: Sequence[Interval], start: int, end: int) -> list[Interval]:
    """The ``[t0, t1)`` ranges that can hold records of partition ``[start, end)`` (whose
    records have ``start <= time <= end``).
    """
    return [(t0, t1) for t0, t1 in ranges if t0 <= end and t1 > start]


def restrict_intervals(
    intervals: Sequence[Interval], ranges: Sequence[Interval] | None
) -> list[tuple[int, Interval, list[Interval] | None]]:
    """The partitions that can hold records with ``time`` in ``ranges`` (``None``: all):
    ``(index, interval, ranges inside it)``, each interval's start moved up to the first such
    range's start (the records selected from it start there), so that partitions of
    disjoint ranges of neighbouring subruns do not overlap.
    """
    if ranges is None:
        return [(i, iv, None) for i, iv in enumerate(intervals)]
    out: list[tuple[int, Interval, list[Interval] | None]] = []
    for i, (lo, hi) in enumerate(intervals):
        inside = overlapping_ranges(ranges, lo, hi)
        if inside:
            out.append((i, (max(lo, inside[0][0]), hi), inside))
    return out


# -- per-partition work: selections --------------------------------------------------------
def saver_metadata(plugin: Plugin, data_type: str) -> dict[str, Any]:
    """The metadata a saver of ``data_type`` made by ``plugin`` stores in the manifest."""
    cls = type(plugin)
    return {
        "plugin": cls.__name__,
        "version": cls.resolved_version(),
        "data_kind": cls.kind_of(data_type),
        "field_help": plugin.field_help_of(data_type),
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _shown(intervals: Sequence[Interval], limit: int = 6) -> str:
    items = [f"{i}: [{a}, {b})" for i, (a, b) in enumerate(intervals[:limit])]
    more = f", ... ({len(intervals)} in all)" if len(intervals) > limit else ""
    return ", ".join(items) + more


def source_partitions(plugins: RunPlugins, data_type: str) -> list[Interval] | None:
    """The partition list of the source plugins ``data_type`` is made from (what partition
    indices refer to), or ``None`` if they partition the run differently.
    """
    lists: dict[str, list[Interval]] = {}
    todo, seen = [data_type], set()
    while todo:
        dt = todo.pop()
        if dt in seen:
            continue
        seen.add(dt)
        cls = plugins.plugin_class(dt)
        if cls.is_source():
            ivs = plugins.plugin(dt).checked_partitions(plugins.run_id)
            lists[canonical_json(ivs)] = ivs
        todo.extend(cls.dependencies())
    return next(iter(lists.values())) if len(lists) == 1 else None


def selection_windows(
    selection: Any, reference: Sequence[Interval] | None, what: str
) -> list[Interval]:
    """``partitions=`` as time windows: each item an index into ``reference`` (the source
    partition list) or a ``(start, end)`` interval; items sorted, none repeated or
    overlapping. ``InvalidRequest`` naming the bad item and the rule otherwise.
    """
    items = [selection] if _is_int(selection) else selection
    try:
        items = list(items)
    except TypeError:
        raise InvalidRequest(
            f"{what}: partitions= takes partition indices or (start, end) intervals, "
            f"got {selection!r}"
        ) from None
    if not items:
        raise InvalidRequest(f"{what}: partitions= is empty; give at least one partition")
    windows: list[Interval] = []
    prev: Any = None
    for item in items:
        if _is_int(item):
            if reference is None:
                raise InvalidRequest(
                    f"{what}: partition index {item!r} is ambiguous: its source plugins "
                    "partition the run differently; give (start, end) intervals instead"
                )
            if not 0 <= int(item) < len(reference):
                raise InvalidRequest(
                    f"{what}: partition index {item!r} is out of range: the run has "
                    f"{len(reference)} partitions (0 to {len(reference) - 1}): "
                    f"{_shown(reference)}"
                )
            window = reference[int(item)]
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(_is_int(v) for v in item):
            window = (int(item[0]), int(item[1]))
            if window[0] >= window[1]:
                raise InvalidRequest(f"{what}: partition interval {item!r} is empty or reversed")
        else:
            raise InvalidRequest(
                f"{what}: partitions= items are partition indices or (start, end) intervals "
                f"of integer nanoseconds, got {item!r}"
            )
        if windows and (window[0] < windows[-1][1] or window == windows[-1]):
            raise InvalidRequest(
                f"{what}: partitions= must be sorted, with no item repeated or overlapping "
                f"another: {item!r} comes after {prev!r}"
            )
        windows.append(window)
        prev = item
    return windows


def partitions_in(
    windows: Sequence[Interval], intervals: Sequence[Interval], what: str
) -> list[int]:
    """The indices of the partitions ``intervals`` that lie in ``windows``.

    ``InvalidRequest`` if a window cuts a partition (a partition is the unit of work: it is
    never split) or holds none.
    """
    chosen: list[int] = []
    for a, b in windows:
        inside = []
        for i, (s, e) in enumerate(intervals):
            if a == b or s == e:
                hit = (s, e) == (a, b) if a == b else a <= s < b
            else:
                hit = a <= s and e <= b
                if not hit and s < b and e > a:
                    raise InvalidRequest(
                        f"{what}: ({a}, {b}) cuts partition {i} [{s}, {e}); a partition is the "
                        "unit of work and is never split (where dependencies partition the run "
                        "differently, partitions are merged so that none straddles a cut): "
                        f"select whole partitions, e.g. ({min(a, s)}, {max(b, e)}); the "
                        f"partitions are {_shown(intervals)}"
                    )
            if hit:
                inside.append(i)
        if not inside:
            raise InvalidRequest(
                f"{what}: ({a}, {b}) holds no partition; the partitions are {_shown(intervals)}"
            )
        chosen.extend(inside)
    return sorted(set(chosen))


def partitions_overlapping(
    time_range: tuple[int, int], intervals: Sequence[Interval], what: str
) -> list[int]:
    """The indices of the partitions that can hold records with ``t0 <= time < t1``."""
    t0, t1 = time_range
    out = [i for i, (s, e) in enumerate(intervals) if s < t1 and e >= t0]
    if not out:
        raise InvalidRequest(
            f"{what}: time_range ({t0}, {t1}) overlaps no partition; the partitions are "
            f"{_shown(intervals)}"
        )
    return out


def _indices_of(
    intervals: Sequence[Interval], held: Sequence[Interval], what: str, data_type: str
) -> tuple[int, ...]:
    """The indices in ``intervals`` of ``held`` (in order); ``DataCorrupted`` if one is not
    there.
    """
    out: list[int] = []
    j = 0
    for iv in held:
        while j < len(intervals) and intervals[j] != iv:
            j += 1
        if j == len(intervals):
            raise DataCorrupted(
                f"{what} holds partition [{iv[0]}, {iv[1]}), which is not (in order) a "
                f"partition of the run's {data_type!r} ({_shown(intervals)}); remove it"
            )
        out.append(j)
        j += 1
    if not out:
        raise DataCorrupted(f"{what} holds no partition; remove it")
    return tuple(out)


class GraphBuilder:
    """Builds the Dask graph of one run, one data type at a time.

    Parameters
    ----------
    plugins
        The run's configured plugins (keys and lineage).
    frontends
        Where data is looked for, in order, and saved (every writable one that takes it).
    targets, save
        The requested data types and those listed in ``save=``: they decide what
        ``SaveWhen.TARGET`` and ``SaveWhen.EXPLICIT`` outputs are saved.
    allow_save
        ``False`` for reads that must not save (``time_range`` reads, lazy collections).
    fuzzy_for, fuzzy_for_options
        Loosen the lineage match of loads; fuzzy loads (and what is computed from them) are
        never saved.
    forbid_creation_of
        Data types that must be loaded, never computed (``"*"``: all).
    write_superruns
        Save what is computed for a superrun (else superrun results are computed, never saved;
        the subruns' data they are made from is saved as usual).
    partition_mode
        Per-partition work: computed partitions are taken from stored pieces where there are
        some, nothing is saved until :meth:`need` says which partitions are wanted, and
        :meth:`finish_pieces` then adds a piece saver per type for the partitions it computes.

    """

    def __init__(
        self,
        plugins: RunPlugins,
        frontends: Sequence[StorageFrontend],
        *,
        targets: Sequence[str] = (),
        save: Sequence[str] = (),
        allow_save: bool = True,
        fuzzy_for: Sequence[str] = (),
        fuzzy_for_options: Sequence[str] = (),
        forbid_creation_of: Sequence[str] = (),
        write_superruns: bool = False,
        partition_mode: bool = False,
    ) -> None:
        self.plugins = plugins
        self.run_id = plugins.run_id
        self.frontends = list(frontends)
        self.load_order = loading_order(self.frontends)
        self.write_superruns = bool(write_superruns)
        self.targets = tuple(targets)
        self.save = tuple(save)
        self.allow_save = allow_save
        self.fuzzy_for = tuple(fuzzy_for)
        self.fuzzy_for_options = tuple(fuzzy_for_options)
        self.forbid_creation_of = tuple(forbid_creation_of)
        self.token = uuid.uuid4().hex[:8]
        self.streams: dict[str, Stream] = {}
        self.save_tasks: list[SaveTask] = []
        self.units: list[Any] = []
        """The compute and commit tasks: what progress is counted in."""
        self._gathered: dict[tuple[str, tuple[int, ...]], Any] = {}
        self._children: dict[str, GraphBuilder] = {}
        self.partition_mode = bool(partition_mode)
        self.needed: dict[str, set[int]] = {}
        """Partition mode: the partitions of each data type the selection needs."""
        self._listings: dict[int, list[Any]] = {}
        self._absent: set[tuple[int, str]] = set()
        """(frontend, key) pairs an exact :meth:`find` found not stored: their savers skip
        the existence check (the commit is exclusive either way)."""

    # -- finding ----------------------------------------------------------------------------
    def find(self, data_type: str) -> Found | None:
        """The nearest frontend storing ``data_type`` (exactly, else fuzzily), its stored key
        and location; ``None`` if no frontend stores it.
        """
        key = self.plugins.key(data_type)
        passes: list[tuple[tuple[str, ...], tuple[str, ...]]] = [((), ())]
        if self.fuzzy_for or self.fuzzy_for_options:
            passes.append((self.fuzzy_for, self.fuzzy_for_options))
        for fuzzy_for, fuzzy_for_options in passes:
            for fe in self.load_order:
                if not fe.takes(data_type):
                    continue
                try:
                    loc, stored = fe.find_key(key, fuzzy_for, fuzzy_for_options)
                except DataNotAvailable:
                    if not fuzzy_for and not fuzzy_for_options:
                        self._absent.add((id(fe), str(key)))
                    continue
                if stored != key and piece_spans(stored.lineage, data_type, str(stored)):
                    # a fuzzy match found a piece: it holds some partitions only, never the
                    # whole of the data asked for; look for a full key among the others
                    found = self._fuzzy_full(fe, key, fuzzy_for, fuzzy_for_options)
                    if found is None:
                        continue
                    return found
                return Found(fe, stored, loc)
        return None

    def _fuzzy_full(
        self,
        fe: StorageFrontend,
        key: DataKey,
        fuzzy_for: tuple[str, ...],
        fuzzy_for_options: tuple[str, ...],
    ) -> Found | None:
        """A stored key of ``fe`` that fuzzily matches ``key`` and is not a piece."""
        for entry in fe.list(self.run_id):
            k = entry.key
            if (
                k.data_type == key.data_type
                and piece_spans(k.lineage, k.data_type, str(k)) is None
                and lineage_matches(k.lineage, key.lineage, fuzzy_for, fuzzy_for_options)
            ):
                return Found(fe, k, entry.location)
        return None

    def is_stored(self, data_type: str) -> bool:
        """Whether ``data_type`` is stored in some frontend (fuzzy settings apply)."""
        return self.find(data_type) is not None

    # -- streams ----------------------------------------------------------------------------
    def stream(self, data_type: str) -> Stream:
        """The stream of ``data_type``: loaded if stored, else computed (with its inputs)."""
        if data_type not in self.streams:
            found = self.find(data_type)
            if found is not None:
                self.streams[data_type] = self.load(data_type, found)
            elif self.plugins.concatenates(data_type):
                self._concatenate(data_type)
            else:
                self._compute(data_type)
        return self.streams[data_type]

    # -- superruns --------------------------------------------------------------------------
    def child(self, run_id: str) -> GraphBuilder:
        """The builder of subrun ``run_id`` of this superrun: same storage and settings, and
        it adds its tasks and saves to this builder's graph.
        """
        if run_id not in self._children:
            child = GraphBuilder(
                self.plugins.subrun(run_id),
                self.frontends,
                allow_save=self.allow_save,
                fuzzy_for=self.fuzzy_for,
                fuzzy_for_options=self.fuzzy_for_options,
                forbid_creation_of=self.forbid_creation_of,
                write_superruns=self.write_superruns,
            )
            child.save_tasks = self.save_tasks  # one graph: progress and aborts see them all
            child.units = self.units
            self._children[run_id] = child
        return self._children[run_id]

    def stream_as_target(self, data_type: str) -> Stream:
        """:meth:`stream` of ``data_type``, saved (if computed) as if listed in ``save=``
        unless its plugin never saves it: what a superrun needs of a subrun is kept.
        """
        if data_type not in self.targets:
            self.targets = (*self.targets, data_type)
        cls = self.plugins.plugin_class(data_type)
        if cls.save_when_of(data_type) is not SaveWhen.NEVER and data_type not in self.save:
            self.save = (*self.save, data_type)
        return self.stream(data_type)

    def order_subruns(
        self, data_type: str, spans: Sequence[tuple[Subrun, Interval | None]]
    ) -> list[Subrun]:
        """The subruns in time order of their data's ``(start, end)`` span (``None``: no data,
        put last); ``InvalidRunDefinition`` if two overlap in time.
        """
        with_data = sorted(
            [(span, sub) for sub, span in spans if span is not None], key=lambda x: x[0][0]
        )
        for (a_span, a), (b_span, b) in itertools.pairwise(with_data):
            if a_span[1] > b_span[0]:
                raise InvalidRunDefinition(
                    f"superrun {self.run_id!r}: the {data_type!r} data of subruns {a.run_id!r} "
                    f"[{a_span[0]}, {a_span[1]}) and {b.run_id!r} [{b_span[0]}, {b_span[1]}) "
                    "overlap in time; a superrun's subruns must not overlap (take disjoint "
                    "time ranges of them)"
                )
        return [sub for _, sub in with_data] + [sub for sub, span in spans if span is None]

    def _concatenate(self, data_type: str) -> None:
        import dask

        spec = self.plugins.superrun
        assert spec is not None
        pieces: dict[str, tuple[Stream, list[Interval], list[Any]]] = {}
        spans: list[tuple[Subrun, Interval | None]] = []
        for sub in spec.subruns:
            s = self.child(sub.run_id).stream_as_target(data_type)
            intervals, parts = [], []
            for i, interval, inside in restrict_intervals(s.intervals, sub.ranges):
                intervals.append(interval)
                if inside is None:
                    parts.append(s.parts[i])
                    continue
                name = f"subrun-{data_type}-{sub.run_id}-{self.token}-{i}"
                parts.append(dask.delayed(_select_ranges)(s.parts[i], inside, dask_key_name=name))
            pieces[sub.run_id] = (s, intervals, parts)
            spans.append((sub, (intervals[0][0], intervals[-1][1]) if intervals else None))
        order = self.order_subruns(data_type, spans)
        dtypes = {str(pieces[sub.run_id][0].dtype) for sub in order}
        if len(dtypes) > 1:
            raise IncompatibleTargets(
                f"superrun {self.run_id!r}: the subruns' {data_type!r} have different dtypes "
                f"{sorted(dtypes)}; they cannot be concatenated"
            )
        streams = [pieces[sub.run_id][0] for sub in order]
        self.streams[data_type] = Stream(
            data_type,
            self.plugins.key(data_type),
            streams[0].dtype,
            [iv for sub in order for iv in pieces[sub.run_id][1]],
            [p for sub in order for p in pieces[sub.run_id][2]],
            fuzzy=any(s.fuzzy for s in streams),
            subruns=streams,
        )

    def load(self, data_type: str, found: Found) -> Stream:
        """The stream of ``data_type`` read from where ``found`` says it is."""
        frontend, stored = found.frontend, found.key
        key = self.plugins.key(data_type)
        fuzzy = stored != key
        if fuzzy:
            logger.info("run %s: loading %s for %s (fuzzy match)", self.run_id, stored, key)
        lazy = found.loader()
        intervals, parts = self._stored_parts(lazy, str(stored))
        return Stream(data_type, key, lazy.dtype, intervals, parts, frontend, stored, fuzzy)

    def _stored_parts(self, lazy: Any, name: str) -> tuple[list[Interval], list[Any]]:
        """The partition intervals of stored lazy data and a ``Delayed`` read of each."""
        import dask

        dtype = lazy.dtype
        intervals: list[Interval] = []
        parts = []
        offset = 0
        for i, p in enumerate(lazy.manifest.partitions):
            intervals.append((p.start, p.end))
            task = f"load-{name}-{self.token}-{i}"
            if p.rows:
                piece = lazy.array[offset : offset + p.rows]
                parts.append(dask.delayed(_as_array)(piece, dtype, dask_key_name=task))
            else:
                parts.append(dask.delayed(np.zeros)(0, dtype, dask_key_name=task))
            offset += p.rows
        return intervals, parts

    def _forbidden(self, data_type: str) -> bool:
        return data_type in self.forbid_creation_of or "*" in self.forbid_creation_of

    def _compute(self, data_type: str) -> None:
        import dask

        plugin = self.plugins.plugin(data_type)
        cls = type(plugin)
        key = self.plugins.key(data_type)
        if self._forbidden(data_type):
            where = ", ".join(repr(fe) for fe in self.frontends) or "no storage configured"
            raise CreationForbidden(
                f"{key} is not stored ({where}) and the context forbids creating "
                f"{data_type!r} (forbid_creation_of={list(self.forbid_creation_of)})"
            )
        deps = cls.dependencies()
        if cls.is_source():
            dep_streams: list[Stream] = []
            intervals = plugin.checked_partitions(self.run_id)
            members: list[list[list[int]]] = []
        else:
            dep_streams = [self.stream(d) for d in deps]
            intervals, members = align_intervals([s.intervals for s in dep_streams])
        fuzzy = any(s.fuzzy for s in dep_streams)
        tasks = []
        for i, (start, end) in enumerate(intervals):
            inputs = {
                d: self._gather(s, members[j][i])
                for j, (d, s) in enumerate(zip(deps, dep_streams, strict=True))
            }
            name = f"compute-{cls.__name__}-{self.run_id}-{self.token}-{i}"
            task = dask.delayed(_compute_task, pure=False)(
                plugin, i, start, end, inputs, dask_key_name=name
            )
            tasks.append(task)
            if not self.partition_mode:  # else only the tasks the selection needs count
                self.units.append(task)
        logger.debug(
            "run %s: computing %s in %d partition(s)", self.run_id, cls.outputs(), len(tasks)
        )
        for output in cls.outputs():
            if output in self.streams or self.plugins.registry.get(output) is not cls:
                continue  # loaded already, or now provided by another registered plugin
            parts = [
                dask.delayed(operator.getitem)(
                    t, output, dask_key_name=f"{output}-{self.run_id}-{self.token}-{i}"
                )
                for i, t in enumerate(tasks)
            ]
            stream = Stream(
                output,
                self.plugins.key(output),
                plugin.dtype_of(output),
                list(intervals),
                parts,
                fuzzy=fuzzy,
                inputs=[
                    (s, [members[j][i] for i in range(len(intervals))])
                    for j, s in enumerate(dep_streams)
                ],
                tasks=tasks,
            )
            self.streams[output] = stream
            if self.partition_mode and not fuzzy:
                self._hold_pieces(stream)
            if self._should_save(output, cls, fuzzy):
                if self.partition_mode:
                    stream.save_plugin = plugin  # a piece, once the selection is known
                else:
                    self._add_savers(stream, plugin)

    def _gather(self, stream: Stream, indices: list[int]) -> Any:
        if len(indices) == 1:
            return stream.parts[indices[0]]
        memo = (stream.data_type, tuple(indices))
        if memo not in self._gathered:
            import dask

            first = indices[0] if indices else "none"
            name = f"concat-{stream.data_type}-{self.run_id}-{self.token}-{first}-{len(indices)}"
            self._gathered[memo] = dask.delayed(_concat)(
                [stream.parts[k] for k in indices], stream.dtype, dask_key_name=name
            )
        return self._gathered[memo]

    # -- saving -----------------------------------------------------------------------------
    def _should_save(self, output: str, cls: type[Plugin], fuzzy: bool) -> bool:
        when = cls.save_when_of(output)
        if when is SaveWhen.NEVER:
            if output in self.save:
                raise InvalidRequest(
                    f"{cls.__name__} never saves {output!r} (save_when=NEVER); remove it from save="
                )
            return False
        if not self.allow_save:
            return False
        if self.plugins.superrun is not None and not self.write_superruns:
            logger.info(
                "superrun %s: %s is computed, not saved (set write_superruns=True to save it)",
                self.run_id,
                output,
            )
            return False
        if when is SaveWhen.EXPLICIT and output not in self.save:
            return False
        if when is SaveWhen.TARGET and output not in self.targets and output not in self.save:
            return False
        if fuzzy:
            logger.warning(
                "run %s: %s is computed from fuzzily matched data and is not saved",
                self.run_id,
                output,
            )
            return False
        return True

    def _add_savers(
        self, stream: Stream, plugin: Plugin, indices: Sequence[int] | None = None
    ) -> None:
        """Saver sinks of ``stream`` (only partitions ``indices``, as a piece, if given)."""
        metadata = saver_metadata(plugin, stream.data_type)
        key, parts, intervals = stream.key, stream.parts, stream.intervals
        if indices is not None:
            spans = spans_of(stream.intervals, indices)
            key = self.plugins.piece_key(stream.data_type, spans)
            metadata["partitions"] = [list(sp) for sp in spans]
            metadata["piece_of"] = str(stream.key)
            parts = [stream.parts[i] for i in indices]
            intervals = [stream.intervals[i] for i in indices]
        # the plugin's outputs, checked by compute_partition against these very intervals
        self.add_sinks(key, stream.dtype, metadata, parts, intervals, prechecked=True)

    def add_sinks(
        self,
        key: DataKey,
        dtype: np.dtype[Any],
        metadata: dict[str, Any],
        parts: Sequence[Any],
        intervals: Sequence[Interval],
        prechecked: bool = False,
    ) -> int:
        """Saver sinks committing ``parts`` under ``key`` to every writable frontend that takes
        its data type; returns how many were added. ``prechecked``: the parts are plugin
        outputs already validated against ``intervals`` (the savers do not check them again).
        """
        added = 0
        for fe in self.frontends:
            if fe.readonly or not fe.takes(key.data_type):
                continue
            try:
                # a key names what produced the data: if another saver commits it first, the
                # stored data is what this one would have written (storage.commit)
                saver = fe.saver(
                    key,
                    dtype,
                    metadata=metadata,
                    lost_race=LostRace.USE_STORED,
                    checked_absent=(id(fe), str(key)) in self._absent,
                )
            except (DataExistsError, ReadOnlyError) as e:
                logger.info("not saving %s to %r: %s", key, fe, e)
                continue
            saver.prechecked = prechecked
            sink = saver.save(list(parts), list(intervals))
            self.save_tasks.append(SaveTask(saver, fe, sink))
            self.units.append(sink)
            added += 1
        return added

    # -- per-partition work -----------------------------------------------------------------
    def _listing(self, n: int, fe: StorageFrontend) -> list[Any]:
        if n not in self._listings:
            self._listings[n] = fe.list(self.run_id)
        return self._listings[n]

    def stored_pieces(self, data_type: str, intervals: Sequence[Interval]) -> list[StoredPiece]:
        """The stored pieces of ``data_type`` of this run (exact lineage only), nearest
        frontend first, with the indices into ``intervals`` (the full partition list) of the
        partitions each holds.

        Raises ``DataCorrupted`` naming the piece if its partitions are not partitions of the
        full list or differ from what its lineage says it holds.
        """
        wanted = canonical_json(self.plugins.key(data_type).lineage)
        out: list[StoredPiece] = []
        for n, fe in enumerate(self.load_order):
            if not fe.takes(data_type):
                continue
            for entry in self._listing(n, fe):
                key = entry.key
                if key.data_type != data_type:
                    continue
                spans = piece_spans(key.lineage, data_type, str(key))
                if spans is None or canonical_json(without_piece(key.lineage, data_type)) != wanted:
                    continue
                m = fe.manifest_at(entry.location)
                held = [(p.start, p.end) for p in m.partitions]
                indices = _indices_of(intervals, held, f"piece {key} in {fe!r}", data_type)
                if spans_of(intervals, indices) != spans:
                    raise DataCorrupted(
                        f"piece {key} in {fe!r}: its lineage says it holds {list(spans)} but its "
                        f"partitions span {spans_of(intervals, indices)}; remove it"
                    )
                out.append(StoredPiece(key, fe, entry.location, indices, spans, m.rows))
        return out

    def piece_parts(self, piece: StoredPiece, dtype: np.dtype[Any]) -> dict[int, Any]:
        """``{index in the full partition list: Delayed read}`` of the partitions of a
        stored piece (verified when read, like every read); ``DataCorrupted`` if its dtype is
        not ``dtype``.
        """
        lazy = piece.loader()
        if lazy.dtype != dtype:
            raise DataCorrupted(
                f"piece {piece.key} in {piece.frontend!r} has dtype {lazy.dtype}, not the "
                f"{dtype} its plugin declares; remove it"
            )
        _, parts = self._stored_parts(lazy, str(piece.key))
        return dict(zip(piece.indices, parts, strict=True))

    def _hold_pieces(self, stream: Stream) -> None:
        """Read the partitions of ``stream`` that stored pieces hold from them."""
        for piece in self.stored_pieces(stream.data_type, stream.intervals):
            if all(i in stream.held for i in piece.indices):
                continue
            for i, part in self.piece_parts(piece, stream.dtype).items():
                if i not in stream.held:
                    stream.parts[i] = part
                    stream.held[i] = piece

    def need(self, data_type: str, indices: Sequence[int]) -> None:
        """Partition mode: partitions ``indices`` of ``data_type`` (a stream already built)
        are wanted; what they are computed from is needed in turn.
        """
        self._need(self.streams[data_type], set(indices))

    def _need(self, stream: Stream, indices: set[int]) -> None:
        got = self.needed.setdefault(stream.data_type, set())
        new = indices - got
        if not new:
            return
        got |= new
        if stream.loaded_from is not None:
            return
        computed = {i for i in new if i not in stream.held}
        if not computed:
            return
        for dep, members in stream.inputs:
            self._need(dep, {k for i in computed for k in members[i]})
        for other in self.streams.values():
            if other is not stream and other.tasks and other.tasks is stream.tasks:
                self._need(other, computed)  # the plugin's other outputs come with them

    def computed_needed(self, data_type: str) -> list[int]:
        """Partition mode: the needed partitions of ``data_type`` that are computed."""
        s = self.streams[data_type]
        if s.loaded_from is not None:
            return []
        return sorted(i for i in self.needed.get(data_type, ()) if i not in s.held)

    def finish_pieces(self) -> None:
        """Partition mode: count the needed compute tasks as progress units and add a piece
        saver per saved type for the partitions it computes.
        """
        seen: set[Any] = set()
        for data_type in self.needed:
            s = self.streams[data_type]
            todo = self.computed_needed(data_type)
            for i in todo:
                task = s.tasks[i]
                if task.key not in seen:
                    seen.add(task.key)
                    self.units.append(task)
            if todo and s.save_plugin is not None:
                self._add_savers(s, s.save_plugin, todo)

    # -- outputs ----------------------------------------------------------------------------
    def output(
        self,
        targets: Sequence[str],
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
        indices: Sequence[int] | None = None,
    ) -> tuple[list[Any], np.dtype[Any]]:
        """Per-partition ``Delayed`` arrays of ``targets`` merged side by side, with only
        ``fields`` and, for ``time_range=(t0, t1)``, only records with ``t0 <= time < t1``
        (and only the partitions that can hold them); only partitions ``indices`` of the
        aligned partitioning if given. Returns ``(parts, dtype)``.
        """
        import dask

        streams = [self.stream(t) for t in targets]
        intervals, members = align_intervals([s.intervals for s in streams])
        what = " + ".join(targets)
        dtype = select_dtype(merged_dtype([s.dtype for s in streams]), fields, what)
        names = list(targets)
        parts = []
        chosen = None if indices is None else set(indices)
        for i, (start, end) in enumerate(intervals):
            if time_range is not None and not (start < time_range[1] and end >= time_range[0]):
                continue
            if chosen is not None and i not in chosen:
                continue
            inputs = [self._gather(s, members[j][i]) for j, s in enumerate(streams)]
            name = f"output-{'.'.join(names)}-{self.run_id}-{self.token}-{i}"
            parts.append(
                dask.delayed(_assemble)(inputs, names, dtype, time_range, dask_key_name=name)
            )
        return parts, dtype

    def row_counts(self, data_type: str, indices: Sequence[int] | None = None) -> list[Any]:
        """``Delayed`` row counts of the partitions (``indices``: only those) of
        ``data_type``: computes it, returns little (for making data that is not saved).
        """
        import dask

        s = self.stream(data_type)
        chosen = range(len(s.parts)) if indices is None else indices
        return [
            dask.delayed(_rows)(s.parts[i], dask_key_name=f"rows-{data_type}-{self.token}-{i}")
            for i in chosen
        ]
