"""Plugins configured for one run, and the lineage (hence the key) of every data type.

The lineage of a data type lists, for the type and every type it depends on, recursively, the
plugin class name, its version and its tracked option values::

    {"peaks": ["Peaks", "0.1.0", {"gap_ns": 500}],
     "records": ["Records", "0.1.0", {"gains": [1.0, 0.9]}],
     "raw_records": ["RawRecords", "0.1.0", {"seed": 0}]}

Option values are resolved per run (config, then run metadata for ``from_run`` options, then
defaults), so the lineage of one data type can differ between runs.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from strata.storage import DataKey, DataNotAvailable
from strata.storage.keys import Lineage, validate_run_id

from .errors import OptionError, PluginDefinitionError, UnknownDataType
from .options import lookup_path
from .plugin import Plugin

__all__ = ["RunPlugins", "unknown_data_type"]

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
        none); called at most once, and only if a ``from_run`` option needs it.

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
                self._doc = self._run_metadata(self.run_id)
            except DataNotAvailable as e:
                raise OptionError(
                    f"run {self.run_id!r}: option {name!r} of {cls.__name__} is read from the "
                    f"run metadata at {path!r}, but there is no run metadata ({e}); write it "
                    "with frontend.write_run_metadata or set the option in the config"
                ) from None
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
        plugin = self.plugin(data_type)
        cls = type(plugin)
        out[data_type] = [cls.__name__, str(cls.version), plugin.tracked_config()]
        for dep in cls.dependencies():
            self._visit(dep, (*stack, data_type), out)

    def key(self, data_type: str) -> DataKey:
        """The :class:`~strata.storage.DataKey` of ``data_type`` for this run."""
        return DataKey(self.run_id, data_type, self.lineage(data_type))
