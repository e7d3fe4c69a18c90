"""The commit: writing a manifest is what makes a save visible, and what a lost race means.

This module is the one place that decides both, for every saver, on threads and on clusters:

- **A new key** is committed by creating its commit document (the key's ``zarr.json``,
  holding the manifest: :mod:`strata.storage.layout`) *exclusively* (local disk: a temporary
  file hard-linked into place; S3: ``If-None-Match: *``; SFTP: a rename that never replaces).
  Of two savers of one key exactly one succeeds.
- **An overwrite** replaces the manifest atomically (readers see the old or the new one).
- **A lost race** (another saver committed the key first) is decided by the saver's
  :class:`LostRace` policy: ``RAISE`` raises :class:`~strata.storage.errors.DataExistsError`
  (the storage API's default: the caller asked to create this key), ``USE_STORED`` returns
  the winner's manifest (the pipeline's choice: a key names what produced the data, so the
  stored data *is* what this saver would have written). Either way the loser's attempt is
  removed by the saver, never the winner's.
- **A live save keeps a lease**: its writer renews ``strata.lease`` in its attempt with every
  segment and at the commit, and :func:`lease_heartbeat` renews it while the save computes;
  gc removes only attempts whose lease is older than its min-age. A commit first checks that
  every segment it names still exists (:class:`AttemptMissing` otherwise), so a save whose
  attempt was collected fails loudly instead of committing holes.
- **An overwrite** leaves the superseded attempt in place: a reader that opened the old
  manifest reads it completely; gc removes it after a grace period.
- **A rerun of a commit that already took effect** (a worker died after writing the manifest,
  before reporting) finds its own attempt committed and returns that manifest.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import DataCorrupted, DataExistsError, DataNotAvailable, StorageError
from .fs import atomic_write, exclusive_write
from .manifest import Manifest

__all__ = [
    "LEASE_INTERVAL",
    "SCHEMA_CHECK_ENV",
    "AttemptMissing",
    "CommitResult",
    "LostRace",
    "commit_manifest",
    "lease_heartbeat",
]

logger = logging.getLogger(__name__)

SCHEMA_CHECK_ENV = "STRATA_CHECK_SCHEMA"
"""When set (the test suite sets it), every commit document is validated against the published
JSON Schema before it is written (needs ``jsonschema``)."""

LEASE_INTERVAL = 60.0
"""Seconds between lease renewals while a save computes (gc's default min-age is an hour)."""


class AttemptMissing(StorageError):
    """A save's own attempt lost objects before its commit (gc took it for dead): nothing was
    committed, and saving again is the fix.
    """


class LostRace(enum.Enum):
    """What a saver does when another saver committed its key first."""

    RAISE = "raise"
    """Raise ``DataExistsError`` (the storage API's default)."""
    USE_STORED = "use_stored"
    """Return the committed manifest: the data is stored (the pipeline's policy)."""


class CommitResult(enum.Enum):
    """How :func:`commit_manifest` ended."""

    COMMITTED = "committed"
    """This call wrote the manifest."""
    ALREADY_COMMITTED = "already_committed"
    """An earlier run of this attempt's commit had written it."""
    LOST_RACE = "lost_race"
    """Another attempt was committed first; its manifest is returned (policy ``USE_STORED``)."""


def commit_manifest(
    fs: Any,
    path: str,
    manifest: Manifest,
    document: bytes,
    *,
    overwrite: bool,
    read_committed: Callable[[], Manifest],
    policy: LostRace = LostRace.RAISE,
) -> tuple[CommitResult, Manifest]:
    """Write ``manifest`` to ``path`` as the commit of its attempt.

    Parameters
    ----------
    fs, path
        The filesystem and path of the manifest.
    manifest
        The manifest to commit.
    document
        Its commit document (:meth:`Manifest.to_document`): the bytes written to ``path``.
    overwrite
        Replace a committed manifest (atomically) instead of creating it exclusively.
    read_committed
        Reads the manifest now committed at ``path`` (``DataNotAvailable`` if none).
    policy
        What a lost race means (see :class:`LostRace`).

    Returns
    -------
    (CommitResult, Manifest)
        How it ended and the manifest that is committed now.

    Raises
    ------
    DataExistsError
        Another saver committed first and ``policy`` is ``RAISE``.

    """
    raw = document
    if os.environ.get(SCHEMA_CHECK_ENV):
        from .schema import validate_commit

        validate_commit(raw)
    if overwrite:
        atomic_write(fs, path, raw)
        return CommitResult.COMMITTED, manifest
    try:
        exclusive_write(fs, path, raw)
        return CommitResult.COMMITTED, manifest
    except FileExistsError:
        pass
    try:
        committed: Manifest | None = read_committed()
    except (DataNotAvailable, DataCorrupted) as e:
        logger.warning("%s exists but cannot be read back: %s", path, e)
        committed = None
    if committed is not None and committed.attempt == manifest.attempt:
        return CommitResult.ALREADY_COMMITTED, committed
    if committed is not None and policy is LostRace.USE_STORED:
        if committed.key != manifest.key:
            raise DataCorrupted(f"{path} commits {committed.key}, not {manifest.key}")
        logger.info(
            "%s was committed by another saver while this one was writing; using that",
            manifest.key,
        )
        return CommitResult.LOST_RACE, committed
    raise DataExistsError(
        f"{manifest.key} was committed by another saver while this one was writing; "
        "this attempt was discarded"
    )


@contextlib.contextmanager
def lease_heartbeat(savers: Sequence[Any], interval: float = LEASE_INTERVAL) -> Iterator[None]:
    """Renew the leases of ``savers`` every ``interval`` seconds while the block runs.

    A save renews its lease as it writes; a long computation between writes (a slow plugin)
    would let it age past gc's min-age. The process that drives the save runs this heartbeat
    for as long as it waits for the computation, on threads or on a cluster. A failed renewal
    is logged, not raised: the save's own writes renew the lease too.
    """
    if not savers:
        yield
        return
    stop, ticked = threading.Event(), threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            ticked.set()
            for s in savers:
                try:
                    s.touch_lease()
                except Exception as e:  # e.g. the save failed and aborted meanwhile
                    logger.debug("could not renew the lease of %s: %s", s.key, e)

    thread = threading.Thread(target=beat, name="strata-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if ticked.is_set():  # a renewal may have raced a commit: no lease on a committed attempt
            for s in savers:
                s.release_lease()
