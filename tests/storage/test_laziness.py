"""Lazy means lazy: count the files and bytes read through fsspec."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from strata.storage import DataKey, DirectoryFrontend
from tests.helpers import PARTITION_NS, STRAX_DTYPE, lineage, make_run


class CountingFS(MemoryFileSystem):
    """The in-memory filesystem, counting reads and listings (a real fsspec filesystem)."""

    protocol = ("countmem",)
    reads: Counter = Counter()
    read_bytes: Counter = Counter()
    listings: list = []
    attempts: Counter = Counter()  # reads asked for, found or not
    lock = threading.Lock()

    def cat_file(self, path, start=None, end=None, **kwargs):
        with self.lock:
            CountingFS.attempts[self._strip_protocol(path)] += 1
        data = super().cat_file(path, start=start, end=end, **kwargs)
        with self.lock:
            CountingFS.reads[self._strip_protocol(path)] += 1
            CountingFS.read_bytes[self._strip_protocol(path)] += len(data)
        return data

    def ls(self, path, detail=True, **kwargs):
        with self.lock:
            CountingFS.listings.append(path)
        return super().ls(path, detail=detail, **kwargs)

    @classmethod
    def reset(cls):
        cls.reads.clear()
        cls.attempts.clear()
        cls.read_bytes.clear()
        cls.listings.clear()


fsspec.register_implementation("countmem", CountingFS, clobber=True)

SIZES = [400, 300, 0, 350, 500, 250, 600, 320, 410, 280]


@pytest.fixture
def stored():
    url = f"countmem://lazy-{uuid.uuid4().hex}"
    fe = DirectoryFrontend(url, chunk_target_mb=0.1)
    key = DataKey("run_1", "records", lineage())
    parts, intervals = make_run(SIZES)
    fe.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
    CountingFS.reset()
    return fe, key, np.concatenate(parts)


def _files():
    return {p for p in CountingFS.reads if not p.endswith("zarr.json")}


def test_open_reads_only_the_manifest_and_lists_nothing(stored):
    fe, key, _ = stored
    lazy = fe.loader(key)
    assert len(CountingFS.reads) == 1
    assert next(iter(CountingFS.reads)).endswith(f"{fe.backend.backend_key(key)}/zarr.json")
    assert CountingFS.listings == []
    # one task per stored chunk
    m = lazy.manifest
    n_chunks = sum(-(-s.rows // s.chunk_rows["data"]) for s in m.segments)
    assert lazy.fields["data"].npartitions == n_chunks


def test_fields_read_only_those_arrays(stored):
    fe, key, ref = stored
    area = fe.loader(key, fields=["area"]).fields["area"].compute()
    np.testing.assert_array_equal(area, ref["area"])
    files = _files()
    assert files and all("/area/" in f for f in files)
    area_bytes = sum(CountingFS.read_bytes[f] for f in files)
    CountingFS.reset()
    fe.loader(key).to_numpy()
    all_bytes = sum(CountingFS.read_bytes[f] for f in _files())
    assert area_bytes < 0.05 * all_bytes


def test_time_range_reads_only_overlapping_partitions(stored):
    fe, key, ref = stored
    t0, t1 = 3 * PARTITION_NS + 1000, 5 * PARTITION_NS - 1000  # partitions 3 and 4
    got = fe.loader(key, time_range=(t0, t1)).to_numpy()
    want = ref[(ref["time"] >= t0) & (ref["time"] < t1)]
    assert got.tobytes() == want.tobytes()
    m = fe.get_metadata(key)
    wanted_segments = {p.segment for p in m.partitions[3:5]}
    segs = {part for f in _files() for part in f.split("/") if part.startswith("s0")}
    assert segs and segs <= wanted_segments
    assert len(m.segments) > 2 * len(wanted_segments)
    assert CountingFS.listings == []


def test_exact_find_reads_one_manifest(stored):
    fe, key, _ = stored
    assert fe.is_stored(key)
    assert sum(CountingFS.reads.values()) == 1
    assert CountingFS.listings == []
    assert not fe.is_stored(DataKey("run_1", "records", lineage(x=1)))
    assert CountingFS.listings == []
