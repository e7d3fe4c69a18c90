"""Plugins configured for one run, and the lineage (hence the key) of every data type.

The lineage of a data type lists, for the type and every type it depends on, recursively, the
plugin class name, its version and its tracked option values::

    {"peaks": ["Peaks", "0.1.0", {"gap_ns": 500}],
     "records": ["Records", "0.1.0", {"gains": [1.0, 0.9]}],
     "raw_records": ["RawRecords", "0.1.0", {"seed": 0}]}

Option values are resolved per run (config, then run metadata for ``from_run`` options, then
defaults), so the lineage of one data type can differ between runs.

A *superrun* (a run id starting with ``_``, as in strax) is defined by its run document's
``sub_run_spec``: ``{subrun: "all" | [[t0, t1], ...]}`` (see :class:`SuperrunSpec`). A data type
whose plugin does not ``allow_superrun`` is, for a superrun, the concatenation of its subruns'
data; its lineage entry names the plugin and lists the subruns, their time ranges and the
lineage hash of each subrun's key::

    {"records": ["Records", "0.1.0", {"_subruns": [["r1", None, "k3x..."],
                                                    ["r2", [[0, 500]], "q7a..."]]}]}

so a different subrun set, other time ranges, or subrun data made otherwise give another key
for the superrun and for everything computed from it.

A *piece* (per-partition work) holds only some partitions of a run's data type. Its lineage is
the full key's with one more option in the type's own entry, the ``[start, end)`` spans of the
partitions it holds (one per run of consecutive partitions)::

    {"peaks": ["Peaks", "0.1.0", {"gap_ns": 500, "_partitions": [[0, 2000], [3000, 4000]]}],
     "records": ["Records", "0.1.0", {"gains": [1.0, 0.9]}], ...}

so every piece has its own key (and commit), and the entries of what it was computed from are
those of the full key: pieces of one type tile its full key (see ``Context.merge_partitions``).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from strata.storage import DataCorrupted, DataKey, DataNotAvailable, InvalidKey
from strata.storage.keys import Lineage, validate_run_id

from .errors import InvalidRunDefinition, OptionError, PluginDefinitionError, UnknownDataType
from .options import lookup_path
from .plugin import Plugin

__all__ = [
    "PARTITIONS_OPTION",
    "SUBRUNS_OPTION",
    "SUPERRUN_PREFIX",
    "RunPlugins",
    "Subrun",
    "SuperrunSpec",
    "is_superrun",
    "piece_lineage",
    "piece_spans",
    "spans_of",
    "unknown_data_type",
    "without_piece",
]

SUPERRUN_PREFIX = "_"
"""Run ids starting with this are superruns (strax's convention)."""
SUBRUNS_OPTION = "_subruns"
"""The name under which a concatenated superrun type's lineage entry lists its subruns."""
SPEC_FIELD = "sub_run_spec"
"""The run document field that defines a superrun (strax's name)."""
PARTITIONS_OPTION = "_partitions"
"""The name under which a piece's lineage entry lists the time spans of its partitions."""

Interval = tuple[int, int]


def spans_of(intervals: Sequence[Interval], indices: Sequence[int]) -> tuple[Interval, ...]:
    """``[start, end)`` spans of partitions ``indices`` (sorted) of ``intervals``: one per run
    of consecutive indices.

    >>> spans_of([(0, 10), (10, 20), (20, 30), (30, 40)], [0, 1, 3])
    ((0, 20), (30, 40))
    """
    out: list[Interval] = []
    prev = None
    for i in indices:
        s, e = intervals[i]
        if prev is not None and i == prev + 1:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
        prev = i
    return tuple(out)


def piece_lineage(lineage: Lineage, data_type: str, spans: Sequence[Interval]) -> Lineage:
    """The lineage of a piece of ``data_type`` holding the partitions in ``spans``."""
    out = dict(lineage)
    plugin, version, options = lineage[data_type]
    out[data_type] = [plugin, version, {**options, PARTITIONS_OPTION: [list(s) for s in spans]}]
    return out


def without_piece(lineage: Lineage, data_type: str) -> Lineage:
    """``lineage`` without the piece option of ``data_type``: the full key's lineage."""
    out = dict(lineage)
    entry = lineage.get(data_type)
    if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], dict):
        opts = {k: v for k, v in entry[2].items() if k != PARTITIONS_OPTION}
        out[data_type] = [entry[0], entry[1], opts]
    return out


def piece_spans(lineage: Lineage, data_type: str, where: str) -> tuple[Interval, ...] | None:
    """The spans a piece's lineage says it holds; ``None`` if the lineage is not a piece's.

    The lineage was read from storage: spans that are not sorted, non-empty ``[start, end]``
    integer pairs are ``DataCorrupted`` naming ``where``.
    """
    entry = lineage.get(data_type)
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], dict)):
        return None
    if PARTITIONS_OPTION not in entry[2]:
        return None
    raw = entry[2][PARTITIONS_OPTION]
    out: list[Interval] = []
    ok = isinstance(raw, list) and bool(raw)
    for pair in raw if ok else ():
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            and pair[0] <= pair[1]
            and (not out or pair[0] >= out[-1][1])
        ):
            ok = False
            break
        out.append((pair[0], pair[1]))
    if not ok:
        raise DataCorrupted(
            f"{where}: its lineage's {PARTITIONS_OPTION!r} for {data_type!r} is {raw!r:.200}, "
            "not sorted [start, end] spans of integers; remove it"
        )
    return tuple(out)


def is_superrun(run_id: str) -> bool:
    """Whether ``run_id`` names a superrun (it starts with ``_``)."""
    return run_id.startswith(SUPERRUN_PREFIX)


@dataclass(frozen=True)
class Subrun:
    """One subrun of a superrun: its id and the time ranges taken from it (``None``: all)."""

    run_id: str
    ranges: tuple[Interval, ...] | None = None

    def spec_value(self) -> str | list[list[int]]:
        """Its value in a run document's ``sub_run_spec``: ``"all"`` or ``[[t0, t1], ...]``."""
        return "all" if self.ranges is None else [[a, b] for a, b in self.ranges]


def _ranges(value: Any, where: str) -> tuple[Interval, ...] | None:
    """Validated time ranges: ``None``/``"all"``, or ``[(t0, t1), ...]`` of ints with
    ``t0 < t1``, sorted and not overlapping.
    """
    if value is None or (isinstance(value, str) and value == "all"):
        return None
    try:
        pairs = [tuple(r) for r in value]
    except TypeError:
        pairs = [()]
    out: list[Interval] = []
    for pair in pairs:
        ok = len(pair) == 2 and all(
            (isinstance(v, int) and not isinstance(v, bool)) or _is_np_int(v) for v in pair
        )
        if not ok:
            raise InvalidRunDefinition(
                f"{where}: time ranges must be 'all' (or None) or [(t0, t1), ...] of integer "
                f"nanoseconds, got {value!r}"
            )
        a, b = int(pair[0]), int(pair[1])
        if a >= b:
            raise InvalidRunDefinition(f"{where}: time range ({a}, {b}) is empty or reversed")
        if out and a < out[-1][1]:
            raise InvalidRunDefinition(
                f"{where}: time ranges must be sorted and not overlap; ({a}, {b}) starts "
                f"before {out[-1]} ends"
            )
        out.append((a, b))
    if not out:
        raise InvalidRunDefinition(f"{where}: no time range given (use 'all' for the whole run)")
    return tuple(out)


def _is_np_int(v: Any) -> bool:
    return isinstance(v, np.integer)


@dataclass(frozen=True)
class SuperrunSpec:
    """What a superrun is made of: its subruns (in the order defined) and their time ranges."""

    run_id: str
    subruns: tuple[Subrun, ...]

    @classmethod
    def build(cls, run_id: Any, spec: Mapping[Any, Any], where: str = "") -> SuperrunSpec:
        """A validated spec from ``{subrun: "all" | None | [(t0, t1), ...]}``.

        Raises ``InvalidRunDefinition`` naming the bad value: the superrun id must start with
        ``_``, subrun ids must be valid run ids of runs that are not superruns themselves, and
        there must be at least one subrun.
        """
        where = where or f"superrun {run_id!r}"
        try:
            validate_run_id(run_id)
        except InvalidKey as e:
            raise InvalidRunDefinition(f"{where}: {e}") from None
        if not is_superrun(run_id):
            raise InvalidRunDefinition(
                f"superrun name {run_id!r} must start with {SUPERRUN_PREFIX!r} (strax's rule: "
                f"it tells superruns from runs), e.g. {SUPERRUN_PREFIX + run_id!r}"
            )
        if not isinstance(spec, Mapping) or not spec:
            raise InvalidRunDefinition(
                f"{where}: {SPEC_FIELD} must be a non-empty mapping of subrun ids to 'all' or "
                f"time ranges, got {spec!r}"
            )
        subruns = []
        for sub, value in spec.items():
            try:
                validate_run_id(sub)
            except InvalidKey as e:
                raise InvalidRunDefinition(f"{where}: subrun: {e}") from None
            if is_superrun(sub):
                raise InvalidRunDefinition(
                    f"{where}: subrun {sub!r} is a superrun; a superrun is made of runs only"
                )
            subruns.append(Subrun(sub, _ranges(value, f"{where}, subrun {sub!r}")))
        return cls(run_id, tuple(subruns))

    @classmethod
    def from_document(cls, run_id: str, doc: Mapping[str, Any]) -> SuperrunSpec:
        """The spec in the run document ``doc`` of ``run_id`` (validated: it was read from
        storage).
        """
        where = f"run document of superrun {run_id!r}"
        if SPEC_FIELD not in doc:
            raise InvalidRunDefinition(
                f"run {run_id!r} starts with {SUPERRUN_PREFIX!r}, so it is a superrun, but its "
                f"run document has no {SPEC_FIELD!r} (fields: {sorted(doc)}); define it with "
                "Context.define_run"
            )
        return cls.build(run_id, doc[SPEC_FIELD], where)

    def to_spec(self) -> dict[str, str | list[list[int]]]:
        """The ``sub_run_spec`` value of the run document (the defined order is kept)."""
        return {s.run_id: s.spec_value() for s in self.subruns}


logger = logging.getLogger(__name__)


def unknown_data_type(data_type: str, known: Mapping[str, Any]) -> UnknownDataType:
    """The error for a data type no registered plugin provides, with close matches."""
    close = difflib.get_close_matches(str(data_type), list(known), n=3)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return UnknownDataType(
        f"no registered plugin provides {data_type!r}{hint} "
        f"(registered: {', '.join(sorted(known)) or 'none'})"
    )


class RunPlugins:
    """Plugin instances of one run with resolved options, and the lineage they imply.

    Parameters
    ----------
    run_id
        The run.
    registry
        ``{data_type: plugin class}``.
    config
        Option values set in the context, by option name.
    run_metadata
        Returns the run metadata document of a run (raising ``DataNotAvailable`` if there is
        none); called at most once, and only if a ``from_run`` option needs it or the run is a
        superrun (whose document defines it).

    """

    def __init__(
        self,
        run_id: str,
        registry: Mapping[str, type[Plugin]],
        config: Mapping[str, Any],
        run_metadata: Callable[[str], dict[str, Any]],
    ) -> None:
        self.run_id = validate_run_id(run_id)
        self.registry = registry
        self.config = config
        self._run_metadata = run_metadata
        self._doc: dict[str, Any] | None = None
        self._instances: dict[type[Plugin], Plugin] = {}
        self._lineages: dict[str, Lineage] = {}
        self._superrun: SuperrunSpec | None = None
        self._subruns: dict[str, RunPlugins] = {}

    # -- superruns --------------------------------------------------------------------------
    @property
    def superrun(self) -> SuperrunSpec | None:
        """The definition of this run if it is a superrun (read from its run document), else
        ``None``.
        """
        if not is_superrun(self.run_id):
            return None
        if self._superrun is None:
            try:
                doc = self.document()
            except DataNotAvailable as e:
                raise InvalidRunDefinition(
                    f"run {self.run_id!r} starts with {SUPERRUN_PREFIX!r}, so it is a superrun, "
                    f"but it has no run document to define it ({e}); define it with "
                    "Context.define_run"
                ) from None
            self._superrun = SuperrunSpec.from_document(self.run_id, doc)
        return self._superrun

    def subrun(self, run_id: str) -> RunPlugins:
        """The plugins of subrun ``run_id`` of this superrun (same registry and config)."""
        if run_id not in self._subruns:
            self._subruns[run_id] = RunPlugins(
                run_id, self.registry, self.config, self._run_metadata
            )
        return self._subruns[run_id]

    def concatenates(self, data_type: str) -> bool:
        """Whether ``data_type`` is, for this run, the concatenation of subruns' data: the run
        is a superrun and the plugin providing it does not ``allow_superrun``.
        """
        return self.superrun is not None and not self.plugin_class(data_type).allow_superrun

    def document(self) -> dict[str, Any]:
        """The run document of this run (read once); ``DataNotAvailable`` if there is none."""
        if self._doc is None:
            self._doc = self._run_metadata(self.run_id)
        return self._doc

    def plugin_class(self, data_type: str) -> type[Plugin]:
        """The registered class providing ``data_type`` (``UnknownDataType`` if none)."""
        try:
            return self.registry[data_type]
        except (KeyError, TypeError):
            raise unknown_data_type(data_type, self.registry) from None

    def plugin(self, data_type: str) -> Plugin:
        """The configured instance providing ``data_type`` (one per class and run)."""
        cls = self.plugin_class(data_type)
        if cls not in self._instances:
            self._instances[cls] = cls(run_id=self.run_id, **self.resolve_options(cls))
        return self._instances[cls]

    def resolve_options(self, cls: type[Plugin]) -> dict[str, Any]:
        """Option values of ``cls`` for this run: config, then run metadata, then default."""
        out = {}
        for name, opt in cls.takes_config.items():
            if name in self.config:
                value = self.config[name]
            elif opt.from_run is not None:
                value = self._from_run(cls, name, opt.from_run)
            elif opt.has_default:
                value = opt.default
            else:
                raise OptionError(
                    f"option {name!r} of {cls.__name__} has no default and is not set: "
                    f"give it in the context config (config={{{name!r}: ...}})"
                )
            out[name] = opt.validate(
                value, f"run {self.run_id!r}: option {name!r} of {cls.__name__}"
            )
        return out

    def _from_run(self, cls: type[Plugin], name: str, path: str) -> Any:
        if self._doc is None:
            try:
                self.document()
            except DataNotAvailable as e:
                raise OptionError(
                    f"run {self.run_id!r}: option {name!r} of {cls.__name__} is read from the "
                    f"run metadata at {path!r}, but there is no run metadata ({e}); write it "
                    "with frontend.write_run_metadata or set the option in the config"
                ) from None
        assert self._doc is not None
        try:
            return lookup_path(self._doc, path)
        except KeyError as e:
            raise OptionError(
                f"run {self.run_id!r}: option {name!r} of {cls.__name__} is read from the run "
                f"metadata at {path!r}, but the document has no {e.args[0]!r} "
                f"(top-level fields: {sorted(self._doc)})"
            ) from None

    def lineage(self, data_type: str) -> Lineage:
        """``{data_type: [plugin class, version, {tracked option: value}]}``, recursively."""
        if data_type not in self._lineages:
            out: Lineage = {}
            self._visit(data_type, (), out)
            self._lineages[data_type] = out
        return self._lineages[data_type]

    def _visit(self, data_type: str, stack: tuple[str, ...], out: Lineage) -> None:
        if data_type in stack:
            cycle = " -> ".join((*stack[stack.index(data_type) :], data_type))
            raise PluginDefinitionError(f"dependency cycle: {cycle}")
        if data_type in out:
            return
        if self.concatenates(data_type):
            cls = self.plugin_class(data_type)
            out[data_type] = [cls.__name__, cls.resolved_version(), self._subruns_entry(data_type)]
            return
        plugin = self.plugin(data_type)
        cls = type(plugin)
        out[data_type] = [cls.__name__, cls.resolved_version(), plugin.tracked_config()]
        for dep in cls.dependencies():
            self._visit(dep, (*stack, data_type), out)

    def _subruns_entry(self, data_type: str) -> dict[str, Any]:
        spec = self.superrun
        assert spec is not None
        rows: list[Sequence[Any]] = [
            [
                s.run_id,
                s.spec_value() if s.ranges else None,
                self.subrun(s.run_id).key(data_type).lineage_hash,
            ]
            for s in sorted(spec.subruns, key=lambda s: s.run_id)
        ]
        return {SUBRUNS_OPTION: rows}

    def key(self, data_type: str) -> DataKey:
        """The :class:`~strata.storage.DataKey` of ``data_type`` for this run."""
        return DataKey(self.run_id, data_type, self.lineage(data_type))

    def piece_key(self, data_type: str, spans: Sequence[Interval]) -> DataKey:
        """The key of a piece of ``data_type`` holding the partitions in ``spans``."""
        lineage = piece_lineage(self.lineage(data_type), data_type, spans)
        return DataKey(self.run_id, data_type, lineage)
