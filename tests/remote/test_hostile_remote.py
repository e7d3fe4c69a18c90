"""Hostile names on S3 and SSH: a manifest (checksum recomputed) whose attempt or segment
names a place outside the store, plainly or URL-encoded, is refused with ``DataCorrupted``, and
loading, listing, gc, ``stored_bytes``, an overwrite and a removal never touch that place.
"""

from __future__ import annotations

import contextlib

import pytest

from strata.storage import DataCorrupted, DataKey, DataNotAvailable, DirectoryFrontend
from tests.helpers import PARTITION_NS, lineage
from tests.storage.test_hostile import (
    OTHER,
    bk_of,
    edit_manifest,
    rename_segment,
    save,
    set_attempt,
    tree,
)
from tests.stores import FsOutOfBand

KEY = DataKey("run_1", "records", lineage())
SIZES = (300, 200)

# the store is <parent>/strata (S3: <bucket>/strata) or <parent>/store (SSH); from a key
# directory <root>/data/run_1/records-<hash>/ four ".." reach <parent>, five from an attempt
ATTACKS = {
    "attempt_traversal": ("attempt", "../../../../victim"),
    "attempt_url_encoded": ("attempt", "..%2F..%2F..%2F..%2Fvictim"),
    "attempt_dot_encoded": ("attempt", "%2E%2E/%2E%2E/%2E%2E/%2E%2E/victim"),
    "attempt_absolute": ("attempt", "/<victim>"),
    "attempt_bucket": ("attempt", "s3://<victim>"),
    "segment_traversal": ("segment", "../../../../../victim"),
    "segment_url_encoded": ("segment", "..%2F..%2F..%2F..%2F..%2Fvictim"),
}


@pytest.fixture(params=["s3", "ssh"])
def remote(request) -> tuple[str, dict]:
    """``(url, storage_options)`` of a fresh store on the S3 or the SSH server."""
    if request.param == "s3":
        return request.getfixturevalue("s3_url"), request.getfixturevalue("s3_options")
    return request.getfixturevalue("ssh_url"), request.getfixturevalue("ssh_options")


class RemoteVictim:
    """Files beside the store root on the same server, which must survive every attack."""

    def __init__(self, oob: FsOutOfBand) -> None:
        self.fs = oob.fs
        self.path = f"{oob.root.rsplit('/', 1)[0]}/victim"
        self.fs.makedirs(f"{self.path}/sub", exist_ok=True)
        self.fs.pipe_file(f"{self.path}/precious.txt", b"keep me")
        self.fs.pipe_file(f"{self.path}/sub/zarr.json", b"{}")
        self.fs.pipe_file(f"{self.path}/manifest.json", b"not yours")
        self.before = tree(self.fs, self.path)
        assert len(self.before) == 3

    def __call__(self) -> None:
        """Assert that every file of the victim is there, unchanged."""
        assert tree(self.fs, self.path) == self.before, "a file outside the store root changed"


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_hostile_names_in_a_remote_manifest(remote, attack):
    url, options = remote
    fe = DirectoryFrontend(url, storage_options=options, chunk_target_mb=0.25)
    oob = FsOutOfBand(url, options)
    victim = RemoteVictim(oob)
    save(fe, KEY, sizes=SIZES, seed=1)
    save(fe, OTHER, sizes=SIZES, seed=2)
    what, name = ATTACKS[attack]
    name = name.replace("<victim>", victim.path.lstrip("/"))
    edit = set_attempt(name) if what == "attempt" else rename_segment("s000000", name)
    edit_manifest(oob, bk_of(KEY), edit)

    with pytest.raises(DataCorrupted, match=what):
        fe.get_metadata(KEY)
    with pytest.raises(DataCorrupted):
        fe.loader(KEY).to_numpy()
    with pytest.raises(DataCorrupted):
        fe.loader(KEY, time_range=(0, PARTITION_NS // 2)).array.compute()
    with pytest.raises(DataCorrupted):
        fe.stored_bytes(KEY)
    assert [e.key for e in fe.list()] == [OTHER]
    fe.gc(min_age_seconds=0)
    victim()

    new = save(fe, KEY, sizes=(100, 50), seed=3, overwrite=True)  # the repair: save again
    assert fe.loader(KEY).to_numpy().tobytes() == new.tobytes()
    fe.gc(min_age_seconds=0, grace_seconds=0)
    victim()

    edit_manifest(oob, bk_of(KEY), edit)  # and once more, to be removed
    with contextlib.suppress(DataCorrupted):  # the frontend reads the manifest first
        fe.remove(KEY)
    with contextlib.suppress(DataNotAvailable):
        fe.backend.remove(bk_of(KEY))
    assert not fe.is_stored(KEY)
    fe.gc(min_age_seconds=0, grace_seconds=0)
    assert len(fe.loader(OTHER).to_numpy()) == sum(SIZES)
    victim()
