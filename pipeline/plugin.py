"""Plugins: what a data type is, what it depends on, and how one partition of it is computed.

A plugin is a class::

    class PeakBasics(Plugin):
        provides = "peak_basics"
        depends_on = "peaks"
        version = "0.1.0"
        dtype = time_fields() + [(("Peak area [PE]", "area"), np.float32)]
        min_area = Option(default=0.0, type=float, help="drop peaks below this area")

        def compute(self, peaks, start, end):
            ...  # return a structured numpy array of ``dtype``

A *source* plugin has no dependencies and also says how a run is partitioned::

        def partitions(self, run_id):
            return [(0, 10**9), (10**9, 2 * 10**9)]

A plugin providing several data types (``provides = ("a", "b")``) returns a dict keyed by
output name, and may give ``dtype``, ``data_kind`` and ``save_when`` as dicts per output.

The Context instantiates plugins with resolved options (see :mod:`pipeline.options`) and calls
:meth:`Plugin.compute_partition`, which validates what ``compute`` returns.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import math
import textwrap
import types
import weakref
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from strata.storage import InvalidKey
from strata.storage.keys import lineage_hash, normalize, validate_data_type
from strata.storage.records import check_dtype, check_partition

from .dtypes import field_help, strip_titles
from .errors import OptionError, PluginDefinitionError, PluginOutputError
from .options import Option

__all__ = ["AUTO_VERSION_PREFIX", "Plugin", "SaveWhen", "as_tuple", "auto_version", "plugins_in"]


class SaveWhen(enum.IntEnum):
    """When a plugin's output is saved (as in strax)."""

    NEVER = 0
    """Never saved (cheap to recompute, or too large)."""
    EXPLICIT = 1
    """Saved only when listed in ``save=`` of ``make`` / ``get_*``."""
    TARGET = 2
    """Saved when it is a requested target (or listed in ``save=``)."""
    ALWAYS = 3
    """Saved whenever it is computed."""


_RESERVED = frozenset(
    {
        "provides",
        "depends_on",
        "version",
        "dtype",
        "data_kind",
        "save_when",
        "config",
        "run_id",
        "start",
        "end",
        "compute",
        "partitions",
        "setup",
        "infer_dtype",
        "takes_config",
        "allow_superrun",
        "_partitions",  # lineage.PARTITIONS_OPTION: a piece's partitions, in its lineage entry
        "_subruns",  # lineage.SUBRUNS_OPTION: a concatenated superrun type's subruns
    }
)


def as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"a"`` -> ``("a",)``; an iterable of strings -> a tuple; ``None`` -> ``()``."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


class Plugin:
    """Base class of plugins; subclasses declare class attributes and define ``compute``.

    Attributes
    ----------
    provides
        The data type(s) produced: a string, or a tuple of strings for several outputs.
    depends_on
        The data type(s) ``compute`` receives, by name.
    version
        Part of the lineage: bump it when the algorithm changes. ``None`` means a version
        derived from the plugin's code (see :meth:`resolved_version`): ``"auto_<hash>"``.
    dtype
        The record dtype of the output (a numpy dtype or its description; field titles are
        help text), or a dict of them per output. Override :meth:`infer_dtype` for a dtype that
        depends on options.
    data_kind
        Types of one kind have one row per same thing and can be loaded side by side. Defaults
        to the output's own name; a dict per output for several outputs.
    save_when
        A :class:`SaveWhen`, or a dict of them per output. Default ``ALWAYS``.
    allow_superrun
        Whether the plugin computes a superrun from the superrun's (concatenated) inputs, as a
        whole (strax's ``allow_superrun``). If false, the data of a superrun is the time-ordered
        concatenation of its subruns' data. Source plugins cannot allow superruns.
    takes_config
        ``{name: Option}`` of this class (filled in automatically from its :class:`Option`
        attributes, including inherited ones).
    config
        On an instance: the resolved option values.
    run_id
        On an instance made by a Context: the run it computes.

    Parameters
    ----------
    run_id
        The run this instance computes (set by the Context; optional when used directly).
    **config
        Option values; options not given take their defaults.

    """

    provides: ClassVar[str | tuple[str, ...]] = ()
    depends_on: ClassVar[str | tuple[str, ...]] = ()
    version: ClassVar[str | None] = "0.0.0"
    dtype: ClassVar[Any] = None
    data_kind: ClassVar[str | Mapping[str, str] | None] = None
    save_when: ClassVar[SaveWhen | Mapping[str, SaveWhen]] = SaveWhen.ALWAYS
    allow_superrun: ClassVar[bool] = False
    takes_config: ClassVar[dict[str, Option]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        options: dict[str, Option] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Option):
                    options[name] = value
                elif name in options:
                    del options[name]  # a subclass replaced the option by something else
        bad = sorted(set(options) & _RESERVED)
        if bad:
            raise PluginDefinitionError(
                f"{cls.__name__}: option name(s) {bad} are reserved plugin attributes; rename them"
            )
        for name, opt in options.items():
            if opt.has_default and name in vars(cls):
                opt.validate(opt.default, where=f"default of option {name!r} of {cls.__name__}")
        cls.takes_config = options

    def __init__(self, run_id: str | None = None, **config: Any) -> None:
        cls = type(self)
        unknown = sorted(set(config) - set(cls.takes_config))
        if unknown:
            raise OptionError(
                f"{cls.__name__} has no option(s) {unknown}; "
                f"its options are {sorted(cls.takes_config)}"
            )
        resolved = {}
        for name, opt in cls.takes_config.items():
            if name in config:
                where = f"option {name!r} of {cls.__name__}"
                resolved[name] = opt.validate(config[name], where)
            elif opt.has_default:
                resolved[name] = opt.default
        self.config: dict[str, Any] = resolved
        self.run_id = run_id
        self._dtypes: dict[str, np.dtype[Any]] | None = None
        self._declared: dict[str, Any] | None = None
        self.setup()

    def __repr__(self) -> str:
        run = f", run_id={self.run_id!r}" if self.run_id is not None else ""
        return f"{type(self).__name__}(provides={self.outputs()!r}{run})"

    # -- what subclasses define -----------------------------------------------------------
    def setup(self) -> None:
        """Called once options are set; prepare lookup tables and such here."""

    def infer_dtype(self) -> Any:
        """The output dtype (or a dict per output); by default the ``dtype`` attribute."""
        return type(self).dtype

    def partitions(self, run_id: str) -> list[tuple[int, int]]:
        """Source plugins: the ``[(start, end), ...]`` time partitions of ``run_id``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no dependencies, so it must define partitions(run_id)"
        )

    def compute(self, *args: Any, **kwargs: Any) -> Any:
        """Compute one partition: dependencies by name, plus ``start`` and ``end``.

        Return a structured numpy array of the output dtype whose records lie in
        ``[start, end)``, sorted by time; a dict of them for several outputs. Must not keep
        state between calls: partitions are computed in parallel, on threads or processes.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define compute()")

    # -- class-level description ------------------------------------------------------------
    @classmethod
    def outputs(cls) -> tuple[str, ...]:
        """The data types this plugin provides."""
        return as_tuple(cls.provides)

    @classmethod
    def dependencies(cls) -> tuple[str, ...]:
        """The data types this plugin depends on."""
        return as_tuple(cls.depends_on)

    @classmethod
    def is_source(cls) -> bool:
        """Whether the plugin has no dependencies (and so defines ``partitions``)."""
        return not cls.dependencies()

    @classmethod
    def multi_output(cls) -> bool:
        """Whether ``compute`` returns a dict of several outputs."""
        return len(cls.outputs()) > 1

    @classmethod
    def resolved_version(cls) -> str:
        """The version that enters the lineage: :attr:`version` as a string, or for
        ``version = None`` an automatic one, ``"auto_<hash>"`` (see :func:`auto_version`).
        """
        if cls.version is None:
            return auto_version(cls)
        return str(cls.version)

    @classmethod
    def kind_of(cls, output: str) -> str:
        """The data kind of ``output``."""
        kind = cls.data_kind
        if isinstance(kind, Mapping):
            return str(kind.get(output, output))
        return output if kind is None else str(kind)

    @classmethod
    def save_when_of(cls, output: str) -> SaveWhen:
        """The :class:`SaveWhen` of ``output``."""
        sw = cls.save_when
        if isinstance(sw, Mapping):
            return SaveWhen(sw.get(output, SaveWhen.ALWAYS))
        return SaveWhen(sw)

    @classmethod
    def validate_class(cls) -> None:
        """Check the class attributes; raise ``PluginDefinitionError`` naming what is wrong."""
        name = cls.__name__
        outputs = cls.outputs()
        if not outputs:
            raise PluginDefinitionError(f"{name} provides nothing: set provides = 'data_type'")
        for what, values in (("provides", outputs), ("depends_on", cls.dependencies())):
            if any(not isinstance(v, str) for v in values):
                raise PluginDefinitionError(f"{name}.{what} must be strings, got {values!r}")
            try:
                for v in values:
                    validate_data_type(v)
            except InvalidKey as e:
                raise PluginDefinitionError(f"{name}.{what}: {e}") from None
            if len(set(values)) != len(values):
                raise PluginDefinitionError(f"{name}.{what} lists a data type twice: {values}")
        clash = set(outputs) & set(cls.dependencies())
        if clash:
            raise PluginDefinitionError(f"{name} depends on what it provides: {sorted(clash)}")
        if {"start", "end"} & set(cls.dependencies()):
            raise PluginDefinitionError(f"{name}: 'start' and 'end' cannot be data type names")
        if cls.version is not None and (
            not isinstance(cls.version, (str, int)) or isinstance(cls.version, bool)
        ):
            raise PluginDefinitionError(
                f"{name}.version must be a string (or None for an automatic version), "
                f"got {cls.version!r}"
            )
        if not isinstance(cls.allow_superrun, bool):
            raise PluginDefinitionError(
                f"{name}.allow_superrun must be True or False, got {cls.allow_superrun!r}"
            )
        if cls.allow_superrun and cls.is_source():
            raise PluginDefinitionError(
                f"{name} has no dependencies, so it cannot allow superruns: a superrun's "
                "source data is its subruns' data (set allow_superrun = False)"
            )
        for attr in ("dtype", "data_kind", "save_when"):
            value = getattr(cls, attr)
            if isinstance(value, Mapping):
                extra = sorted(set(value) - set(outputs))
                if extra:
                    raise PluginDefinitionError(
                        f"{name}.{attr} names {extra}, which it does not provide ({outputs})"
                    )
        for output in outputs:
            try:
                cls.save_when_of(output)
            except ValueError:
                raise PluginDefinitionError(
                    f"{name}.save_when must be a SaveWhen (or a dict of them), "
                    f"got {cls.save_when!r}"
                ) from None
        if isinstance(cls.dtype, Mapping) or cls.dtype is not None:
            declared = cls._normalize_dtypes(cls.dtype)
            for output, dt in declared.items():
                _check_output_dtype(name, output, dt)
        elif cls.infer_dtype is Plugin.infer_dtype:
            raise PluginDefinitionError(f"{name} declares no dtype: set dtype or infer_dtype()")
        if cls.compute is Plugin.compute:
            raise PluginDefinitionError(f"{name} does not define compute()")
        if cls.version is None:
            auto_version(cls)  # unreadable source or unstable attributes: say so now
        if cls.is_source() and cls.partitions is Plugin.partitions:
            raise PluginDefinitionError(
                f"{name} has no dependencies, so it must define partitions(self, run_id)"
            )
        sig = inspect.signature(cls.compute)
        params = sig.parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            wanted = (*cls.dependencies(), "start", "end")
            missing = [a for a in wanted if a not in params]
            if missing:
                call = ", ".join(f"{a}=..." for a in wanted)
                raise PluginDefinitionError(
                    f"{name}.compute{sig} does not accept {missing}; it is called as "
                    f"compute({call})"
                )

    @classmethod
    def _normalize_dtypes(cls, declared: Any) -> dict[str, Any]:
        outputs = cls.outputs()
        if isinstance(declared, Mapping):
            missing = [o for o in outputs if o not in declared]
            if missing:
                raise PluginDefinitionError(f"{cls.__name__}: no dtype for output(s) {missing}")
            return {o: declared[o] for o in outputs}
        if len(outputs) > 1:
            raise PluginDefinitionError(
                f"{cls.__name__} provides {outputs}: give dtype as a dict per output"
            )
        return {outputs[0]: declared}

    # -- instance-level description ---------------------------------------------------------
    def _resolve_dtypes(self) -> dict[str, np.dtype[Any]]:
        if self._dtypes is None:
            name = type(self).__name__
            declared = type(self)._normalize_dtypes(self.infer_dtype())
            self._declared = declared
            self._dtypes = {o: _check_output_dtype(name, o, dt) for o, dt in declared.items()}
        return self._dtypes

    def dtype_of(self, output: str) -> np.dtype[Any]:
        """The stored record dtype of ``output`` (field titles removed)."""
        return self._resolve_dtypes()[output]

    def field_help_of(self, output: str) -> dict[str, str]:
        """``{field: help}`` of ``output``, from the titles of its declared dtype."""
        self._resolve_dtypes()
        assert self._declared is not None
        return field_help(self._declared[output])

    def tracked_config(self) -> dict[str, Any]:
        """Tracked option values as normalised JSON: this plugin's part of the lineage."""
        out = {}
        for name, opt in type(self).takes_config.items():
            if not opt.track:
                continue
            if name not in self.config:
                raise OptionError(
                    f"option {name!r} of {type(self).__name__} has no value "
                    f"(run {self.run_id!r}); set it in the context config"
                )
            try:
                out[name] = normalize(self.config[name], f"option {name!r}")
            except InvalidKey as e:
                raise OptionError(
                    f"{type(self).__name__}: {e}. Tracked options must be JSON-like values; "
                    "declare the option with track=False if it does not change the data"
                ) from None
        return out

    def checked_partitions(self, run_id: str) -> list[tuple[int, int]]:
        """:meth:`partitions` of a source plugin, validated: int pairs in time order."""
        name = type(self).__name__
        try:
            raw = list(self.partitions(run_id))
            intervals = [(int(s), int(e)) for s, e in raw]
        except (TypeError, ValueError) as e:
            raise PluginOutputError(
                f"{name}.partitions({run_id!r}) must return [(start, end), ...] of integers: {e}"
            ) from e
        prev = None
        for i, (lo, hi) in enumerate(intervals):
            if hi < lo or (prev is not None and lo < prev):
                raise PluginOutputError(
                    f"{name}.partitions({run_id!r}): partition {i} [{lo}, {hi}) is "
                    f"{'reversed' if hi < lo else 'out of time order or overlapping'}; "
                    "partitions must be non-overlapping and in time order"
                )
            prev = hi
        return intervals

    def compute_partition(
        self, index: int, start: int, end: int, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Call :meth:`compute` for one partition and validate the result.

        Returns ``{output: array}``. Raises ``PluginOutputError`` naming the plugin, run and
        partition if an output is missing, is not a numpy array of the declared dtype, has
        records outside ``[start, end)`` or has unsorted times.
        """
        cls = type(self)
        where = f"{cls.__name__} (run {self.run_id!r}, partition {index} [{start}, {end}))"
        result = self.compute(**inputs, start=start, end=end)
        outputs = cls.outputs()
        if isinstance(result, Mapping):
            missing = [o for o in outputs if o not in result]
            if missing:
                raise PluginOutputError(f"{where} returned no data for output(s) {missing}")
        elif len(outputs) > 1:
            raise PluginOutputError(
                f"{where} provides {outputs} and must return a dict keyed by output name, "
                f"got {type(result).__name__}"
            )
        else:
            result = {outputs[0]: result}
        out = {}
        for o in outputs:
            out[o] = self._check_output(o, result[o], start, end, where)
        return out

    def _check_output(self, output: str, data: Any, start: int, end: int, where: str) -> Any:
        expected = self.dtype_of(output)
        what = f"{where} output {output!r}"
        if not isinstance(data, np.ndarray):
            raise PluginOutputError(
                f"{what}: expected a numpy structured array, got {type(data).__name__}"
            )
        if data.dtype != expected:
            if data.dtype.names is not None and strip_titles(data.dtype) == expected:
                data = data.view(expected)
            else:
                raise PluginOutputError(
                    f"{what}: returned dtype {data.dtype} differs from the declared {expected}"
                )
        try:
            return check_partition(data, expected, start, end, what)
        except ValueError as e:
            raise PluginOutputError(str(e)) from None


# -- automatic versions ---------------------------------------------------------------------
AUTO_VERSION_PREFIX = "auto_"
"""Automatic versions are ``"auto_"`` plus a short hash (see :func:`auto_version`)."""

_NOT_FINGERPRINTED = frozenset({"version", "takes_config"})
_AUTO_VERSIONS: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()
"""A cache: the source of a class is read once per process (a file edited after its module
was imported does not change the version of the class already running)."""


def auto_version(cls: type[Plugin]) -> str:
    """The automatic version of a plugin class with ``version = None``: ``"auto_<hash>"``.

    The hash covers every attribute the class has, its own and inherited ones, except
    :class:`Plugin`'s own machinery, dunder attributes, ``version`` and the options (whose
    tracked values enter the lineage anyway): methods by their code, other attributes by value
    (``provides``, ``depends_on``, ``dtype``, ``save_when``, constants, ...).

    What changes it: any change of the code of a method (including its decorators and
    default arguments) or of an attribute value; a method or attribute added or removed.
    What does not: comments, docstrings, blank lines and formatting (code is compared as
    :func:`ast.unparse` renders its syntax tree); the class being redefined or subclassed
    with nothing changed; the file moving. Not covered: code *outside* the class that its
    methods call (helper functions, imported modules) -- bump an explicit version for
    those. The hash is the same in every process and machine for the same source; a
    different Python minor version may, rarely, render the same code differently, so keep
    explicit versions for data meant to last.

    Raises ``PluginDefinitionError`` if the source of a method cannot be read (a class
    typed into an interactive interpreter) or an attribute has no stable representation.
    """
    cached = _AUTO_VERSIONS.get(cls)
    if cached is not None:
        return cached
    parts: dict[str, Any] = {}
    for name in sorted(dir(cls)):
        if name.startswith("__") or name in _NOT_FINGERPRINTED:
            continue
        obj = inspect.getattr_static(cls, name)
        if isinstance(obj, Option) or inspect.getattr_static(Plugin, name, _ABSENT) is obj:
            continue
        parts[name] = _fingerprint(obj, f"{cls.__name__}.{name}")
    version = AUTO_VERSION_PREFIX + lineage_hash({"attributes": parts})
    _AUTO_VERSIONS[cls] = version
    return version


_ABSENT = object()


def _fingerprint(obj: Any, where: str) -> Any:
    """A JSON-able, process-independent description of a class attribute."""
    if isinstance(obj, (staticmethod, classmethod)):
        return {"method": _fingerprint(obj.__func__, where)}
    if isinstance(obj, property):
        return {"property": [_fingerprint(f, where) for f in (obj.fget, obj.fset, obj.fdel)]}
    if isinstance(obj, functools.cached_property):
        return {"cached_property": _fingerprint(obj.func, where)}
    if isinstance(obj, functools.partial):
        return {
            "partial": _fingerprint(obj.func, where),
            "args": _fingerprint(list(obj.args), where),
            "keywords": _fingerprint(dict(obj.keywords), where),
        }
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not math.isfinite(obj):
            return {"float": repr(obj)}
        return normalize(obj, where)
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        return {"code": _code_of(obj, where)}
    if isinstance(obj, enum.Enum):
        return f"{type(obj).__qualname__}.{obj.name}"
    if isinstance(obj, type):
        return {"class": f"{obj.__module__}.{obj.__qualname__}"}
    if isinstance(obj, np.dtype):
        return {"dtype": repr(obj.descr)}
    if isinstance(obj, Mapping):
        return {"mapping": [[str(k), _fingerprint(v, where)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        if obj and all(isinstance(x, tuple) for x in obj):
            try:  # a dtype description: [("time", np.int64), ...]
                return {"dtype": repr(np.dtype(list(obj)).descr)}
            except (TypeError, ValueError):
                pass
        return [_fingerprint(v, where) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return {"array": repr(np.asarray(obj).tolist()), "dtype": str(np.asarray(obj).dtype)}
    text = repr(obj)
    if " at 0x" in text or "object at" in text:
        raise PluginDefinitionError(
            f"{where} = {text} has no stable representation, so no automatic version can be "
            "derived from it (version = None): set an explicit version, or make it a plain value"
        )
    return {"repr": text}


def _code_of(fn: Any, where: str) -> str:
    """The code of ``fn`` without comments, docstrings and formatting."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise PluginDefinitionError(
            f"cannot read the source of {where} for an automatic version (version = None): "
            f"{e}; a class defined where Python keeps no source (an interactive interpreter) "
            "needs an explicit version"
        ) from None
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a lambda in the middle of an expression: its line as written
        return " ".join(source.split())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module))
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _check_output_dtype(plugin: str, output: str, dtype: Any) -> np.dtype[Any]:
    try:
        return check_dtype(strip_titles(dtype))
    except (TypeError, ValueError) as e:
        raise PluginDefinitionError(
            f"{plugin}: dtype of {output!r} is not a record dtype: {e}"
        ) from None


def plugins_in(module: ModuleType) -> list[type[Plugin]]:
    """The Plugin subclasses defined in ``module`` that provide something."""
    return [
        v
        for v in vars(module).values()
        if isinstance(v, type)
        and issubclass(v, Plugin)
        and v.__module__ == module.__name__
        and v.outputs()
    ]
