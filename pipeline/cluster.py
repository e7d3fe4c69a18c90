"""Connect to a Dask cluster that can run strata's tasks, or fail in bounded time.

A ``distributed.Client`` of a scheduler that nobody can reach, of a scheduler without
workers, or of workers that cannot import strata waits for ever: tasks stay queued until a
worker joins, and a worker that cannot unpickle a task drops its connection and leaves the
task queued for the next one. (Measured with distributed 2026.8: a ``dask worker`` that fails
to import a task's module closes itself, nanny and all, with
``worker-handle-scheduler-connection-broken``; the client is never told.) This module turns
each of these into a named error within a time the caller chooses:

* :func:`connect` makes a client with a connection timeout (:class:`SchedulerUnreachable`)
  and then calls :func:`wait_for_usable_workers`;
* :func:`wait_for_usable_workers` waits until at least one worker has run :func:`probe` (import
  ``strata.storage``, ``strata.pipeline`` and the plugin modules) and raises
  :class:`NoUsableWorkers`, with every worker's error, when none has by the deadline;
* :class:`WorkerWatch` (and :func:`watched`) cancels the futures of a client whose cluster
  has had no worker at all for that long while it waits for them, so a job whose workers all
  died ends with :class:`NoUsableWorkers` instead of hanging.

The probe is sent with ``client.run`` (an out-of-band call, not a task), pickled by value: a
worker that cannot import strata answers it with the ImportError instead of dying, and it
bypasses the task queue of a busy shared cluster. The scheduler is probed too: it unpickles
every task graph (distributed 2026.8), so it needs strata and the plugin modules as well.

A scheduler started by hand can bound the same wait on its side for every client with
``DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT=60s`` (distributed's
``scheduler.no-workers-timeout``: tasks that stay unrunnable that long fail).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ClusterError, InvalidRequest, NoUsableWorkers, SchedulerUnreachable

__all__ = [
    "CORE_MODULES",
    "DEFAULT_WORKER_TIMEOUT",
    "WORKER_TIMEOUT_ENV",
    "WorkerWatch",
    "check_scheduler",
    "connect",
    "plugin_modules",
    "probe",
    "sendable_probe",
    "wait_for_usable_workers",
    "watched",
    "worker_timeout_from_env",
]

logger = logging.getLogger(__name__)

DEFAULT_WORKER_TIMEOUT = 60.0
"""Seconds to wait for a reachable scheduler and a usable worker, by default."""
WORKER_TIMEOUT_ENV = "STRATA_WORKER_TIMEOUT"
"""Environment variable overriding :data:`DEFAULT_WORKER_TIMEOUT` (seconds; ``inf``: no limit)."""
CORE_MODULES = ("strata.storage", "strata.pipeline")
"""The modules every worker and the scheduler must import."""
POLL_INTERVAL = 0.5
"""Seconds between two looks at the workers while waiting for a usable one."""

_INSTALL_HINT = (
    "every worker (and the scheduler) needs strata installed in its Python environment "
    "(pip install strata-lineage, or pip install -e . of the same checkout) and the plugin "
    "modules importable"
)


def worker_timeout_from_env(default: float = DEFAULT_WORKER_TIMEOUT) -> float:
    """The worker timeout from ``STRATA_WORKER_TIMEOUT`` (seconds, or ``inf``), else
    ``default``; a value that is not a positive number is a ``ValueError`` naming it.
    """
    raw = os.environ.get(WORKER_TIMEOUT_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(
            f"{WORKER_TIMEOUT_ENV}={raw!r} is not a number of seconds (use e.g. 60, or inf)"
        ) from None
    return _check_timeout(value, WORKER_TIMEOUT_ENV)


def _check_timeout(value: float, what: str) -> float:
    if not value > 0:  # also rejects nan
        raise InvalidRequest(f"{what} must be a positive number of seconds (or inf), not {value!r}")
    return value


def plugin_modules(plugins: Iterable[type]) -> tuple[str, ...]:
    """The modules defining ``plugins`` (what a worker must import to unpickle their tasks),
    in order, without duplicates; ``__main__`` is left out (cloudpickle sends its classes by
    value).

    >>> from strata.pipeline.demo import PLUGINS
    >>> plugin_modules(PLUGINS)
    ('strata.pipeline.demo',)
    """
    out: dict[str, None] = {}
    for p in plugins:
        if p.__module__ != "__main__":
            out[p.__module__] = None
    return tuple(out)


def probe(modules: Sequence[str] = ()) -> str | None:
    """Import ``modules`` where this runs; ``None`` if every import worked, else the error.

    Sent to the workers (and the scheduler) by :func:`wait_for_usable_workers`, pickled by
    value (see :func:`sendable_probe`): a process that cannot import strata can still run it
    and say why. It uses nothing of strata, only what it names here.
    """
    for name in (*CORE_MODULES, *modules):
        try:
            importlib.import_module(name)
        except BaseException as e:  # a plugin module may raise anything while importing
            return f"cannot import {name}: {_describe_error(e)}"
    return None


def _describe_error(e: BaseException) -> str:
    text = " ".join(str(e).split())  # one line
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def sendable_probe() -> Callable[..., str | None]:
    """:func:`probe`, pickled by value from now on.

    By reference, unpickling it imports this module, which is just what an unusable worker
    cannot do: distributed then answers ``client.run`` with an ``Exception`` wrapping the
    repr of the ImportError. cloudpickle's by-value registry (which distributed's pickler
    honours) sends the function's code and the few globals it uses instead. Only this module
    is registered; nothing else of it travels to workers.
    """
    import cloudpickle

    if __name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return probe


def _call_with_timeout(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """``fn()`` in a daemon thread; ``TimeoutError`` naming ``what`` after ``timeout`` seconds.

    ``Client.run`` has no timeout of its own: a worker stuck importing (a hung network file
    system) would block it for ever. The thread is a daemon so that a stuck call never keeps
    the interpreter from exiting; it ends when the client is closed.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=target, name=f"strata-{what}", daemon=True)
    thread.start()
    thread.join(None if math.isinf(timeout) else max(timeout, 0.0))
    if thread.is_alive():
        raise TimeoutError(f"{what} did not answer within {timeout:g} s")
    if error:
        raise error[0]
    return result[0]


def _worker_names(client: Any) -> dict[str, str]:
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except Exception:  # only for messages
        return {}
    return {addr: str(info.get("name", addr)) for addr, info in workers.items()}


def _label(address: str, names: dict[str, str]) -> str:
    name = names.get(address)
    return f"{address} ({name})" if name and name != address else address


def _seconds(timeout: float) -> str:
    return "no time limit" if math.isinf(timeout) else f"{timeout:g} s"


def check_scheduler(client: Any, modules: Sequence[str] = (), timeout: float = math.inf) -> None:
    """Raise :class:`ClusterError` if the scheduler of ``client`` cannot import strata and
    ``modules``: it unpickles every task graph it is sent (distributed 2026.8), so such a
    scheduler fails every job ("Error during deserialization of the task graph").
    """
    address = client.scheduler.address
    try:
        error = _call_with_timeout(
            lambda: client.run_on_scheduler(sendable_probe(), tuple(modules)),
            timeout,
            "the scheduler",
        )
    except TimeoutError as e:
        raise ClusterError(f"the Dask scheduler at {address}: {e}") from e
    except Exception as e:  # the call itself failed there
        error = _describe_error(e)
    if error is not None:
        raise ClusterError(
            f"the Dask scheduler at {address} cannot run strata's tasks: {error}; " + _INSTALL_HINT
        )


def wait_for_usable_workers(
    client: Any,
    timeout: float = DEFAULT_WORKER_TIMEOUT,
    modules: Sequence[str] = (),
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """Wait until a worker of ``client``'s cluster can run strata's tasks; return the
    addresses of the workers that can.

    A worker is usable when :func:`probe` runs there: it imports ``strata.storage``,
    ``strata.pipeline`` and ``modules`` (the plugin modules, see :func:`plugin_modules`). The
    scheduler is checked first (:func:`check_scheduler`). Workers that join later are probed
    as they come; workers that cannot run the probe are logged (once per worker and error)
    and left alone, so a mixed cluster works with a warning.

    Parameters
    ----------
    client
        A connected ``distributed.Client``.
    timeout
        Seconds to wait in all (``math.inf``: no limit).
    modules
        Modules the workers must import beyond strata's own.
    report
        Called with a line of text when the wait starts or a worker is found unusable
        (default: log at INFO / WARNING).

    Raises
    ------
    NoUsableWorkers
        No usable worker within ``timeout`` seconds; the message names the scheduler and
        what each worker that was seen reported.
    ClusterError
        The scheduler itself cannot import strata or ``modules``.

    """
    timeout = _check_timeout(timeout, "the worker timeout")
    return _wait_for_usable_workers(
        client, time.monotonic() + timeout, timeout, tuple(modules), report
    )


def _wait_for_usable_workers(
    client: Any,
    deadline: float,
    timeout: float,
    modules: tuple[str, ...],
    report: Callable[[str], None] | None,
) -> list[str]:
    """:func:`wait_for_usable_workers` until ``deadline`` (``time.monotonic()``) of a wait of
    ``timeout`` seconds in all (for messages).
    """
    address = client.scheduler.address
    check_scheduler(client, modules, max(deadline - time.monotonic(), 1.0))
    seen: dict[str, str] = {}  # worker address -> its last error
    names: dict[str, str] = {}
    waiting_said = False
    while True:
        remaining = deadline - time.monotonic()
        if not client.nthreads():
            if not waiting_said:
                _report(
                    report,
                    f"Dask cluster {address} has no workers yet: waiting up to "
                    f"{_seconds(timeout)} for one",
                    logging.INFO,
                )
                waiting_said = True
            if remaining <= 0:
                raise _no_usable(address, timeout, seen, names)
            try:
                client.wait_for_workers(1, timeout=None if math.isinf(remaining) else remaining)
            except TimeoutError:
                raise _no_usable(address, timeout, seen, names) from None
            continue
        try:
            answers: dict[str, Any] = _call_with_timeout(
                lambda: client.run(sendable_probe(), modules, on_error="return"),
                max(remaining, 1.0),  # let a late probe round finish its answers
                "the workers",
            )
        except TimeoutError as e:
            raise NoUsableWorkers(
                f"the workers of the Dask scheduler at {address} did not answer strata's probe "
                f"(imports of {', '.join((*CORE_MODULES, *modules))}) within "
                f"{_seconds(timeout)}: {e}"
            ) from e
        usable = sorted(a for a, r in answers.items() if r is None)
        names.update(_worker_names(client))
        for a, r in sorted(answers.items()):
            if r is None:
                continue
            error = _describe_error(r) if isinstance(r, BaseException) else str(r)
            if seen.get(a) != error:
                _report(
                    report,
                    f"worker {_label(a, names)} cannot run strata's tasks: {error}",
                    logging.WARNING,
                )
            seen[a] = error
        if usable:
            if len(usable) < len(answers):
                _report(
                    report,
                    f"{len(answers) - len(usable)} of {len(answers)} workers of {address} "
                    "cannot run strata's tasks; tasks sent to them fail or run again elsewhere",
                    logging.WARNING,
                )
            return usable
        if time.monotonic() >= deadline:
            raise _no_usable(address, timeout, seen, names)
        time.sleep(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0.0)))  # workers may join


def _report(report: Callable[[str], None] | None, message: str, level: int) -> None:
    if report is None:
        logger.log(level, "%s", message)
    else:
        report(message)


def _no_usable(
    address: str, timeout: float, seen: dict[str, str], names: dict[str, str]
) -> NoUsableWorkers:
    if not seen:
        return NoUsableWorkers(
            f"no workers joined the Dask scheduler at {address} within {_seconds(timeout)} "
            f"(start `dask worker {address}`, or wait longer with --worker-timeout / "
            f"{WORKER_TIMEOUT_ENV})"
        )
    listed = "; ".join(f"{_label(a, names)}: {e}" for a, e in sorted(seen.items()))
    return NoUsableWorkers(
        f"no usable worker at the Dask scheduler {address} within {_seconds(timeout)}: "
        f"{len(seen)} worker(s) cannot run strata's tasks ({listed}); {_INSTALL_HINT}"
    )


def connect(
    address: str | None = None,
    scheduler_file: str | Path | None = None,
    timeout: float = DEFAULT_WORKER_TIMEOUT,
    modules: Sequence[str] = (),
    report: Callable[[str], None] | None = None,
    **client_kwargs: Any,
) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (or described in
    ``scheduler_file``) once at least one worker there can run strata's tasks.

    ``timeout`` bounds the whole wait: connecting, then :func:`wait_for_usable_workers`
    (with ``modules`` and ``report``). ``client_kwargs`` go to ``Client``; the default client
    is not replaced unless ``set_as_default=True`` is passed.

    Raises
    ------
    SchedulerUnreachable
        The scheduler did not answer within ``timeout`` seconds.
    NoUsableWorkers, ClusterError
        See :func:`wait_for_usable_workers`.

    """
    from distributed import Client

    timeout = _check_timeout(timeout, "the worker timeout")
    if (address is None) == (scheduler_file is None):
        raise InvalidRequest("give a scheduler address or a scheduler file, exactly one")
    deadline = time.monotonic() + timeout
    where = address if address is not None else f"the address in {scheduler_file}"
    client_kwargs.setdefault("set_as_default", False)
    # distributed takes a number of seconds; a huge one stands for "no limit"
    connect_timeout = 10.0 * 365 * 86400 if math.isinf(timeout) else timeout
    try:
        if scheduler_file is not None:
            client = Client(
                scheduler_file=str(scheduler_file), timeout=connect_timeout, **client_kwargs
            )
        else:
            client = Client(address=address, timeout=connect_timeout, **client_kwargs)
    except (OSError, TimeoutError) as e:
        raise SchedulerUnreachable(
            f"cannot reach the Dask scheduler at {where} within {_seconds(timeout)}: "
            f"{_describe_error(e)} (is `dask scheduler` running there, and reachable from here?)"
        ) from e
    try:
        _wait_for_usable_workers(client, deadline, timeout, tuple(modules), report)
    except BaseException:
        client.close()
        raise
    return client


class WorkerWatch:
    """While entered, cancel the futures of ``client`` once its cluster has had no worker for
    ``timeout`` seconds while the client holds futures (a job waits for tasks nobody can run).

    Without it a job whose workers all die waits until workers return, possibly for ever
    (unless its scheduler was started with ``no-workers-timeout``). The cancelled futures make
    the waiting call fail with ``CancelledError``; the caller checks :attr:`fired` and raises
    :class:`NoUsableWorkers` with its text, as :func:`watched` does. Futures made later, while
    the cluster still has no worker, are cancelled at the next look. The client stays open
    (closing it from here would stop its event loop under the waiting call, which then waits
    for ever).
    """

    interval = 1.0
    """Seconds between two looks at the cluster."""

    def __init__(self, client: Any, timeout: float = DEFAULT_WORKER_TIMEOUT) -> None:
        self.client = client
        self.timeout = _check_timeout(timeout, "the worker timeout")
        self.fired: str | None = None
        """Why the futures were cancelled, or ``None``."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WorkerWatch:
        if not math.isinf(self.timeout):
            self._thread = threading.Thread(
                target=self._watch, name="strata-worker-watch", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        client = self.client
        address = client.scheduler.address
        none_since: float | None = None
        while not self._stop.wait(self.interval):
            try:
                n_workers = len(client.nthreads())
            except Exception:  # the client is closing or reconnecting: its own errors tell
                continue
            now = time.monotonic()
            if n_workers:
                none_since = None
                continue
            if none_since is None:
                none_since = now
                logger.warning("Dask cluster %s has no workers: tasks wait", address)
            if client.futures and now - none_since >= self.timeout:
                self._give_up(f"{now - none_since:.0f}")

    def _give_up(self, seconds: str) -> None:
        from distributed import Future

        client = self.client
        address = client.scheduler.address
        if self.fired is None:
            self.fired = (
                f"the Dask cluster at {address} has had no workers for {seconds} s while "
                f"tasks waited (all workers died or left); gave up after {self.timeout:g} s "
                f"(--worker-timeout / {WORKER_TIMEOUT_ENV})"
            )
            logger.error("%s", self.fired)
        # Futures of keys this client already holds: the public way to name them to cancel
        futures: list[Any] = [Future(key, client) for key in list(client.futures)]
        try:
            client.cancel(futures, reason="no-workers", msg=self.fired)
        except Exception as e:  # the client is closing: the waiting call fails anyway
            logger.debug("cancelling the futures of %s: %s", address, e)


@contextmanager
def watched(client: Any, timeout: float = DEFAULT_WORKER_TIMEOUT) -> Iterator[WorkerWatch]:
    """:class:`WorkerWatch` of ``client`` that also turns the failure of the body, after the
    watch closed the client, into :class:`NoUsableWorkers`.
    """
    with WorkerWatch(client, timeout) as watch:
        try:
            yield watch
        except BaseException as e:
            if watch.fired:
                raise NoUsableWorkers(watch.fired) from e
            raise
