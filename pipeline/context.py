"""The Context: registered plugins, their configuration and storage, and the ``get_*`` API.

As in strax::

    ctx = Context(storage=["./strata_data"], register=demo.PLUGINS, config={"gap_ns": 300})
    ctx.make("run_001", "peak_basics")                   # computes and saves what is missing
    df = ctx.get_df("run_001", ["peaks", "peak_basics"], fields=["time", "area", "width"])
    ds = ctx.get_xarray("run_001", "peak_basics")        # lazy

Each needed data type is loaded from the nearest frontend that stores it (by ``storage_kind``,
then the order given; exactly, or fuzzily if ``fuzzy_for`` / ``fuzzy_for_options`` allow), else
computed from its dependencies partition by partition; computed types are saved to every
writable frontend that takes them, following the plugin's ``save_when``.

Superruns (strax's ``define_run``)::

    ctx.define_run("_week1", ["r1", "r2", "r3"])           # or {"r1": "all", "r2": [(t0, t1)]}
    ctx.get_array("_week1", "peaks")                      # the subruns' peaks, in time order

Per-partition work (strax's ``chunk_number`` and ``merge_per_chunk_storage``)::

    ctx.make("run_001", "peaks", partitions=[0, 3])       # saved as a piece: its own key
    ctx.partition_coverage("run_001", "peaks")            # which partitions are stored
    ctx.merge_partitions("run_001", "peaks")              # the full key, nothing recomputed
"""

from __future__ import annotations

import datetime
import difflib
import fnmatch
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from strata.storage import (
    DataCorrupted,
    DataKey,
    DataNotAvailable,
    Manifest,
    StorageFrontend,
    open_frontend,
)
from strata.storage.codecs import CompressorLike
from strata.storage.copy import copy_data
from strata.storage.jsonio import load_document
from strata.storage.keys import Lineage, canonical_json, normalize
from strata.storage.lazy import LazyData

from . import runs as run_selection
from .build import (
    Found,
    GraphBuilder,
    SaveTask,
    StoredPiece,
    Stream,
    _assemble,
    _concat,
    loading_order,
    partitions_in,
    partitions_overlapping,
    restrict_intervals,
    saver_metadata,
    select_dtype,
    selection_windows,
    source_partitions,
)
from .dtypes import merged_dtype
from .errors import (
    IncompatibleTargets,
    InvalidRequest,
    InvalidRunDefinition,
    OptionError,
    OptionTypeError,
    PipelineError,
    PluginDefinitionError,
)
from .execute import Progress, active_client, run_graph
from .lineage import (
    SPEC_FIELD,
    RunPlugins,
    Subrun,
    SuperrunSpec,
    is_superrun,
    spans_of,
    unknown_data_type,
)
from .options import MISSING
from .plugin import Plugin, SaveWhen, as_tuple, plugins_in

if TYPE_CHECKING:
    import dask.array as da
    import pandas as pd
    import xarray as xr

__all__ = ["CONTEXT_OPTIONS", "Context"]

logger = logging.getLogger(__name__)

CONTEXT_OPTIONS: dict[str, str] = {
    "fuzzy_for": "data types whose plugin, version and options are ignored when loading",
    "fuzzy_for_options": "option names ignored (in every data type) when loading",
    "forbid_creation_of": "data types that must be loaded, never computed ('*': all)",
    "write_superruns": "save what is computed for superruns (True/False, default False)",
}
"""The context options and what they mean."""

_BOOL_OPTIONS = frozenset({"write_superruns"})

RunId = str | bytes
RunIds = RunId | Sequence[RunId]
Targets = str | Sequence[str]
Interval = tuple[int, int]

PATTERN_TYPES = ("fnmatch", "re")
"""How ``include_targets`` / ``exclude_targets`` patterns match data type names: shell
wildcards (``fnmatch``, whole name, case-sensitive) or regular expressions (``re``, matched at
the start of the name, as ``re.match``)."""


def _run_id(run_id: Any) -> str:
    """A run id as a string: bytes (and numpy bytes) are decoded as UTF-8, as strax does."""
    if isinstance(run_id, (bytes, bytearray)):
        try:
            return bytes(run_id).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"run id {bytes(run_id)!r} is not UTF-8") from None
    if isinstance(run_id, str):
        return str(run_id)  # numpy str_ too
    raise InvalidRequest(f"a run id must be a string (or bytes), got {run_id!r}")


def _run_ids(run_id: Any) -> list[str]:
    if isinstance(run_id, (str, bytes, bytearray)):
        ids = [_run_id(run_id)]
    else:
        try:
            ids = [_run_id(r) for r in run_id]
        except TypeError:
            raise InvalidRequest(
                f"run_id must be a run id or a list of them, got {run_id!r}"
            ) from None
    if not ids:
        raise InvalidRequest("no run_id given")
    return ids


def _patterns(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    values = as_tuple(value)
    if any(not isinstance(v, str) for v in values):
        raise InvalidRequest(f"{what} must be data type name patterns, got {value!r}")
    return values


def _matches(name: str, pattern: str, pattern_type: str) -> bool:
    if pattern_type == "fnmatch":
        return fnmatch.fnmatchcase(name, pattern)
    try:
        return re.match(pattern, name) is not None
    except re.error as e:
        raise InvalidRequest(f"bad regular expression {pattern!r}: {e}") from None


def _time_range(value: Any) -> Interval:
    """A ``(t0, t1)`` time range of integers with ``t0 < t1``; ``InvalidRequest`` otherwise."""
    try:
        t0, t1 = value
    except (TypeError, ValueError):
        raise InvalidRequest(f"time_range must be (t0, t1), got {value!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (t0, t1)):
        raise InvalidRequest(f"time_range must be integer nanoseconds (t0, t1), got {value!r}")
    if t0 >= t1:
        raise InvalidRequest(f"time_range {value!r} is empty or reversed (t0 < t1 is the rule)")
    return int(t0), int(t1)


def _intersect(a: Interval | None, b: Interval | None) -> tuple[bool, Interval | None]:
    """Whether ``a`` and ``b`` overlap (``None``: everything), and their intersection."""
    if a is None:
        return True, b
    if b is None:
        return True, a
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return lo < hi, (lo, hi)


def _with_run_ids(arrays: Sequence[np.ndarray], runs: Sequence[str], width: int) -> np.ndarray:
    """The arrays concatenated, with a first field ``run_id`` (a fixed-width string)."""
    base = arrays[0].dtype
    if "run_id" in (base.names or ()):
        raise InvalidRequest(
            "the data already has a field 'run_id': pass add_run_id_field=False to load it"
        )
    dtype = np.dtype(
        [
            ("run_id", f"<U{max(width, 1)}"),
            *[(n, base[n].base, base[n].shape) for n in base.names or ()],
        ]
    )
    out = np.empty(sum(len(a) for a in arrays), dtype=dtype)
    offset = 0
    for run, arr in zip(runs, arrays, strict=True):
        stop = offset + len(arr)
        out["run_id"][offset:stop] = run
        for name in base.names or ():
            out[name][offset:stop] = arr[name]
        offset = stop
    return out


def _add_run_id_block(block: np.ndarray, run: str, out_dtype: np.dtype[Any]) -> np.ndarray:
    out = np.empty(len(block), dtype=out_dtype)
    out["run_id"] = run
    for name in block.dtype.names or ():
        out[name] = block[name]
    return out


def _time_value(value: Any) -> float | None:
    """A run document's ``start``/``end`` as a number (ISO date-times as POSIX seconds)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            t = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.UTC)
        return t.timestamp()
    return None


def _names(value: Any) -> list[str]:
    """Strings of a run document field that is a string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _tag_names(value: Any) -> list[str]:
    """Tag names: strings, or objects with a string ``name`` (strax's form)."""
    if not isinstance(value, list):
        return []
    out = []
    for t in value:
        name = t.get("name") if isinstance(t, dict) else t
        if isinstance(name, str):
            out.append(name)
    return out


def _ranges_of_records(data: Any, from_run: str | None) -> dict[str, list[Interval]]:
    """``{run: [(time, endtime), ...]}`` of records (a structured array or a DataFrame with
    ``time`` and ``endtime`` or ``length`` and ``dt``, and ``run_id`` unless ``from_run``),
    overlapping and touching ranges merged.
    """
    import pandas as pd

    df = pd.DataFrame.from_records(data) if isinstance(data, np.ndarray) else data
    if "time" not in df.columns:
        raise InvalidRunDefinition("records defining a superrun need a 'time' field")
    if "endtime" in df.columns:
        end = df["endtime"].to_numpy()
    elif "length" in df.columns and "dt" in df.columns:
        end = df["time"].to_numpy() + df["length"].to_numpy() * df["dt"].to_numpy()
    else:
        raise InvalidRunDefinition(
            "records defining a superrun need 'endtime' (or 'length' and 'dt') fields"
        )
    if from_run is not None:
        runs = np.full(len(df), from_run, dtype=object)
    elif "run_id" in df.columns:
        runs = df["run_id"].to_numpy()
    else:
        raise InvalidRunDefinition(
            "give from_run= or records with a 'run_id' field to define a superrun from records"
        )
    out: dict[str, list[Interval]] = {}
    order = np.lexsort((df["time"].to_numpy(), runs.astype(str)))
    for i in order:
        run = _run_id(runs[i])
        t0, t1 = int(df["time"].iloc[i]), int(end[i])
        t1 = max(t1, t0 + 1)  # a zero-length record still selects its own time
        ranges = out.setdefault(run, [])
        if ranges and t0 <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], t1))
        else:
            ranges.append((t0, t1))
    return out


def _lineage_of(thing: Any, what: str) -> tuple[Lineage, str | None]:
    """The lineage (and key, if known) described by a DataKey, a Manifest, a manifest or
    strax metadata document (a dict or the path of its JSON file), or a lineage itself.
    """
    if isinstance(thing, DataKey):
        return thing.lineage, str(thing)
    if isinstance(thing, Manifest):
        return thing.key.lineage, str(thing.key)
    if isinstance(thing, (str, Path)):
        path = Path(thing)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise InvalidRequest(f"{what}: cannot read metadata file {str(path)!r}: {e}") from None
        try:
            thing = load_document(raw, f"metadata file {str(path)!r}")
        except DataCorrupted as e:
            raise InvalidRequest(f"{what}: {e}") from None
    if isinstance(thing, Mapping):
        if isinstance(thing.get("key"), Mapping) and "lineage" in thing["key"]:
            k = thing["key"]
            return dict(k["lineage"]), f"{k.get('run_id')}-{k.get('data_type')}"
        if isinstance(thing.get("lineage"), Mapping):
            return dict(thing["lineage"]), None
        if all(isinstance(v, (list, tuple)) and len(v) == 3 for v in thing.values()):
            return dict(thing), None
    raise InvalidRequest(
        f"{what}: expected a (run_id, target) pair, a DataKey, a Manifest, a metadata dict or "
        f"JSON file with a lineage, or a lineage; got {thing!r:.200}"
    )


def _entry_diff(a: Sequence[Any], b: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a[0] != b[0]:
        out["plugin"] = {"a": a[0], "b": b[0]}
    if a[1] != b[1]:
        out["version"] = {"a": a[1], "b": b[1]}
    opts: dict[str, Any] = {}
    for name in sorted(set(a[2]) | set(b[2])):
        va, vb = a[2].get(name, MISSING), b[2].get(name, MISSING)
        if va is MISSING or vb is MISSING or canonical_json(va) != canonical_json(vb):
            opts[name] = {
                **({"a": va} if va is not MISSING else {}),
                **({"b": vb} if vb is not MISSING else {}),
            }
    if opts:
        out["options"] = opts
    return out


def _field_type(dtype: np.dtype[Any]) -> str:
    base = dtype.base.name
    return f"{base}[{','.join(map(str, dtype.shape))}]" if dtype.shape else base


class Context:
    """Plugins, configuration and storage: the entry point for making and reading data.

    Parameters
    ----------
    storage
        Frontends, or URLs/paths opened with :func:`strata.storage.open_frontend`. Data is loaded
        from the nearest that has it (by ``storage_kind``: memory, local, online, compressed,
        remote, tape; this order breaks ties) and saved to every writable frontend that takes
        its data type.
    register
        Plugin classes (or one) to register.
    config
        Plugin option values by option name; every option of that name takes the value.
    client
        A ``distributed.Client`` to compute on. By default an active client is used if there
        is one, else Dask's threaded scheduler.
    fuzzy_for
        Data types whose plugin, version and options are ignored when looking for stored data.
    fuzzy_for_options
        Option names ignored everywhere when looking for stored data.
    forbid_creation_of
        Data types that must be loaded and are never computed (``"*"`` for all).
    write_superruns
        Save what is computed for superruns (by default superrun results are computed when
        asked for and not saved; the subruns' data they are made from is saved as usual).

    Attributes
    ----------
    failed_runs
        ``{run_id: exception}`` of the runs the last ``get_array`` / ``get_df`` call with
        ``ignore_errors=True`` skipped (empty after any other call).

    """

    def __init__(
        self,
        storage: StorageFrontend | str | Iterable[StorageFrontend | str] | None = None,
        register: type[Plugin] | Iterable[type[Plugin]] | None = None,
        config: Mapping[str, Any] | None = None,
        client: Any = None,
        *,
        fuzzy_for: str | Iterable[str] = (),
        fuzzy_for_options: str | Iterable[str] = (),
        forbid_creation_of: str | Iterable[str] = (),
        write_superruns: bool = False,
    ) -> None:
        if storage is None:
            storage = []
        elif isinstance(storage, (str, StorageFrontend)):
            storage = [storage]
        self.storage: list[StorageFrontend] = [open_frontend(s) for s in storage]
        self.client = client
        self._registry: dict[str, type[Plugin]] = {}
        self._config: dict[str, Any] = {}
        self._context_config: dict[str, Any] = {k: () for k in CONTEXT_OPTIONS}
        self._context_config["write_superruns"] = False
        self.failed_runs: dict[str, Exception] = {}
        if register is not None:
            self.register(register)
        self.set_context_config(
            {
                "fuzzy_for": fuzzy_for,
                "fuzzy_for_options": fuzzy_for_options,
                "forbid_creation_of": forbid_creation_of,
                "write_superruns": write_superruns,
            }
        )
        if config:
            self.set_config(config)

    def __repr__(self) -> str:
        return f"Context(storage={self.storage!r}, data_types={sorted(self._registry)!r})"

    # -- registration and configuration -----------------------------------------------------
    def register(self, plugins: type[Plugin] | Iterable[type[Plugin]]) -> Any:
        """Register plugin classes; a later registration of a data type replaces an earlier
        one. Returns its argument, so it works as a class decorator.
        """
        if isinstance(plugins, (type, Plugin)):
            classes: list[Any] = [plugins]
        else:
            classes = list(plugins)
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Plugin)):
                raise PluginDefinitionError(
                    f"can only register Plugin subclasses, got {cls!r}"
                    + (" (an instance: register its class)" if isinstance(cls, Plugin) else "")
                )
            cls.validate_class()
        for cls in classes:
            for output in cls.outputs():
                old = self._registry.get(output)
                if old is not None and old is not cls:
                    logger.info(
                        "%s now provided by %s (was %s)", output, cls.__name__, old.__name__
                    )
                self._registry[output] = cls
        return plugins

    def register_all(self, module: ModuleType) -> list[type[Plugin]]:
        """Register every Plugin subclass defined in ``module``; returns them."""
        found = plugins_in(module)
        self.register(found)
        return found

    @property
    def plugins(self) -> dict[str, type[Plugin]]:
        """``{data_type: plugin class}`` of the registered plugins."""
        return dict(self._registry)

    @property
    def config(self) -> dict[str, Any]:
        """The plugin option values set in this context."""
        return dict(self._config)

    @property
    def context_config(self) -> dict[str, Any]:
        """The context options (:data:`CONTEXT_OPTIONS`): ``fuzzy_for``, ``fuzzy_for_options``,
        ``forbid_creation_of`` (tuples of names) and ``write_superruns`` (a bool).
        """
        return dict(self._context_config)

    def _takers(self, option: str) -> list[tuple[type[Plugin], Any]]:
        classes = dict.fromkeys(self._registry.values())
        return [(c, c.takes_config[option]) for c in classes if option in c.takes_config]

    def set_config(self, config: Mapping[str, Any], mode: str = "update") -> None:
        """Set plugin option values (``mode="replace"`` drops the ones set before).

        Raises ``OptionError`` for an option no registered plugin takes and
        ``OptionTypeError`` for a value of the wrong type.
        """
        if mode not in ("update", "replace"):
            raise OptionError(f"mode must be 'update' or 'replace', got {mode!r}")
        self._validate_config(config)
        if mode == "replace":
            self._config = {}
        self._config.update(config)

    def _validate_config(self, config: Any) -> None:
        if not isinstance(config, Mapping):
            raise OptionTypeError(
                f"config must be a dict of option values, got {type(config).__name__}"
            )
        known = {name for c in self._registry.values() for name in c.takes_config}
        for name, value in config.items():
            takers = self._takers(name)
            if not takers:
                close = difflib.get_close_matches(str(name), sorted(known), n=3)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise OptionError(
                    f"unknown option {name!r}: no registered plugin takes it{hint} "
                    f"(options: {', '.join(sorted(known)) or 'none'})"
                )
            for cls, opt in takers:
                opt.validate(value, f"config option {name!r} (of {cls.__name__})")

    def _call_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        """The context's config updated with a call's ``config=`` (validated; the context is
        not changed).
        """
        if config is None:
            return self._config
        self._validate_config(config)
        return {**self._config, **config}

    def set_context_config(self, options: Mapping[str, Any]) -> None:
        """Change context options (:data:`CONTEXT_OPTIONS`): ``fuzzy_for``,
        ``fuzzy_for_options``, ``forbid_creation_of``, ``write_superruns``.
        """
        for name, value in options.items():
            if name not in CONTEXT_OPTIONS:
                raise OptionError(
                    f"unknown context option {name!r}; known: {sorted(CONTEXT_OPTIONS)} "
                    "(plugin options go in set_config)"
                )
            if name in _BOOL_OPTIONS:
                if not isinstance(value, (bool, np.bool_)):
                    raise OptionTypeError(
                        f"context option {name!r} takes True or False, got {value!r}"
                    )
                self._context_config[name] = bool(value)
                continue
            values = as_tuple(value)
            if any(not isinstance(v, str) for v in values):
                raise OptionError(f"context option {name!r} takes names, got {value!r}")
            self._context_config[name] = values

    # -- keys -------------------------------------------------------------------------------
    def _plugins_for(self, run_id: Any, config: Mapping[str, Any] | None = None) -> RunPlugins:
        return RunPlugins(
            _run_id(run_id), self._registry, self._call_config(config), self.run_metadata
        )

    def _builder(
        self,
        run_id: Any,
        targets: Sequence[str] = (),
        save: Sequence[str] = (),
        allow_save: bool = True,
        plugins: RunPlugins | None = None,
        config: Mapping[str, Any] | None = None,
        check_forbidden: bool = True,
        partition_mode: bool = False,
    ) -> GraphBuilder:
        cc = self._context_config
        return GraphBuilder(
            plugins if plugins is not None else self._plugins_for(run_id, config),
            self.storage,
            targets=targets,
            save=save,
            allow_save=allow_save,
            fuzzy_for=cc["fuzzy_for"],
            fuzzy_for_options=cc["fuzzy_for_options"],
            forbid_creation_of=cc["forbid_creation_of"] if check_forbidden else (),
            write_superruns=cc["write_superruns"],
            partition_mode=partition_mode,
        )

    def _check_save(self, save: Targets) -> tuple[str, ...]:
        """``save=`` as a tuple; every name a registered type its plugin may save."""
        names = as_tuple(save)
        for name in names:
            if name not in self._registry:
                raise unknown_data_type(name, self._registry)
            cls = self._registry[name]
            if cls.save_when_of(name) is SaveWhen.NEVER:
                raise InvalidRequest(
                    f"{cls.__name__} never saves {name!r} (save_when=NEVER); remove it from save="
                )
        return names

    def _check_targets(self, targets: Targets, merge: bool = True) -> tuple[str, ...]:
        ts = as_tuple(targets)
        if not ts:
            raise InvalidRequest("no target data type given")
        for t in ts:
            if t not in self._registry:
                raise unknown_data_type(t, self._registry)
        if merge and len(ts) > 1:
            kinds = {t: self._registry[t].kind_of(t) for t in ts}
            if len(set(kinds.values())) > 1:
                raise IncompatibleTargets(
                    f"cannot load {list(ts)} side by side: they are of different data kinds "
                    f"{kinds}; load each kind separately"
                )
        return ts

    def lineage(
        self, run_id: RunId, target: str, config: Mapping[str, Any] | None = None
    ) -> Lineage:
        """The lineage of ``target`` for ``run_id``: ``{data_type: [plugin, version, {opts}]}``
        (with ``config`` overriding the context's option values for this call).
        """
        self._check_targets(target)
        return self._plugins_for(run_id, config).lineage(target)

    def key_for(
        self, run_id: RunId, target: str, config: Mapping[str, Any] | None = None
    ) -> DataKey:
        """The :class:`~strata.storage.DataKey` ``target`` of ``run_id`` is stored under."""
        self._check_targets(target)
        return self._plugins_for(run_id, config).key(target)

    def is_stored(
        self, run_id: RunId, target: str, config: Mapping[str, Any] | None = None
    ) -> bool:
        """Whether ``target`` of ``run_id`` is stored (the fuzzy context options apply).

        For a superrun this asks about data stored under the superrun itself: a type made by
        concatenating subruns is loaded from them without being stored (see
        :meth:`available_for_run`).
        """
        self._check_targets(target)
        return self._builder(run_id, config=config).is_stored(target)

    def run_metadata(
        self, run_id: RunId, projection: str | Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The run metadata document of ``run_id`` from the nearest frontend that has one;
        ``projection`` (dotted paths) selects parts of it (see :func:`.runs.run_metadata`).
        """
        return run_selection.run_metadata(loading_order(self.storage), _run_id(run_id), projection)

    def _run_selection_kwargs(self) -> dict[str, Any]:
        cc = self.context_config
        return {
            "key_for": self.key_for,
            "fuzzy_for": cc.get("fuzzy_for", ()),
            "fuzzy_for_options": cc.get("fuzzy_for_options", ()),
        }

    def scan_runs(
        self, fields: str | Iterable[str] = (), check_available: str | Iterable[str] = ()
    ) -> pd.DataFrame:
        """Every run this context's frontends know, one row each (strax's ``scan_runs``):
        ``fields`` are dotted paths into the run documents, ``check_available`` targets get a
        ``<target>_available`` column (see :func:`.runs.scan_runs`).
        """
        return run_selection.scan_runs(
            loading_order(self.storage),
            fields=fields,
            check_available=check_available,
            **self._run_selection_kwargs(),
        )

    def select_runs(self, **filters: Any) -> pd.DataFrame:
        """The runs matching ``filters`` (strax's ``select_runs``: ``run_mode=``, ``run_id=``,
        ``include_tags=``, ``exclude_tags=``, ``available=``, ``pattern_type=``, ``fields=``;
        see :func:`.runs.select_runs`), checked against this context's keys.
        """
        return run_selection.select_runs(
            loading_order(self.storage), **filters, **self._run_selection_kwargs()
        )

    # -- superruns --------------------------------------------------------------------------
    def define_run(
        self,
        name: str,
        data: Mapping[str, Any] | Sequence[str] | np.ndarray | pd.DataFrame,
        from_run: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Define superrun ``name`` (it must start with ``_``) made of subruns, and store its
        run document; returns the document.

        The document has ``sub_run_spec`` (strax's field: ``{subrun: "all" | [[t0, t1], ...]}``,
        ordered by the subruns' ``start`` when every subrun document has one), and, from the
        subruns' documents where they have them, ``start`` (earliest), ``end`` (latest),
        ``livetime`` (sum of ``end - start``: seconds for ISO date-times), ``mode``,
        ``source`` and ``tags`` (the union). It is written to the nearest writable frontend.
        Loading a type for the superrun concatenates the subruns' data of it in time order
        (for plugins that do not ``allow_superrun``); the keys of superrun data include the
        subrun set, so redefining a superrun gives new keys.

        Parameters
        ----------
        name
            The superrun's run id: ``_`` and then letters, digits, ``_`` or ``.``.
        data
            The subruns: a list of run ids (whole runs); or ``{run_id: None | "all" |
            [(t0, t1), ...]}`` (time ranges select records with ``t0 <= time < t1``); or
            records (a structured array or DataFrame with ``time`` and ``endtime``, or
            ``length`` and ``dt``, and a ``run_id`` field unless ``from_run`` is given), which
            select the time ranges they cover.
        from_run
            The run the records in ``data`` come from.
        metadata
            More fields for the superrun's document.

        """
        if isinstance(data, Mapping):
            spec_in: dict[Any, Any] = {_run_id(k): v for k, v in data.items()}
        elif isinstance(data, np.ndarray) or type(data).__name__ == "DataFrame":
            spec_in = {
                k: [list(r) for r in v] for k, v in _ranges_of_records(data, from_run).items()
            }
        elif isinstance(data, (str, bytes)):
            raise InvalidRunDefinition(
                f"define_run takes a list of subruns, got the single run id {data!r}"
            )
        else:
            runs = _run_ids(data)
            if len(set(runs)) != len(runs):
                raise InvalidRunDefinition(f"superrun {name!r}: a subrun is listed twice: {runs}")
            spec_in = dict.fromkeys(runs, "all")
        spec = SuperrunSpec.build(name, spec_in)
        docs: dict[str, dict[str, Any]] = {}
        for sub in spec.subruns:
            try:
                docs[sub.run_id] = self.run_metadata(sub.run_id)
            except DataNotAvailable:
                docs[sub.run_id] = {}
        starts = {r: _time_value(d.get("start")) for r, d in docs.items()}
        ends = {r: _time_value(d.get("end")) for r, d in docs.items()}
        subruns = list(spec.subruns)
        if all(v is not None for v in starts.values()):
            subruns.sort(key=lambda s: starts[s.run_id] or 0.0)
        doc: dict[str, Any] = {SPEC_FIELD: SuperrunSpec(spec.run_id, tuple(subruns)).to_spec()}
        if all(v is not None for v in (*starts.values(), *ends.values())):
            first = min(docs, key=lambda r: starts[r] or 0.0)
            last = max(docs, key=lambda r: ends[r] or 0.0)
            doc["start"], doc["end"] = docs[first]["start"], docs[last]["end"]
            doc["livetime"] = sum((ends[r] or 0.0) - (starts[r] or 0.0) for r in docs)
        for field in ("mode", "source"):
            values = sorted({v for d in docs.values() for v in _names(d.get(field))})
            if values:
                doc[field] = values
        tags = sorted({t for d in docs.values() for t in _tag_names(d.get("tags"))})
        if tags:
            doc["tags"] = [{"name": t} for t in tags]
        if metadata:
            if SPEC_FIELD in metadata:
                raise InvalidRunDefinition(f"metadata= cannot set {SPEC_FIELD!r}: give data=")
            doc.update(normalize(dict(metadata), "metadata"))
        for fe in loading_order(self.storage):
            if not fe.readonly:
                fe.write_run_metadata(spec.run_id, doc)
                logger.info("defined superrun %s (%d subruns) in %r", name, len(subruns), fe)
                return doc
        raise InvalidRequest(
            f"cannot define superrun {name!r}: no writable frontend to store its run document "
            f"in ({', '.join(map(repr, self.storage)) or 'no storage configured'})"
        )

    # -- making -----------------------------------------------------------------------------
    def make(
        self,
        run_id: RunIds,
        targets: Targets,
        save: Targets = (),
        progress: Progress | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        partitions: Any = None,
        time_range: tuple[int, int] | None = None,
    ) -> None:
        """Compute and save ``targets`` (and what they need) for one or several runs.

        Stored data is not computed again. Independent partitions, data types and runs run in
        parallel. ``save`` lists data types to save beyond ``save_when=TARGET`` targets
        (needed for ``SaveWhen.EXPLICIT``; naming a ``SaveWhen.NEVER`` type raises
        ``InvalidRequest``, a ``ValueError``). ``progress(done, total)`` is called as
        partition computations and commits finish. ``config`` overrides option values for
        this call only.

        Per-partition work (strax's ``chunk_number``): ``partitions=`` (indices into the
        run's source partition list, or ``(start, end)`` intervals covering whole
        partitions; sorted, none repeated) or ``time_range=(t0, t1)`` (the partitions that
        can hold records with ``t0 <= time < t1``) makes only those partitions. What they
        need is taken from the full key or from stored pieces where stored; each computed
        type that is saved is saved as a *piece*: its own key (its lineage lists the spans of
        the partitions it holds), committed on its own. Partitions already held by stored
        pieces are not made again. :meth:`merge_partitions` later writes the full key from
        the pieces; :meth:`stored_pieces` and :meth:`partition_coverage` show what is stored.
        """
        ts = self._check_targets(targets, merge=False)
        save_ts = self._check_save(save)
        runs = _run_ids(run_id)
        if partitions is not None or time_range is not None:
            self._make_partitions(runs, ts, save_ts, progress, config, partitions, time_range)
            return

        def build_and_run() -> None:
            outputs: list[Any] = []
            save_tasks: list[SaveTask] = []
            units: list[Any] = []
            for run in runs:
                b = self._builder(run, ts, save_ts, config=config)
                for t in ts:
                    s = b.stream(t)
                    if not _kept(s, {task.saver.key for task in b.save_tasks}):
                        outputs.extend(b.row_counts(t))  # compute it anyway, return little
                save_tasks.extend(b.save_tasks)
                units.extend(b.units)
            run_graph(outputs, save_tasks, units, client=self.client, progress=progress)

        build_and_run()

    # -- per-partition work -----------------------------------------------------------------
    def _partition_builder(
        self,
        run: str,
        ts: Sequence[str],
        save_ts: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        allow_save: bool = True,
        check_forbidden: bool = True,
    ) -> GraphBuilder:
        if is_superrun(run):
            raise InvalidRequest(
                f"run {run!r} is a superrun: per-partition work (partitions=, time_range= on "
                "make, merge_partitions) is for runs; make the partitions of its subruns"
            )
        return self._builder(
            run,
            ts,
            save_ts,
            allow_save=allow_save,
            config=config,
            check_forbidden=check_forbidden,
            partition_mode=True,
        )

    @staticmethod
    def _selected(b: GraphBuilder, target: str, partitions: Any, time_range: Any) -> list[int]:
        """The partitions of ``target`` (a stream of ``b``) that ``partitions=`` or
        ``time_range=`` select.
        """
        what = f"run {b.run_id!r}, {target!r}"
        if partitions is not None and time_range is not None:
            raise InvalidRequest(f"{what}: give partitions= or time_range=, not both")
        intervals = b.stream(target).intervals
        if time_range is not None:
            return partitions_overlapping(_time_range(time_range), intervals, what)
        reference = source_partitions(b.plugins, target)
        return partitions_in(selection_windows(partitions, reference, what), intervals, what)

    def _make_partitions(
        self,
        runs: Sequence[str],
        ts: Sequence[str],
        save_ts: Sequence[str],
        progress: Progress | None,
        config: Mapping[str, Any] | None,
        partitions: Any,
        time_range: Any,
    ) -> None:
        outputs: list[Any] = []
        save_tasks: list[SaveTask] = []
        units: list[Any] = []
        for run in runs:
            b = self._partition_builder(run, ts, save_ts, config)
            wanted = {t: self._selected(b, t, partitions, time_range) for t in ts}
            for t, indices in wanted.items():
                b.need(t, indices)
            for t in ts:
                s = b.streams[t]
                todo = b.computed_needed(t)
                if todo and s.save_plugin is None:
                    outputs.extend(b.row_counts(t, todo))  # not saved: compute it anyway
                elif not todo:
                    logger.info("run %s: the partitions of %s asked for are stored", run, t)
            b.finish_pieces()
            save_tasks.extend(b.save_tasks)
            units.extend(b.units)
        run_graph(outputs, save_tasks, units, client=self.client, progress=progress)

    def _pieces_of(
        self, run_id: RunId, target: str, config: Mapping[str, Any] | None
    ) -> tuple[GraphBuilder, list[tuple[int, int]], list[StoredPiece], Found | None]:
        """A partition-mode builder, the full partition list of ``target``, its stored pieces
        and where its full key is stored (exactly), if it is.
        """
        self._check_targets(target)
        b = self._partition_builder(
            _run_id(run_id), (target,), config=config, allow_save=False, check_forbidden=False
        )
        full = b.plugins.key(target)
        found = None
        for fe in b.load_order:
            if fe.takes(target):
                try:
                    loc = fe.find(full)
                except DataNotAvailable:
                    continue
                found = Found(fe, full, loc)
                break
        intervals = b.stream(target).intervals
        return b, intervals, b.stored_pieces(target, intervals), found

    def stored_pieces(
        self, run_id: RunId, target: str, config: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """The stored pieces of ``target`` of ``run_id`` (see :meth:`make`'s ``partitions=``),
        nearest frontend first, and its full key if stored.

        Columns: ``key``, ``frontend``, ``full`` (the full key, not a piece), ``partitions``
        (indices into the full partition list), ``spans`` (``[start, end)`` of each run of
        consecutive partitions, as its lineage says), ``rows``.
        """
        import pandas as pd

        _, intervals, pieces, found = self._pieces_of(run_id, target, config)
        rows = []
        if found is not None:
            m = found.frontend.manifest_at(found.location)
            everything = list(range(len(intervals)))
            rows.append(
                {
                    "key": str(found.key),
                    "frontend": repr(found.frontend),
                    "full": True,
                    "partitions": everything,
                    "spans": [list(sp) for sp in spans_of(intervals, everything)],
                    "rows": m.rows,
                }
            )
        for p in pieces:
            rows.append(
                {
                    "key": str(p.key),
                    "frontend": repr(p.frontend),
                    "full": False,
                    "partitions": list(p.indices),
                    "spans": [list(sp) for sp in p.spans],
                    "rows": p.rows,
                }
            )
        columns = ["key", "frontend", "full", "partitions", "spans", "rows"]
        return pd.DataFrame(rows, columns=columns)

    def partition_coverage(
        self, run_id: RunId, target: str, config: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """One row per partition of ``target`` of ``run_id``: ``partition``, ``start``,
        ``end``, ``stored`` (in the full key or a piece) and ``pieces`` (the keys of the pieces
        holding it): the coverage and gaps of per-partition work.
        """
        import pandas as pd

        _, intervals, pieces, found = self._pieces_of(run_id, target, config)
        holders: dict[int, list[str]] = {i: [] for i in range(len(intervals))}
        for p in pieces:
            for i in p.indices:
                if str(p.key) not in holders[i]:
                    holders[i].append(str(p.key))
        rows = [
            {
                "partition": i,
                "start": s,
                "end": e,
                "stored": found is not None or bool(holders[i]),
                "pieces": holders[i],
            }
            for i, (s, e) in enumerate(intervals)
        ]
        return pd.DataFrame(rows, columns=["partition", "start", "end", "stored", "pieces"])

    def merge_partitions(
        self,
        run_id: RunId,
        target: str,
        pieces: Iterable[DataKey | str] | None = None,
        progress: Progress | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Write the full key of ``target`` of ``run_id`` from its stored pieces, computing
        nothing (strax's ``merge_per_chunk_storage``); returns its manifest.

        The pieces (all stored ones, or the keys in ``pieces``) must tile the full partition
        list exactly: ``InvalidRequest`` names the missing partitions (make them with
        ``make(..., partitions=...)``) or those held by two pieces (choose with ``pieces=``).
        They are read (verified like every read) and saved through the normal saver to every
        writable frontend that takes the type; the manifest's metadata lists them under
        ``merged_from``. The pieces are kept. ``InvalidRequest`` if the full key is stored
        already.
        """
        b, intervals, stored, found = self._pieces_of(run_id, target, config)
        full = b.plugins.key(target)
        if found is not None:
            raise InvalidRequest(
                f"{full} is already stored in {found.frontend!r}: there is nothing to merge"
            )
        chosen: list[StoredPiece] = []
        seen: set[str] = set()
        if pieces is None:
            for p in stored:
                if str(p.key) not in seen:  # the nearest copy of each piece
                    seen.add(str(p.key))
                    chosen.append(p)
        else:
            try:
                given = [pieces] if isinstance(pieces, (str, DataKey)) else list(pieces)
            except TypeError:
                raise InvalidRequest(
                    f"pieces= takes keys (or their names) of stored pieces, got {pieces!r}"
                ) from None
            names = [str(k) for k in given]
            by_name: dict[str, StoredPiece] = {}
            for p in stored:
                by_name.setdefault(str(p.key), p)
            for name in dict.fromkeys(names):
                if name not in by_name:
                    raise InvalidRequest(
                        f"{name!r} is not a stored piece of {full}; stored pieces: "
                        f"{sorted(by_name) or 'none'}"
                    )
                chosen.append(by_name[name])
        owner: dict[int, StoredPiece] = {}
        overlaps: list[str] = []
        for p in chosen:
            for i in p.indices:
                if i in owner:
                    s, e = intervals[i]
                    overlaps.append(f"partition {i} [{s}, {e}) in {owner[i].key} and {p.key}")
                else:
                    owner[i] = p
        if overlaps:
            raise InvalidRequest(
                f"cannot merge {full}: pieces overlap: {'; '.join(overlaps[:6])}"
                f"{' ...' if len(overlaps) > 6 else ''}; choose pieces that tile the run with "
                "pieces=[keys] (see stored_pieces)"
            )
        missing = [i for i in range(len(intervals)) if i not in owner]
        if missing:
            gaps = ", ".join(f"[{s}, {e})" for s, e in spans_of(intervals, missing))
            raise InvalidRequest(
                f"cannot merge {full}: no stored piece holds partition(s) {missing} ({gaps}) "
                f"of {len(intervals)}; make them first with make({b.run_id!r}, {target!r}, "
                f"partitions={missing})"
            )
        plugin = b.plugins.plugin(target)
        dtype = plugin.dtype_of(target)
        parts: dict[int, Any] = {}
        for p in chosen:
            parts.update(b.piece_parts(p, dtype))
        metadata = saver_metadata(plugin, target)
        metadata["merged_from"] = [
            {"key": str(p.key), "partitions": [list(sp) for sp in p.spans]}
            for p in sorted(chosen, key=lambda p: p.indices[0])
        ]
        order = range(len(intervals))
        added = b.add_sinks(full, dtype, metadata, [parts[i] for i in order], intervals)
        if not added:
            raise InvalidRequest(
                f"cannot merge {full}: no writable frontend takes {target!r} "
                f"({', '.join(map(repr, self.storage)) or 'no storage configured'})"
            )
        run_graph([], b.save_tasks, b.units, client=self.client, progress=progress)
        logger.info("merged %d pieces into %s", len(chosen), full)
        first = b.save_tasks[0].frontend
        return first.get_metadata(full)

    # -- reading ----------------------------------------------------------------------------
    def _stored_lazy(
        self,
        builder: GraphBuilder,
        targets: Sequence[str],
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
    ) -> da.Array | None:
        """A lazy array read straight from storage if every target is stored (for a superrun:
        under the superrun, or in every subrun of a concatenated type), else ``None``.
        """
        found: list[Found] = []
        for t in targets:
            f = builder.find(t)
            if f is None:
                break
            found.append(f)
        if len(found) == len(targets):
            return self._lazy_from(found, targets, fields, time_range)
        if builder.plugins.superrun is not None and all(
            builder.plugins.concatenates(t) for t in targets
        ):
            return self._superrun_lazy(builder, targets, fields, time_range)
        return None

    def _superrun_pieces(
        self,
        builder: GraphBuilder,
        targets: Sequence[str],
        time_range: tuple[int, int] | None,
        read: Callable[[GraphBuilder, tuple[int, int] | None], Any],
    ) -> list[Any] | None:
        """``read(subrun builder, time range)`` of every stored piece of a superrun's
        concatenated ``targets`` (a subrun, or one of its time ranges, within ``time_range``),
        in time order; ``None`` if a subrun does not store them or ``read`` returns ``None``.
        """
        spec = builder.plugins.superrun
        assert spec is not None
        pieces: dict[str, list[Any]] = {}
        spans: list[tuple[Subrun, Interval | None]] = []
        for sub in spec.subruns:
            child = builder.child(sub.run_id)
            f = child.find(targets[0])
            if f is None:
                return None
            partitions = f.frontend.manifest_at(f.location).partitions
            bounds = [
                iv
                for _, iv, _ in restrict_intervals(
                    [(p.start, p.end) for p in partitions], sub.ranges
                )
            ]
            spans.append((sub, (bounds[0][0], bounds[-1][1]) if bounds else None))
            pieces[sub.run_id] = []
            for window in sub.ranges or [None]:
                overlaps, selected = _intersect(window, time_range)
                if not overlaps:
                    continue
                piece = read(child, selected)
                if piece is None:
                    return None
                pieces[sub.run_id].append(piece)
        order = builder.order_subruns(targets[0], spans)
        out = [p for sub in order for p in pieces[sub.run_id]]
        dtypes = {str(p.dtype) for p in out}
        if len(dtypes) > 1:
            raise IncompatibleTargets(
                f"superrun {builder.run_id!r}: the subruns' {' + '.join(targets)} have different "
                f"dtypes {sorted(dtypes)}; they cannot be concatenated"
            )
        return out

    def _superrun_lazy(
        self,
        builder: GraphBuilder,
        targets: Sequence[str],
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
    ) -> da.Array | None:
        """The stored data of the subruns, concatenated in time order (lazily), or ``None`` if
        a subrun does not store it.
        """
        import dask.array as da

        def read(child: GraphBuilder, window: tuple[int, int] | None) -> da.Array | None:
            return self._stored_lazy(child, targets, fields, window)

        arrays = self._superrun_pieces(builder, targets, time_range, read)
        if arrays is None:
            return None
        if not arrays:  # nothing in time_range: an empty array of the right dtype
            spec = builder.plugins.superrun
            assert spec is not None
            whole = read(builder.child(spec.subruns[0].run_id), None)
            return None if whole is None else whole[:0]
        return da.concatenate(arrays) if len(arrays) > 1 else arrays[0]

    def _superrun_direct(
        self,
        builder: GraphBuilder,
        target: str,
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
    ) -> list[LazyData] | None:
        """The stored pieces of a superrun's concatenated ``target`` as storage readers (read
        straight into numpy, as one stored key is), or ``None``.
        """
        if builder.plugins.superrun is None or not builder.plugins.concatenates(target):
            return None
        sel = [fields] if isinstance(fields, str) else fields

        def read(child: GraphBuilder, window: tuple[int, int] | None) -> LazyData | None:
            found = child.find(target)
            return None if found is None else found.loader(fields=sel, time_range=window)

        pieces = self._superrun_pieces(builder, [target], time_range, read)
        return pieces or None

    def _lazy_from(
        self,
        found: Sequence[Found],
        targets: Sequence[str],
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
    ) -> da.Array:
        """A lazy array of stored ``targets`` (merged side by side) where ``found`` says."""
        import dask.array as da

        if len(found) == 1:
            if fields is not None:
                fields = [fields] if isinstance(fields, str) else list(fields)
            return found[0].loader(fields=fields, time_range=time_range).array
        manifests = [f.frontend.manifest_at(f.location) for f in found]
        what = " + ".join(targets)
        dtype = select_dtype(merged_dtype([m.np_dtype for m in manifests]), fields, what)
        owner: dict[str, int] = {}
        for j, m in enumerate(manifests):
            for name in m.np_dtype.names or ():
                owner.setdefault(name, j)
        arrays, names = [], []
        for j, f in enumerate(found):
            mine = [n for n in dtype.names or () if owner[n] == j]
            if not mine:
                continue
            arrays.append(f.loader(fields=mine, time_range=time_range).array)
            names.append(targets[j])
        lengths = {n: a.shape[0] for n, a in zip(names, arrays, strict=True)}
        if len(set(lengths.values())) > 1:
            raise IncompatibleTargets(
                f"cannot merge {what}: different numbers of rows {lengths} "
                "(data of one kind must have one row per same thing)"
            )
        if len(arrays) == 1:
            return _select_lazy(arrays[0], dtype)
        arrays = [arrays[0], *[a.rechunk(arrays[0].chunks) for a in arrays[1:]]]
        return da.map_blocks(
            _merge_blocks,
            *arrays,
            names=names,
            out_dtype=dtype,
            dtype=dtype,
            meta=np.empty(0, dtype=dtype),
        )

    def _compute_arrays(
        self,
        run_ids: list[str],
        targets: Targets,
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
        save: Targets,
        progress: Progress | None,
        config: Mapping[str, Any] | None = None,
        partitions: Any = None,
    ) -> list[np.ndarray]:
        """One numpy array per run, computed (and saved, where allowed) in one Dask call."""
        import dask

        ts = self._check_targets(targets)
        save_ts = self._check_save(save)
        if partitions is not None:
            return self._partition_arrays(
                run_ids, ts, fields, time_range, save_ts, progress, config, partitions
            )

        def build_and_run() -> list[np.ndarray]:
            outputs: list[Any] = []
            save_tasks: list[SaveTask] = []
            units: list[Any] = []
            direct: dict[int, list[LazyData]] = {}
            for i, run in enumerate(run_ids):
                b = self._builder(run, ts, save_ts, allow_save=time_range is None, config=config)
                found = b.find(ts[0]) if len(ts) == 1 and self.client is None else None
                if found is not None:
                    # stored: the storage reader decodes straight into one array (no Dask
                    # blocks to concatenate: half the memory, about 2.5x the speed)
                    sel = [fields] if isinstance(fields, str) else fields
                    direct[i] = [found.loader(fields=sel, time_range=time_range)]
                    continue
                if len(ts) == 1 and self.client is None:
                    pieces = self._superrun_direct(b, ts[0], fields, time_range)
                    if pieces is not None:
                        direct[i] = pieces
                        continue
                lazy = self._stored_lazy(b, ts, fields, time_range)
                if lazy is not None:
                    outputs.append(lazy)
                    continue
                parts, dtype = b.output(ts, fields, time_range)
                outputs.append(dask.delayed(_concat)(parts, dtype))
                save_tasks.extend(b.save_tasks)
                units.extend(b.units)
            computed = iter(
                run_graph(outputs, save_tasks, units, client=self.client, progress=progress)
                if outputs or save_tasks
                else []
            )
            return [
                _read_direct(direct[i]) if i in direct else next(computed)
                for i in range(len(run_ids))
            ]

        return build_and_run()

    def _partition_parts(
        self,
        b: GraphBuilder,
        ts: Sequence[str],
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
        partitions: Any,
    ) -> tuple[list[Any], np.dtype[Any]]:
        """``b.output`` of partitions ``partitions`` of ``ts`` (whose partition lists must be
        the same), records with ``t0 <= time < t1`` only if ``time_range`` is given.
        """
        if time_range is not None:
            time_range = _time_range(time_range)
        chosen = [self._selected(b, t, partitions, None) for t in ts]
        lists = {t: b.streams[t].intervals for t in ts}
        if len({canonical_json(v) for v in lists.values()}) > 1:
            raise IncompatibleTargets(
                f"run {b.run_id!r}: {list(ts)} are partitioned differently, so partitions= "
                "cannot select the same partitions of each; load them one at a time"
            )
        for t, indices in zip(ts, chosen, strict=True):
            b.need(t, indices)
        b.finish_pieces()
        return b.output(ts, fields, time_range, indices=chosen[0])

    def _partition_arrays(
        self,
        run_ids: list[str],
        ts: Sequence[str],
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
        save_ts: Sequence[str],
        progress: Progress | None,
        config: Mapping[str, Any] | None,
        partitions: Any,
    ) -> list[np.ndarray]:
        """As :meth:`_compute_arrays`, of partitions ``partitions`` only: read from the full
        key or stored pieces, the rest computed and saved as pieces (unless ``time_range``).
        """
        import dask

        outputs: list[Any] = []
        save_tasks: list[SaveTask] = []
        units: list[Any] = []
        for run in run_ids:
            b = self._partition_builder(run, ts, save_ts, config, allow_save=time_range is None)
            parts, dtype = self._partition_parts(b, ts, fields, time_range, partitions)
            outputs.append(dask.delayed(_concat)(parts, dtype))
            save_tasks.extend(b.save_tasks)
            units.extend(b.units)
        return run_graph(outputs, save_tasks, units, client=self.client, progress=progress)

    def _arrays(
        self,
        runs: list[str],
        targets: Targets,
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
        save: Targets,
        progress: Progress | None,
        config: Mapping[str, Any] | None,
        ignore_errors: bool,
        partitions: Any = None,
    ) -> tuple[list[str], list[np.ndarray]]:
        """The runs that loaded and their arrays; with ``ignore_errors``, runs that fail are
        skipped, logged and listed in :attr:`failed_runs`.
        """
        self.failed_runs = {}
        if not ignore_errors:
            return runs, self._compute_arrays(
                runs, targets, fields, time_range, save, progress, config, partitions
            )
        self._check_targets(targets)
        self._check_save(save)
        self._call_config(config)
        ok: list[str] = []
        arrays: list[np.ndarray] = []
        # one run at a time, so that one run's failure is its own (in one Dask call, the first
        # failing task would end the computation of every run)
        for run in runs:
            try:
                (arr,) = self._compute_arrays(
                    [run], targets, fields, time_range, save, progress, config, partitions
                )
            except Exception as e:
                logger.warning("run %s failed and is skipped (ignore_errors): %s", run, e)
                self.failed_runs[run] = e
                continue
            ok.append(run)
            arrays.append(arr)
        if self.failed_runs:
            logger.warning(
                "%d of %d runs failed and were skipped: %s",
                len(self.failed_runs),
                len(runs),
                ", ".join(self.failed_runs),
            )
        if not ok:
            raise next(iter(self.failed_runs.values()))
        return ok, arrays

    def get_array(
        self,
        run_id: RunIds,
        targets: Targets,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
        save: Targets = (),
        progress: Progress | None = None,
        config: Mapping[str, Any] | None = None,
        ignore_errors: bool = False,
        add_run_id_field: bool | None = None,
        partitions: Any = None,
    ) -> np.ndarray:
        """A numpy record array of ``targets`` of ``run_id`` (several runs: concatenated, in
        the order given).

        Several targets of one data kind are merged side by side. ``fields`` selects fields;
        ``time_range=(t0, t1)`` selects records with ``t0 <= time < t1`` (and never saves).
        What is not stored is computed and saved as in :meth:`make`. ``config`` overrides
        option values for this call only (the context is not changed).

        With several runs, a first field ``run_id`` (a fixed-width string, as in strax) says
        which run each record is from (``add_run_id_field=False``: no such field; ``True``:
        one run gets it too). ``ignore_errors=True`` skips runs that fail, logs a warning and
        lists them in :attr:`failed_runs` (``{run_id: exception}``); if every run fails, the
        first run's error is raised.

        ``partitions=`` (as in :meth:`make`) reads only those partitions: from the full key
        if stored, else from stored pieces, computing (and saving as a piece, as
        :meth:`make` does) what neither holds.
        """
        runs = _run_ids(run_id)
        ok, arrays = self._arrays(
            runs, targets, fields, time_range, save, progress, config, ignore_errors, partitions
        )
        add = len(runs) > 1 if add_run_id_field is None else bool(add_run_id_field)
        if add:
            return _with_run_ids(arrays, ok, max(len(r) for r in runs))
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def get_df(
        self,
        run_id: RunIds,
        targets: Targets,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
        save: Targets = (),
        progress: Progress | None = None,
        config: Mapping[str, Any] | None = None,
        ignore_errors: bool = False,
        partitions: Any = None,
    ) -> pd.DataFrame:
        """As :meth:`get_array`, as a pandas DataFrame of the scalar fields.

        Multi-dimensional fields (waveforms) are left out. With several runs, a first column
        ``run_id`` says which run each row is from.
        """
        import pandas as pd

        runs = _run_ids(run_id)
        ok, arrays = self._arrays(
            runs, targets, fields, time_range, save, progress, config, ignore_errors, partitions
        )
        frames = []
        for run, arr in zip(ok, arrays, strict=True):
            names = arr.dtype.names or ()
            scalar = [n for n in names if not arr.dtype[n].shape]
            dropped = sorted(set(names) - set(scalar))
            if dropped:
                logger.info("get_df leaves out multi-dimensional fields %s", dropped)
            df = pd.DataFrame({n: arr[n] for n in scalar})
            if len(runs) > 1:
                df.insert(0, "run_id", run)
            frames.append(df)
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def get_dask(
        self,
        run_id: RunIds,
        targets: Targets,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
        config: Mapping[str, Any] | None = None,
        partitions: Any = None,
    ) -> da.Array:
        """A lazy one-dimensional structured Dask array of ``targets`` of ``run_id``.

        Stored data is read lazily (one task per stored chunk, only the selected fields and
        the partitions overlapping ``time_range``); a superrun's concatenated types read their
        subruns' stored chunks. Data that is not stored is computed when the array is, one
        chunk per partition (of unknown length until computed), and is not saved: call
        :meth:`make` first to store it. Several runs are concatenated in the order given, with
        a first field ``run_id`` as in :meth:`get_array`. ``partitions=`` (as in :meth:`make`)
        takes only those partitions, from the full key or stored pieces where stored (what
        is computed is not saved).
        """
        import dask.array as da

        ts = self._check_targets(targets)
        runs = _run_ids(run_id)
        arrays = [self._dask_of(run, ts, fields, time_range, config, partitions) for run in runs]
        if len(runs) == 1:
            return arrays[0]
        width = max(len(r) for r in runs)
        base = arrays[0].dtype
        dtype = np.dtype(
            [
                ("run_id", f"<U{width}"),
                *[(n, base[n].base, base[n].shape) for n in base.names or ()],
            ]
        )
        labelled = [
            da.map_blocks(
                _add_run_id_block,
                a,
                run=run,
                out_dtype=dtype,
                dtype=dtype,
                meta=np.empty(0, dtype=dtype),
            )
            for run, a in zip(runs, arrays, strict=True)
        ]
        return da.concatenate(labelled)

    def _dask_of(
        self,
        run_id: str,
        ts: tuple[str, ...],
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
        config: Mapping[str, Any] | None,
        partitions: Any = None,
    ) -> da.Array:
        import dask.array as da

        if partitions is not None:
            b = self._partition_builder(run_id, ts, config=config, allow_save=False)
            parts, dtype = self._partition_parts(b, ts, fields, time_range, partitions)
        else:
            b = self._builder(run_id, ts, allow_save=False, config=config)
            lazy = self._stored_lazy(b, ts, fields, time_range)
            if lazy is not None:
                return lazy
            parts, dtype = b.output(ts, fields, time_range)
        if not parts:
            return da.from_array(np.zeros(0, dtype=dtype), chunks=-1)
        chunks = [da.from_delayed(p, shape=(np.nan,), dtype=dtype) for p in parts]
        return da.concatenate(chunks) if len(chunks) > 1 else chunks[0]

    def get_xarray(
        self,
        run_id: RunId,
        targets: Targets,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> xr.Dataset:
        """An xarray Dataset of ``targets`` of ``run_id``: one Dask-backed variable per field,
        along dimension ``row`` (plus ``<field>_dim_<i>`` for multi-dimensional fields).

        Stored data is read lazily. xarray needs the number of rows, so data that is not
        stored is computed first (kept in memory, or on the cluster, and not saved): call
        :meth:`make` first to store it and keep this lazy.
        """
        import xarray as xr

        run_id = _run_id(run_id)
        ts = self._check_targets(targets)
        arr = self.get_dask(run_id, ts, fields, time_range, config=config)
        if any(np.isnan(c) for c in arr.chunks[0]):
            logger.info("computing %s of %s to learn its length (not stored)", ts, run_id)
            arr = self.client.persist(arr) if self.client is not None else arr.persist()
            arr.compute_chunk_sizes()
        data_vars = {}
        for name in arr.dtype.names or ():
            field = arr[name]
            dims = ("row", *[f"{name}_dim_{i}" for i in range(1, field.ndim)])
            data_vars[name] = (dims, field)
        plugins = self._plugins_for(run_id, config)
        attrs = {
            "run_id": run_id,
            "targets": list(ts),
            "lineage_hashes": [plugins.key(t).lineage_hash for t in ts],
        }
        return xr.Dataset(data_vars, attrs=attrs)

    # -- inspection -------------------------------------------------------------------------
    def available_for_run(
        self,
        run_id: RunId,
        include_targets: str | Iterable[str] | None = None,
        exclude_targets: str | Iterable[str] | None = None,
        pattern_type: str = "fnmatch",
        config: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Every registered data type: whether it is stored for ``run_id``, and where.

        Columns: ``data_type``, ``data_kind``, ``plugin``, ``is_stored``, ``lineage_hash``,
        ``frontend`` and ``note`` (why a key could not be built, e.g. missing run metadata; a
        fuzzy match; for a superrun, that a type is stored in every subrun and loads as their
        concatenation).

        ``include_targets`` keeps the data types matching any of its patterns,
        ``exclude_targets`` drops those matching any of its; ``pattern_type`` is ``"fnmatch"``
        (shell wildcards, ``"peak*"``) or ``"re"`` (regular expressions, matched at the start
        of the name), as in strax.
        """
        import pandas as pd

        if pattern_type not in PATTERN_TYPES:
            raise InvalidRequest(
                f"pattern_type must be one of {', '.join(map(repr, PATTERN_TYPES))}, "
                f"got {pattern_type!r}"
            )
        include = _patterns(include_targets, "include_targets")
        exclude = _patterns(exclude_targets, "exclude_targets")
        plugins = self._plugins_for(run_id, config)
        b = self._builder(run_id, plugins=plugins)
        rows = []
        columns = [
            "data_type",
            "data_kind",
            "plugin",
            "is_stored",
            "lineage_hash",
            "frontend",
            "note",
        ]
        for dt in sorted(self._registry):
            if include and not any(_matches(dt, p, pattern_type) for p in include):
                continue
            if any(_matches(dt, p, pattern_type) for p in exclude):
                continue
            cls = self._registry[dt]
            row = {
                "data_type": dt,
                "data_kind": cls.kind_of(dt),
                "plugin": cls.__name__,
                "is_stored": False,
                "lineage_hash": "",
                "frontend": "",
                "note": "",
            }
            try:
                row["lineage_hash"] = plugins.key(dt).lineage_hash
                found = b.find(dt)
                if found is None and plugins.concatenates(dt):
                    sub = plugins.superrun
                    assert sub is not None
                    if all(b.child(s.run_id).find(dt) is not None for s in sub.subruns):
                        row["note"] = "stored in every subrun: loads as their concatenation"
            except PipelineError as e:
                row["note"] = str(e)
                found = None
            if found is not None:
                row["is_stored"] = True
                row["frontend"] = repr(found.frontend)
                if found.key.lineage_hash != row["lineage_hash"]:
                    row["note"] = f"fuzzy match: stored as {found.key}"
            rows.append(row)
        return pd.DataFrame(rows, columns=columns)

    def _found(self, run_id: RunId, target: str, config: Mapping[str, Any] | None = None) -> Found:
        self._check_targets(target)
        b = self._builder(run_id, config=config)
        found = b.find(target)
        if found is None:
            key = b.plugins.key(target)
            where = ", ".join(map(repr, b.load_order)) or "no storage configured"
            extra = (
                " (for this superrun it is the concatenation of its subruns' data, which is "
                "not stored under the superrun: ask each subrun)"
                if b.plugins.concatenates(target)
                else ""
            )
            raise DataNotAvailable(f"{key} is not stored in any frontend ({where}){extra}")
        return found

    def get_metadata(
        self, run_id: RunId, target: str, config: Mapping[str, Any] | None = None
    ) -> Manifest:
        """The manifest of stored ``target`` of ``run_id``, from the nearest frontend that has
        it (the fuzzy context options apply); ``DataNotAvailable`` if it is not stored.

        The manifest holds the key and lineage, dtype, partitions (``start``, ``end``,
        ``rows``, ``nbytes``), codecs and the saving plugin's metadata; ``.to_dict()`` gives
        its JSON form.
        """
        found = self._found(run_id, target, config)
        return found.frontend.manifest_at(found.location)

    def size_mb(
        self,
        run_id: RunId,
        target: str,
        stored: bool = False,
        config: Mapping[str, Any] | None = None,
    ) -> float:
        """Megabytes (10**6 bytes) of stored ``target`` of ``run_id``: in memory once loaded
        (all fields, as strax's ``size_mb``), or with ``stored=True`` on storage
        (compressed; ``nan`` if the backend cannot tell).
        """
        found = self._found(run_id, target, config)
        if stored:
            nbytes = found.frontend.stored_bytes(found.key)
            return float("nan") if nbytes is None else nbytes / 1e6
        return found.frontend.manifest_at(found.location).nbytes / 1e6

    def compare_metadata(self, a: Any, b: Any) -> dict[str, Any]:
        """The lineage difference between two pieces of data.

        ``a`` and ``b`` are each a ``(run_id, target)`` pair (the lineage of what a load
        returns: the stored key's if stored, which differs for a fuzzy match, else the key it
        would be made under), a :class:`~strata.storage.DataKey`, a
        :class:`~strata.storage.Manifest`, a metadata document (a manifest's or strax's JSON
        dict, or the path of its file), or a lineage dict.

        Returns ``{"a": {"key", "lineage"}, "b": {...}, "same": bool, "only_in_a": [...],
        "only_in_b": [...], "changed": {data_type: {"plugin"|"version": {"a", "b"},
        "options": {name: {"a", "b"}}}}}`` (an option missing on one side has no value
        there).
        """
        sides: dict[str, dict[str, Any]] = {}
        for name, thing in (("a", a), ("b", b)):
            key_name: str | None
            if isinstance(thing, (tuple, list)) and len(thing) == 2:
                run, target = thing
                self._check_targets(target)
                builder = self._builder(run)
                found = builder.find(target)
                key = found.key if found is not None else builder.plugins.key(target)
                lineage, key_name = key.lineage, str(key)
            else:
                lineage, key_name = _lineage_of(thing, name)
            sides[name] = {"key": key_name, "lineage": normalize(lineage, f"lineage of {name}")}
        la, lb = sides["a"]["lineage"], sides["b"]["lineage"]
        changed = {}
        for dt in sorted(set(la) & set(lb)):
            diff = _entry_diff(la[dt], lb[dt])
            if diff:
                changed[dt] = diff
        only_a, only_b = sorted(set(la) - set(lb)), sorted(set(lb) - set(la))
        return {
            "a": sides["a"],
            "b": sides["b"],
            "same": not (changed or only_a or only_b),
            "only_in_a": only_a,
            "only_in_b": only_b,
            "changed": changed,
        }

    def stored_dependencies(
        self,
        run_id: RunId,
        targets: Targets,
        check_forbidden: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, bool]:
        """The data types needed to build ``targets`` of ``run_id``, each with whether it is
        loaded from storage (``True``) or computed (``False``), as in strax.

        The walk stops at stored types: what they were made from is not needed. For a
        superrun, a concatenated type counts as stored if every subrun stores it. Raises
        ``CreationForbidden`` (a ``DataNotAvailable``) if a needed type is not stored and the
        context forbids creating it, unless ``check_forbidden=False``.
        """
        ts = self._check_targets(targets, merge=False)
        b = self._builder(run_id, allow_save=False, config=config, check_forbidden=check_forbidden)
        for t in ts:
            b.stream(t)
        return {dt: s.stored for dt, s in b.streams.items()}

    def get_source(
        self,
        run_id: RunId,
        targets: Targets,
        check_forbidden: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> set[str] | None:
        """The stored data types that making ``targets`` of ``run_id`` starts from (an empty
        set: everything is computed from source plugins), or ``None`` if it cannot be made
        because the context forbids creating a type that is not stored.
        """
        try:
            deps = self.stored_dependencies(run_id, targets, check_forbidden, config)
        except DataNotAvailable:
            return None
        return {dt for dt, stored in deps.items() if stored}

    def data_info(self, target: str) -> pd.DataFrame:
        """The fields of ``target``: columns ``Field name``, ``Data type``, ``Comment``."""
        import pandas as pd

        self._check_targets(target)
        cls = self._registry[target]
        config = {k: v for k, v in self._config.items() if k in cls.takes_config}
        plugin = cls(**config)
        dtype = plugin.dtype_of(target)
        helps = plugin.field_help_of(target)
        return pd.DataFrame(
            [(n, _field_type(dtype[n]), helps.get(n, "")) for n in dtype.names or ()],
            columns=["Field name", "Data type", "Comment"],
        )

    def show_config(self, target: str | None = None) -> pd.DataFrame:
        """Options of the plugins ``target`` needs (all plugins if ``None``).

        Columns: ``option``, ``plugin``, ``default``, ``current``, ``track``, ``from_run``,
        ``help``.
        """
        import pandas as pd

        if target is None:
            classes = list(dict.fromkeys(self._registry.values()))
        else:
            self._check_targets(target)
            classes = []
            todo = [target]
            while todo:
                cls = self._registry.get(todo.pop(0))
                if cls is None or cls in classes:
                    continue
                classes.append(cls)
                todo.extend(cls.dependencies())
        rows = []
        for cls in classes:
            for name, opt in cls.takes_config.items():
                default = "<required>" if opt.default is MISSING else opt.default
                current = self._config.get(name, "<default>")
                rows.append(
                    {
                        "option": name,
                        "plugin": cls.__name__,
                        "default": default,
                        "current": current,
                        "track": opt.track,
                        "from_run": opt.from_run or "",
                        "help": opt.help,
                    }
                )
        columns = ["option", "plugin", "default", "current", "track", "from_run", "help"]
        return pd.DataFrame(rows, columns=columns)

    # -- copying ----------------------------------------------------------------------------
    def copy_to_frontend(
        self,
        run_id: str,
        target: str,
        frontend: StorageFrontend | str | int,
        progress: Progress | None = None,
        *,
        compressor: CompressorLike = None,
        rechunk_mb: float | None = None,
        overwrite: bool = False,
    ) -> Manifest:
        """Copy stored ``target`` of ``run_id`` to ``frontend`` (a frontend, URL or index
        into :attr:`storage`), keeping its key, partitions and metadata.

        Loads from the first other frontend that stores it; nothing is computed. The copy is
        made by :func:`strata.storage.copy.copy_data` (on this context's client, if any): optionally
        recompressed (``compressor``, e.g. ``"zstd"``) and rechunked (``rechunk_mb``), committed
        like any save and verified against the source by a sha256 of every partition. Returns
        the manifest at the destination (at once, if it is stored there and ``overwrite`` is
        false). ``progress(done, total)`` counts the copy as one unit.
        """
        self._check_targets(target)
        dest = self.storage[frontend] if isinstance(frontend, int) else open_frontend(frontend)
        plugins = self._plugins_for(run_id)
        key = plugins.key(target)
        if not overwrite and dest.is_stored(key):
            logger.info("%s is already stored in %r", key, dest)
            if progress is not None:
                progress(1, 1)
            return dest.get_metadata(key)
        sources = [fe for fe in self.storage if fe is not dest and fe != dest]
        found = GraphBuilder(plugins, sources).find(target)
        if found is None and overwrite:
            # a rewrite in place (recompress / rechunk, as strax's rechunker(replace=True)):
            # the new attempt is committed and verified before the old one is retired
            found = GraphBuilder(plugins, [dest]).find(target)
        if found is None:
            raise DataNotAvailable(
                f"cannot copy {key}: it is not stored in any other frontend "
                f"({', '.join(map(repr, sources)) or 'none'})"
            )
        source, stored = found.frontend, found.key
        if progress is not None:
            progress(0, 1)
        manifest = copy_data(
            source,
            dest,
            stored,
            compressor=compressor,
            rechunk_mb=rechunk_mb,
            client=active_client(self.client),
            overwrite=overwrite,
        )
        if progress is not None:
            progress(1, 1)
        return manifest


def _read_direct(pieces: list[LazyData]) -> np.ndarray:
    """Stored pieces read into one array (one piece: straight into it)."""
    if len(pieces) == 1:
        return pieces[0].to_numpy()
    out = np.empty(sum(len(p) for p in pieces), dtype=pieces[0].dtype)
    offset = 0
    for p in pieces:
        part = p.to_numpy()
        out[offset : offset + len(part)] = part
        offset += len(part)
    return out


def _kept(stream: Stream, saved: set[DataKey]) -> bool:
    """Whether ``stream`` is stored, or saved by the graph (for a superrun's concatenation:
    every subrun's piece).
    """
    if stream.subruns:
        return all(_kept(s, saved) for s in stream.subruns)
    return stream.stored or stream.key in saved


def _merge_blocks(*blocks: np.ndarray, names: list[str], out_dtype: np.dtype[Any]) -> np.ndarray:
    return _assemble(list(blocks), names, out_dtype, None)


def _select_lazy(arr: da.Array, dtype: np.dtype[Any]) -> da.Array:
    if arr.dtype == dtype:
        return arr
    import dask.array as da

    return da.map_blocks(
        _assemble_one, arr, dtype=dtype, out_dtype=dtype, meta=np.empty(0, dtype=dtype)
    )


def _assemble_one(block: np.ndarray, out_dtype: np.dtype[Any]) -> np.ndarray:
    return _assemble([block], ["data"], out_dtype, None)
