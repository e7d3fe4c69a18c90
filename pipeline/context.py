"""The Context: registered plugins, their configuration and storage, and the ``get_*`` API.

As in strax::

    ctx = Context(storage=["./strata_data"], register=demo.PLUGINS, config={"gap_ns": 300})
    ctx.make("run_001", "peak_basics")                   # computes and saves what is missing
    df = ctx.get_df("run_001", ["peaks", "peak_basics"], fields=["time", "area", "width"])
    ds = ctx.get_xarray("run_001", "peak_basics")        # lazy

Each needed data type is loaded from the first frontend that stores it (exactly, or fuzzily if
``fuzzy_for`` / ``fuzzy_for_options`` allow), else computed from its dependencies partition by
partition; computed types are saved to every writable frontend that takes them, following the
plugin's ``save_when``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from strata.storage import (
    DataKey,
    DataNotAvailable,
    Manifest,
    StorageFrontend,
    open_frontend,
)
from strata.storage.codecs import CompressorLike
from strata.storage.copy import copy_data
from strata.storage.keys import Lineage
from strata.storage.lazy import LazyData

from .build import GraphBuilder, SaveTask, _assemble, _concat, select_dtype
from .dtypes import merged_dtype
from .errors import (
    IncompatibleTargets,
    OptionError,
    PipelineError,
    PluginDefinitionError,
)
from .execute import Progress, active_client, run_graph
from .lineage import RunPlugins, unknown_data_type
from .options import MISSING
from .plugin import Plugin, as_tuple, plugins_in

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
}
"""The context options and what they mean."""

RunIds = str | Sequence[str]
Targets = str | Sequence[str]


def _run_ids(run_id: RunIds) -> list[str]:
    ids = [run_id] if isinstance(run_id, str) else list(run_id)
    if not ids:
        raise ValueError("no run_id given")
    return ids


def _field_type(dtype: np.dtype[Any]) -> str:
    base = dtype.base.name
    return f"{base}[{','.join(map(str, dtype.shape))}]" if dtype.shape else base


class Context:
    """Plugins, configuration and storage: the entry point for making and reading data.

    Parameters
    ----------
    storage
        Frontends, or URLs/paths opened with :func:`strata.storage.open_frontend`, in the order they
        are searched. Data is saved to every writable frontend that takes its data type.
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
    ) -> None:
        if storage is None:
            storage = []
        elif isinstance(storage, (str, StorageFrontend)):
            storage = [storage]
        self.storage: list[StorageFrontend] = [open_frontend(s) for s in storage]
        self.client = client
        self._registry: dict[str, type[Plugin]] = {}
        self._config: dict[str, Any] = {}
        self._context_config: dict[str, tuple[str, ...]] = {k: () for k in CONTEXT_OPTIONS}
        if register is not None:
            self.register(register)
        self.set_context_config(
            {
                "fuzzy_for": fuzzy_for,
                "fuzzy_for_options": fuzzy_for_options,
                "forbid_creation_of": forbid_creation_of,
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
    def context_config(self) -> dict[str, tuple[str, ...]]:
        """The context options (``fuzzy_for``, ``fuzzy_for_options``, ``forbid_creation_of``)."""
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
            raise ValueError(f"mode must be 'update' or 'replace', got {mode!r}")
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict of option values, got {type(config).__name__}")
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
        if mode == "replace":
            self._config = {}
        self._config.update(config)

    def set_context_config(self, options: Mapping[str, Any]) -> None:
        """Change context options: ``fuzzy_for``, ``fuzzy_for_options``, ``forbid_creation_of``."""
        for name, value in options.items():
            if name not in CONTEXT_OPTIONS:
                raise OptionError(
                    f"unknown context option {name!r}; known: {sorted(CONTEXT_OPTIONS)} "
                    "(plugin options go in set_config)"
                )
            values = as_tuple(value)
            if any(not isinstance(v, str) for v in values):
                raise OptionError(f"context option {name!r} takes names, got {value!r}")
            self._context_config[name] = values

    # -- keys -------------------------------------------------------------------------------
    def _plugins_for(self, run_id: str) -> RunPlugins:
        return RunPlugins(run_id, self._registry, self._config, self.run_metadata)

    def _builder(
        self,
        run_id: str,
        targets: Sequence[str] = (),
        save: Sequence[str] = (),
        allow_save: bool = True,
        plugins: RunPlugins | None = None,
    ) -> GraphBuilder:
        cc = self._context_config
        return GraphBuilder(
            plugins if plugins is not None else self._plugins_for(run_id),
            self.storage,
            targets=targets,
            save=save,
            allow_save=allow_save,
            fuzzy_for=cc["fuzzy_for"],
            fuzzy_for_options=cc["fuzzy_for_options"],
            forbid_creation_of=cc["forbid_creation_of"],
        )

    def _check_targets(self, targets: Targets, merge: bool = True) -> tuple[str, ...]:
        ts = as_tuple(targets)
        if not ts:
            raise ValueError("no target data type given")
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

    def lineage(self, run_id: str, target: str) -> Lineage:
        """The lineage of ``target`` for ``run_id``: ``{data_type: [plugin, version, {opts}]}``."""
        self._check_targets(target)
        return self._plugins_for(run_id).lineage(target)

    def key_for(self, run_id: str, target: str) -> DataKey:
        """The :class:`~strata.storage.DataKey` ``target`` of ``run_id`` is stored under."""
        self._check_targets(target)
        return self._plugins_for(run_id).key(target)

    def is_stored(self, run_id: str, target: str) -> bool:
        """Whether ``target`` of ``run_id`` is stored (the fuzzy context options apply)."""
        self._check_targets(target)
        return self._builder(run_id).is_stored(target)

    def run_metadata(self, run_id: str) -> dict[str, Any]:
        """The run metadata document of ``run_id`` from the first frontend that has one."""
        for fe in self.storage:
            try:
                return fe.run_metadata(run_id)
            except DataNotAvailable:
                continue
        raise DataNotAvailable(
            f"no run metadata for run {run_id!r} in any frontend "
            f"({', '.join(map(repr, self.storage)) or 'no storage configured'})"
        )

    # -- making -----------------------------------------------------------------------------
    def make(
        self,
        run_id: RunIds,
        targets: Targets,
        save: Targets = (),
        progress: Progress | None = None,
    ) -> None:
        """Compute and save ``targets`` (and what they need) for one or several runs.

        Stored data is not computed again. Independent partitions, data types and runs run in
        parallel. ``save`` lists data types to save beyond ``save_when=TARGET`` targets
        (needed for ``SaveWhen.EXPLICIT``). ``progress(done, total)`` is called as partition
        computations and commits finish.
        """
        ts = self._check_targets(targets, merge=False)
        save_ts = as_tuple(save)
        runs = _run_ids(run_id)

        def build_and_run() -> None:
            outputs: list[Any] = []
            save_tasks: list[SaveTask] = []
            units: list[Any] = []
            for run in runs:
                b = self._builder(run, ts, save_ts)
                for t in ts:
                    s = b.stream(t)
                    saved = any(task.saver.key == s.key for task in b.save_tasks)
                    if s.loaded_from is None and not saved:
                        outputs.extend(b.row_counts(t))  # compute it anyway, return little
                save_tasks.extend(b.save_tasks)
                units.extend(b.units)
            run_graph(outputs, save_tasks, units, client=self.client, progress=progress)

        build_and_run()

    # -- reading ----------------------------------------------------------------------------
    def _stored_lazy(
        self,
        builder: GraphBuilder,
        targets: Sequence[str],
        fields: Sequence[str] | None,
        time_range: tuple[int, int] | None,
    ) -> da.Array | None:
        """A lazy array read straight from storage if every target is stored, else ``None``."""
        import dask.array as da

        found = []
        for t in targets:
            f = builder.find(t)
            if f is None:
                return None
            found.append(f)
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
    ) -> list[np.ndarray]:
        """One numpy array per run, computed (and saved, where allowed) in one Dask call."""
        import dask

        ts = self._check_targets(targets)
        save_ts = as_tuple(save)

        def build_and_run() -> list[np.ndarray]:
            outputs: list[Any] = []
            save_tasks: list[SaveTask] = []
            units: list[Any] = []
            direct: dict[int, LazyData] = {}
            for i, run in enumerate(run_ids):
                b = self._builder(run, ts, save_ts, allow_save=time_range is None)
                found = b.find(ts[0]) if len(ts) == 1 and self.client is None else None
                if found is not None:
                    # stored: the storage reader decodes straight into one array (no Dask
                    # blocks to concatenate: half the memory, about 2.5x the speed)
                    sel = [fields] if isinstance(fields, str) else fields
                    direct[i] = found.loader(fields=sel, time_range=time_range)
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
                direct[i].to_numpy() if i in direct else next(computed) for i in range(len(run_ids))
            ]

        return build_and_run()

    def get_array(
        self,
        run_id: RunIds,
        targets: Targets,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
        save: Targets = (),
        progress: Progress | None = None,
    ) -> np.ndarray:
        """A numpy record array of ``targets`` of ``run_id`` (several runs: concatenated).

        Several targets of one data kind are merged side by side. ``fields`` selects fields;
        ``time_range=(t0, t1)`` selects records with ``t0 <= time < t1`` (and never saves).
        What is not stored is computed and saved as in :meth:`make`.
        """
        arrays = self._compute_arrays(_run_ids(run_id), targets, fields, time_range, save, progress)
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def get_df(
        self,
        run_id: RunIds,
        targets: Targets,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
        save: Targets = (),
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        """As :meth:`get_array`, as a pandas DataFrame of the scalar fields.

        Multi-dimensional fields (waveforms) are left out. With several runs, a ``run_id``
        column says which run each row is from.
        """
        import pandas as pd

        runs = _run_ids(run_id)
        arrays = self._compute_arrays(runs, targets, fields, time_range, save, progress)
        frames = []
        for run, arr in zip(runs, arrays, strict=True):
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
        run_id: str,
        targets: Targets,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> da.Array:
        """A lazy one-dimensional structured Dask array of ``targets`` of ``run_id``.

        Stored data is read lazily (one task per stored chunk, only the selected fields and
        the partitions overlapping ``time_range``). Data that is not stored is computed when
        the array is, one chunk per partition (of unknown length until computed), and is not
        saved: call :meth:`make` first to store it.
        """
        import dask.array as da

        ts = self._check_targets(targets)
        b = self._builder(run_id, ts, allow_save=False)
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
        run_id: str,
        targets: Targets,
        fields: Sequence[str] | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> xr.Dataset:
        """An xarray Dataset of ``targets`` of ``run_id``: one Dask-backed variable per field,
        along dimension ``row`` (plus ``<field>_dim_<i>`` for multi-dimensional fields).

        Stored data is read lazily. xarray needs the number of rows, so data that is not
        stored is computed first (kept in memory, or on the cluster, and not saved): call
        :meth:`make` first to store it and keep this lazy.
        """
        import xarray as xr

        ts = self._check_targets(targets)
        arr = self.get_dask(run_id, ts, fields, time_range)
        if any(np.isnan(c) for c in arr.chunks[0]):
            logger.info("computing %s of %s to learn its length (not stored)", ts, run_id)
            arr = self.client.persist(arr) if self.client is not None else arr.persist()
            arr.compute_chunk_sizes()
        data_vars = {}
        for name in arr.dtype.names or ():
            field = arr[name]
            dims = ("row", *[f"{name}_dim_{i}" for i in range(1, field.ndim)])
            data_vars[name] = (dims, field)
        plugins = self._plugins_for(run_id)
        attrs = {
            "run_id": run_id,
            "targets": list(ts),
            "lineage_hashes": [plugins.key(t).lineage_hash for t in ts],
        }
        return xr.Dataset(data_vars, attrs=attrs)

    # -- inspection -------------------------------------------------------------------------
    def available_for_run(self, run_id: str) -> pd.DataFrame:
        """Every registered data type: whether it is stored for ``run_id``, and where.

        Columns: ``data_type``, ``data_kind``, ``plugin``, ``is_stored``, ``lineage_hash``,
        ``frontend`` and ``note`` (why a key could not be built, e.g. missing run metadata).
        """
        import pandas as pd

        plugins = self._plugins_for(run_id)
        b = self._builder(run_id, plugins=plugins)
        rows = []
        for dt in sorted(self._registry):
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
            except PipelineError as e:
                row["note"] = str(e)
                found = None
            if found is not None:
                row["is_stored"] = True
                row["frontend"] = repr(found.frontend)
                if found.key.lineage_hash != row["lineage_hash"]:
                    row["note"] = f"fuzzy match: stored as {found.key}"
            rows.append(row)
        return pd.DataFrame(rows, columns=list(rows[0]) if rows else None)

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
