"""The commit: writing a manifest is what makes a save visible, and what a lost race means.

This module is the one place that decides both, for every saver, on threads and on clusters:

- **A new key** is committed by creating its manifest *exclusively* (local disk: a temporary
  file hard-linked into place; S3: ``If-None-Match: *``; SFTP: a rename that never replaces).
  Of two savers of one key exactly one succeeds.
- **An overwrite** replaces the manifest atomically (readers see the old or the new one).
- **A lost race** (another saver committed the key first) is decided by the saver's
  :class:`LostRace` policy: ``RAISE`` raises :class:`~strata.storage.errors.DataExistsError`
  (the storage API's default: the caller asked to create this key), ``USE_STORED`` returns
  the winner's manifest (the pipeline's choice: a key names what produced the data, so the
  stored data *is* what this saver would have written). Either way the loser's attempt is
  removed by the saver, never the winner's.
- **A rerun of a commit that already took effect** (a worker died after writing the manifest,
  before reporting) finds its own attempt committed and returns that manifest.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

from .errors import DataCorrupted, DataExistsError, DataNotAvailable, StorageError
from .fs import atomic_write, exclusive_write
from .manifest import Manifest

__all__ = ["AttemptMissing", "CommitResult", "LostRace", "commit_manifest"]

logger = logging.getLogger(__name__)


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
    raw = manifest.to_bytes()
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
