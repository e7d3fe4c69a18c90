"""What strata writes, read by tensorstore (Google's C++ Zarr v3 implementation) in a process
that never imports strata: every committed array of every field kind, compared bit-exact.

The reader finds the committed arrays from each key's ``zarr.json`` alone (plain JSON): its
consolidated metadata lists exactly the committed arrays.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from strata.storage import DataKey, DirectoryFrontend
from strata.storage.backends.zarr.dtypes import to_storage
from tests.helpers import STRAX_DTYPE, lineage, make_run
from tests.storage.test_field_kinds import DTYPE, _records

pytest.importorskip("tensorstore")

READER = textwrap.dedent(
    """
    import json, sys, pathlib
    import numpy as np
    import tensorstore as ts

    assert "strata" not in sys.modules
    root, expected = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    checked = 0
    for commit in sorted(root.glob("data/*/*/zarr.json")):
        nodes = json.loads(commit.read_text())["consolidated_metadata"]["metadata"]
        for rel, node in sorted(nodes.items()):
            if node["node_type"] != "array":
                continue
            _, seg, field = rel.split("/")
            path = commit.parent / rel
            arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}},
                          open=True, read=True).result()
            got = arr.read().result()
            want = np.load(expected / f"{commit.parent.name}-{seg}-{field}.npy")
            assert got.dtype == want.dtype, (path, got.dtype, want.dtype)
            assert got.shape == want.shape and got.tobytes() == want.tobytes(), path
            checked += 1
    print(checked)
    """
)


@pytest.mark.parametrize(
    ("compressor", "shard_mb"),
    [
        ("blosc", 64),  # several chunks a segment: one shard per array
        ("blosc", 0.007),  # several shards per array, the last with empty index entries
        ("blosc", 0),  # one object per chunk
        ("zstd", 64),  # a chain strata does not shard
        ("lz4", 64),
        ("blosc-lz4", 64),
        ("none", 0.007),
    ],
)
def test_tensorstore_reads_every_committed_array_bit_exact(tmp_path, compressor, shard_mb):
    fe = DirectoryFrontend(
        str(tmp_path / "s"), chunk_target_mb=0.002, compressor=compressor, shard_target_mb=shard_mb
    )
    expected = tmp_path / "expected"
    expected.mkdir()
    kinds = DataKey("run_1", "kinds", lineage("kinds"))
    records = DataKey("run_1", "records", lineage("records"))
    saves = [
        (kinds, DTYPE, [_records(200, 0), _records(57, 10_000)], [(0, 10_000), (10_000, 20_000)]),
        (records, STRAX_DTYPE, *make_run([300, 0, 120])),
    ]
    n_arrays = 0
    for key, dtype, parts, intervals in saves:
        m = fe.saver(key, dtype).save(parts, intervals).compute()
        sharded = {f: seg.shard(f) for seg in m.segments for f in seg.shard_chunks}
        assert bool(sharded) == (shard_mb > 0 and compressor != "zstd"), sharded
        data = np.concatenate(parts)
        offset = 0
        for seg in m.segments:
            rows = data[offset : offset + seg.rows]
            offset += seg.rows
            for f in dtype.names:
                col = to_storage(np.ascontiguousarray(rows[f]), dtype[f].base)
                np.save(expected / f"{key.name}-{seg.name}-{f}.npy", np.ascontiguousarray(col))
                n_arrays += 1
    out = subprocess.run(
        [sys.executable, "-c", READER, str(tmp_path / "s"), str(expected)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) == n_arrays > 20
