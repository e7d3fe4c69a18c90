"""The errors of strata's processing layer.

Every error derives from :class:`PipelineError` and from the builtin a caller would naturally
catch: ``KeyError`` for a data type nobody provides, ``ValueError`` for a bad option value, bad
plugin output or a request that cannot be met (``save=`` of a type that is never saved, unknown
fields, a malformed superrun definition), ``TypeError`` for an option of the wrong type or a
malformed plugin class, ``RuntimeError`` for a cluster that cannot run strata's tasks.
Messages name the plugin, run, option or partition involved and say what to do.
"""

from __future__ import annotations

from strata.storage import DataNotAvailable

__all__ = [
    "ClusterError",
    "CreationForbidden",
    "IncompatibleTargets",
    "InvalidRequest",
    "InvalidRunDefinition",
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


class InvalidRequest(PipelineError, ValueError):
    """A call asks for something that cannot be done as asked: no run id, unknown fields,
    ``save=`` naming a data type that is never saved, an unknown storage kind, ...
    """


class InvalidRunDefinition(InvalidRequest):
    """A superrun definition (given to ``Context.define_run`` or read from a run document) is
    malformed: a bad name, subrun or time range, or subruns that overlap in time.
    """


class ClusterError(PipelineError, RuntimeError):
    """A Dask cluster cannot run strata's tasks (its scheduler cannot import strata, ...)."""


class SchedulerUnreachable(ClusterError, ConnectionError):
    """The Dask scheduler did not answer within the timeout."""


class NoUsableWorkers(ClusterError):
    """No worker that can run strata's tasks joined the cluster within the timeout, or all
    workers left while a job waited for them.
    """
