"""strata's processing layer: plugins, lineage, the Context and the ``strata`` CLI.

>>> import numpy as np
>>> from pipeline import Context, Option, Plugin, time_fields
>>> class Pulses(Plugin):
...     provides = "pulses"
...     dtype = time_fields() + [("area", np.float32)]
...     rate = Option(default=3, type=int)
...     def partitions(self, run_id):
...         return [(0, 100), (100, 200)]
...     def compute(self, start, end):
...         out = np.zeros(self.rate, dtype=self.dtype_of("pulses"))
...         out["time"] = start + np.arange(self.rate)
...         out["endtime"] = out["time"] + 1
...         return out
>>> ctx = Context(register=Pulses)
>>> len(ctx.get_array("run_1", "pulses"))
6
>>> ctx.lineage("run_1", "pulses")
{'pulses': ['Pulses', '0.0.0', {'rate': 3}]}
"""

from __future__ import annotations

from .context import CONTEXT_OPTIONS, Context
from .dtypes import field_help, merge_arrays, strip_titles, time_dt_fields, time_fields
from .errors import (
    ClusterError,
    CreationForbidden,
    IncompatibleTargets,
    InvalidRequest,
    InvalidRunDefinition,
    NoUsableWorkers,
    OptionError,
    OptionTypeError,
    PipelineError,
    PluginDefinitionError,
    PluginOutputError,
    SchedulerUnreachable,
    UnknownDataType,
)
from .lineage import SuperrunSpec, is_superrun
from .options import MISSING, Option
from .plugin import Plugin, SaveWhen, auto_version

__all__ = [
    "CONTEXT_OPTIONS",
    "MISSING",
    "ClusterError",
    "Context",
    "CreationForbidden",
    "IncompatibleTargets",
    "InvalidRequest",
    "InvalidRunDefinition",
    "NoUsableWorkers",
    "Option",
    "OptionError",
    "OptionTypeError",
    "PipelineError",
    "Plugin",
    "PluginDefinitionError",
    "PluginOutputError",
    "SaveWhen",
    "SchedulerUnreachable",
    "SuperrunSpec",
    "UnknownDataType",
    "auto_version",
    "field_help",
    "is_superrun",
    "merge_arrays",
    "strip_titles",
    "time_dt_fields",
    "time_fields",
]
