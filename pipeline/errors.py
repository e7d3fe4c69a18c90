"""The errors of strata's processing layer.

Every error derives from :class:`PipelineError` and from the builtin a caller would naturally
catch: ``KeyError`` for a data type nobody provides, ``ValueError`` for a bad option value or
bad plugin output, ``TypeError`` for an option of the wrong type or a malformed plugin class.
Messages name the plugin, run, option or partition involved and say what to do.
"""

from __future__ import annotations

from strata.storage import DataNotAvailable

__all__ = [
    "ClusterError",
    "CreationForbidden",
    "IncompatibleTargets",
    "NoUsableWorkers",
    "OptionError",
    "OptionTypeError",
    "PipelineError",
    "PluginDefinitionError",
    "PluginOutputError",
    "SchedulerUnreachable",
    "UnknownDataType",
]


class PipelineError(Exception):
    """Base class of every error raised by :mod:`pipeline`."""


class UnknownDataType(PipelineError, KeyError):
    """No registered plugin provides the requested data type."""

    def __str__(self) -> str:
        # KeyError quotes its argument; keep the message readable.
        return str(self.args[0]) if self.args else ""


class OptionError(PipelineError, ValueError):
    """An option is unknown, has no value, or cannot be resolved from run metadata."""


class OptionTypeError(OptionError, TypeError):
    """An option value has the wrong type."""


class PluginDefinitionError(PipelineError, TypeError):
    """A plugin class is malformed (bad ``provides``, ``dtype``, ``save_when``, ...)."""


class PluginOutputError(PipelineError, ValueError):
    """A plugin returned bad data (wrong dtype, records outside the partition, unsorted)."""


class CreationForbidden(PipelineError, DataNotAvailable):
    """Data is not stored and the context forbids creating it (``forbid_creation_of``)."""


class IncompatibleTargets(PipelineError, ValueError):
    """Targets requested together cannot be merged (different data kinds or row counts)."""


class ClusterError(PipelineError):
    """A Dask cluster cannot run strata's tasks (its scheduler cannot import strata, ...)."""


class SchedulerUnreachable(ClusterError, ConnectionError):
    """The Dask scheduler did not answer within the timeout."""


class NoUsableWorkers(ClusterError):
    """No worker that can run strata's tasks joined the cluster within the timeout, or all
    workers left while a job waited for them.
    """
