"""Plugin options: declared as class attributes, resolved per run by the Context.

An option is declared on a plugin class::

    class Records(Plugin):
        gains = Option(type=list, from_run="calibration.gains", help="per-channel gains")
        baseline_samples = Option(default=40, type=int, help="samples used for the baseline")

On an instance the attribute is the resolved value (``self.baseline_samples == 40``). A value
comes from, in order: the context's ``config``; for ``from_run`` options, the run's metadata
document at that dotted path; the default. Tracked options (``track=True``, the default) enter
the lineage, so changing them changes the key of the data and of everything downstream.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from .errors import OptionError, OptionTypeError

__all__ = ["MISSING", "Option", "lookup_path"]


class _Missing:
    """Sentinel type of :data:`MISSING`."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""The default of an option that has none: a value must come from config or the run."""

_SEQUENCES = (list, tuple)


class Option:
    """A plugin option, declared as a class attribute.

    Parameters
    ----------
    default
        The value used when neither the config nor the run metadata gives one. Without a
        default, a value must be configured (or found in the run metadata for ``from_run``).
    type
        A type or tuple of types the value must be an instance of (``None``: no check). An
        ``int`` is accepted for ``float``, and lists and tuples are interchangeable (run
        metadata is JSON, which has lists only).
    help
        What the option means; shown by ``Context.show_config`` and ``strata info``.
    track
        Whether the value enters the lineage. Untracked options (number of threads, verbosity)
        do not change the key of the data.
    from_run
        A dotted path into the run metadata document (``"calibration.gains"``) the value is
        read from, per run. The resolved value enters the lineage, so runs with different
        calibrations get different keys. A configured value takes precedence.

    """

    def __init__(
        self,
        default: Any = MISSING,
        type: type | tuple[type, ...] | None = None,
        help: str = "",
        track: bool = True,
        from_run: str | None = None,
    ) -> None:
        if type is not None:
            types = type if isinstance(type, tuple) else (type,)
            if not all(isinstance(t, builtins.type) for t in types):
                raise OptionTypeError(
                    f"Option type= must be a type or tuple of types, got {type!r}"
                )
        if from_run is not None and (
            not isinstance(from_run, str) or not from_run or any(not p for p in from_run.split("."))
        ):
            raise OptionError(
                f"Option from_run= must be a dotted path like 'a.b', got {from_run!r}"
            )
        self.default = default
        self.type = type
        self.help = help
        self.track = bool(track)
        self.from_run = from_run
        self.name = ""
        self.owner_name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        # Defaults are validated by Plugin.__init_subclass__: errors raised here would be
        # wrapped in a RuntimeError by Python 3.11.
        self.name = name
        self.owner_name = owner.__name__

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        config = instance.__dict__.get("config", {})
        if self.name in config:
            return config[self.name]
        if self.from_run is not None:
            raise OptionError(
                f"option {self.name!r} of {self.owner_name} is read from run metadata "
                f"({self.from_run!r}); pass it to the plugin or use a Context, which resolves it"
            )
        raise OptionError(f"option {self.name!r} of {self.owner_name} has no value and no default")

    def __set__(self, instance: Any, value: Any) -> None:
        raise AttributeError(
            f"option {self.name!r} of {self.owner_name} is read-only on a plugin; "
            "set it through Context.set_config"
        )

    def __repr__(self) -> str:
        parts = [f"default={self.default!r}"]
        if self.type is not None:
            parts.append(f"type={_type_name(self.type)}")
        if not self.track:
            parts.append("track=False")
        if self.from_run:
            parts.append(f"from_run={self.from_run!r}")
        return f"Option({', '.join(parts)})"

    @property
    def has_default(self) -> bool:
        """Whether the option has a default value."""
        return self.default is not MISSING

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` if it has an accepted type, else raise ``OptionTypeError``.

        ``where`` names the value in the message (plugin, option, run).
        """
        if self.type is None:
            return value
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            return value
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, _SEQUENCES) and any(t in _SEQUENCES for t in types):
            return value
        raise OptionTypeError(
            f"{where}: expected {_type_name(self.type)}, got {value!r} ({type(value).__name__})"
        )


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


def lookup_path(doc: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``doc``; ``KeyError`` naming the first missing part.

    >>> lookup_path({"calibration": {"gains": [1.0, 2.0]}}, "calibration.gains")
    [1.0, 2.0]
    """
    value: Any = doc
    for i, part in enumerate(path.split(".")):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(".".join(path.split(".")[: i + 1]))
    return value
