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
    DataExistsError,
    DataKey,
    DataNotAvailable,
    Location,
    ReadOnlyError,
    StorageFrontend,
)
from strata.storage.commit import LostRace
from strata.storage.saver import Saver

from .dtypes import merge_arrays, merged_dtype
from .errors import CreationForbidden, IncompatibleTargets, InvalidRequest, InvalidRunDefinition
from .lineage import RunPlugins, Subrun
from .plugin import Plugin, SaveWhen

__all__ = [
    "STORAGE_KIND_ORDER",
    "Found",
    "GraphBuilder",
    "Stream",
    "align_intervals",
    "loading_order",
    "select_dtype",
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
                    continue
                return Found(fe, stored, loc)
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
        import dask

        frontend, stored = found.frontend, found.key
        key = self.plugins.key(data_type)
        fuzzy = stored != key
        if fuzzy:
            logger.info("run %s: loading %s for %s (fuzzy match)", self.run_id, stored, key)
        lazy = found.loader()
        m = lazy.manifest
        dtype = lazy.dtype
        intervals: list[Interval] = []
        parts = []
        offset = 0
        for i, p in enumerate(m.partitions):
            intervals.append((p.start, p.end))
            name = f"load-{stored}-{self.token}-{i}"
            if p.rows:
                piece = lazy.array[offset : offset + p.rows]
                parts.append(dask.delayed(_as_array)(piece, dtype, dask_key_name=name))
            else:
                parts.append(dask.delayed(np.zeros)(0, dtype, dask_key_name=name))
            offset += p.rows
        return Stream(data_type, key, dtype, intervals, parts, frontend, stored, fuzzy)

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
            )
            self.streams[output] = stream
            if self._should_save(output, cls, fuzzy):
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

    def _add_savers(self, stream: Stream, plugin: Plugin) -> None:
        cls = type(plugin)
        metadata = {
            "plugin": cls.__name__,
            "version": cls.resolved_version(),
            "data_kind": cls.kind_of(stream.data_type),
            "field_help": plugin.field_help_of(stream.data_type),
        }
        for fe in self.frontends:
            if fe.readonly or not fe.takes(stream.data_type):
                continue
            try:
                # a key names what produced the data: if another saver commits it first, the
                # stored data is what this one would have written (storage.commit)
                saver = fe.saver(
                    stream.key, stream.dtype, metadata=metadata, lost_race=LostRace.USE_STORED
                )
            except (DataExistsError, ReadOnlyError) as e:
                logger.info("not saving %s to %r: %s", stream.key, fe, e)
                continue
            sink = saver.save(stream.parts, stream.intervals)
            self.save_tasks.append(SaveTask(saver, fe, sink))
            self.units.append(sink)

    # -- outputs ----------------------------------------------------------------------------
    def output(
        self,
        targets: Sequence[str],
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> tuple[list[Any], np.dtype[Any]]:
        """Per-partition ``Delayed`` arrays of ``targets`` merged side by side, with only
        ``fields`` and, for ``time_range=(t0, t1)``, only records with ``t0 <= time < t1``
        (and only the partitions that can hold them). Returns ``(parts, dtype)``.
        """
        import dask

        streams = [self.stream(t) for t in targets]
        intervals, members = align_intervals([s.intervals for s in streams])
        what = " + ".join(targets)
        dtype = select_dtype(merged_dtype([s.dtype for s in streams]), fields, what)
        names = list(targets)
        parts = []
        for i, (start, end) in enumerate(intervals):
            if time_range is not None and not (start < time_range[1] and end >= time_range[0]):
                continue
            inputs = [self._gather(s, members[j][i]) for j, s in enumerate(streams)]
            name = f"output-{'.'.join(names)}-{self.run_id}-{self.token}-{i}"
            parts.append(
                dask.delayed(_assemble)(inputs, names, dtype, time_range, dask_key_name=name)
            )
        return parts, dtype

    def row_counts(self, data_type: str) -> list[Any]:
        """``Delayed`` row counts of the partitions of ``data_type``: computes it, returns
        little (for making data that is not saved).
        """
        import dask

        s = self.stream(data_type)
        return [
            dask.delayed(_rows)(p, dask_key_name=f"rows-{data_type}-{self.token}-{i}")
            for i, p in enumerate(s.parts)
        ]
