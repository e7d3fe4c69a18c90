"""A registry of implementations by URL scheme with lazy ``"pkg.mod:attr"`` entries.

Modelled on fsspec's ``registry.py``: an entry is an object or the import path of one, imported
on first use, so that registering costs no import of an optional dependency; the public view
is read-only; :meth:`LazyRegistry.register` refuses to replace an entry unless asked to; an
entry-point group lets other distributions add entries. strata keeps two: transports by fsspec
protocol (:mod:`strata.storage.fs`) and frontends by URL scheme
(:mod:`strata.storage.registry`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Generic, TypeVar, cast

from ..errors import INSTALL_HINTS, MissingDependency

__all__ = ["LazyRegistry", "import_entry"]

T = TypeVar("T")


def _check_spec(spec: str) -> None:
    module, sep, attr = spec.partition(":")
    if not (module and sep and attr) or " " in spec:
        raise ValueError(f"a lazy entry must read 'package.module:attribute', got {spec!r}")


def import_entry(spec: str) -> object:
    """The object named by ``"package.module:attribute"`` (the attribute may be dotted).

    >>> import_entry("os.path:join").__name__
    'join'
    """
    _check_spec(spec)
    module_name, _, attr = spec.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ImportError(f"{module_name!r} has no attribute {attr!r}") from e
    return obj


class LazyRegistry(Generic[T]):
    """Scheme -> implementation, where an implementation may be given as an import path.

    Parameters
    ----------
    what
        What the entries are ("frontend", "transport"), for messages.
    entries
        The built-in entries.
    group
        An entry-point group consulted for names that are not registered: a distribution
        declares ``[group] scheme = package.module:attribute`` to add one.

    """

    def __init__(
        self, what: str, entries: Mapping[str, T | str] | None = None, group: str | None = None
    ) -> None:
        self.what = what
        self.group = group
        self._entries: dict[str, T | str] = {}
        self._loaded: dict[str, T] = {}
        self._entry_points: dict[str, str] | None = None
        self._lock = threading.Lock()
        self.view: Mapping[str, T | str] = MappingProxyType(self._entries)
        """The entries, read-only: an object or its import path per scheme."""
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    @staticmethod
    def _name(name: str) -> str:
        if not isinstance(name, str) or not name or "://" in name or ":" in name:
            raise ValueError(f"a URL scheme must be a plain word like 's3', got {name!r}")
        return name.lower()

    def register(self, name: str, entry: T | str, clobber: bool = False) -> None:
        """Make ``entry`` (an object or ``"package.module:attribute"``) the one for ``name``.

        Raises ``ValueError`` if ``name`` is taken, unless ``clobber`` is true.
        """
        name = self._name(name)
        if isinstance(entry, str):
            _check_spec(entry)
        with self._lock:
            if name in self._entries and not clobber:
                raise ValueError(
                    f"the URL scheme {name!r} already has a {self.what} "
                    f"({self._entries[name]!r}); pass clobber=True to replace it"
                )
            self._entries[name] = entry
            self._loaded.pop(name, None)

    def _declared(self) -> dict[str, str]:
        # Read once per process, on the first name that is not registered (as fsspec does):
        # scanning the installed distributions costs milliseconds.
        if self._entry_points is None:
            found: dict[str, str] = {}
            if self.group is not None:
                for ep in importlib.metadata.entry_points(group=self.group):
                    if ep.attr:  # "package.module:attribute", the only useful form
                        found.setdefault(ep.name.lower(), f"{ep.module}:{ep.attr}")
            self._entry_points = found
        return self._entry_points

    def names(self) -> list[str]:
        """Every name with an entry: registered or declared by an entry point, sorted."""
        return sorted(set(self._entries) | set(self._declared()))

    def get(self, name: str) -> T | None:
        """The implementation for ``name``, imported on first use; ``None`` if there is none.

        An import that fails raises :class:`~strata.storage.errors.MissingDependency` (with its
        ``pip install`` hint) for a scheme of an extra, ``ImportError`` naming the entry else.
        """
        name = name.lower()
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        entry = self._entries.get(name)
        if entry is None:
            spec = self._declared().get(name)
            if spec is None:
                return None
            with self._lock:
                entry = self._entries.setdefault(name, spec)
        if isinstance(entry, str):
            try:
                obj = cast("T", import_entry(entry))
            except ImportError as e:
                if name in INSTALL_HINTS:
                    raise MissingDependency(name, str(e)) from e
                raise ImportError(
                    f"cannot import the {self.what} for {name}:// URLs from {entry!r}: {e}"
                ) from e
        else:
            obj = entry
        self._loaded[name] = obj
        return obj
