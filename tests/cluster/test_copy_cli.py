"""``strata copy``: stored data to another store, recompressed and rechunked, verified; on
threads and on a cluster whose workers read and write both stores."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from click.testing import CliRunner
from distributed import get_task_stream

from strata.pipeline import Context
from strata.pipeline.cli import main
from strata.storage import DirectoryFrontend
from tests.cluster import plugins
from tests.cluster.conftest import worker_pids

SPEC = "tests.cluster.plugins:PLUGINS"
CONFIG = {"n_partitions": 5, "rows": 3000, "width": 16}
CONFIG_ARGS = [a for k, v in CONFIG.items() for a in ("-c", f"{k}={v}")]


def _codecs(fe: DirectoryFrontend, key) -> list[str]:
    m = fe.get_metadata(key)
    return [c["name"] for c in m.arrays["data"]["codecs"]]


@pytest.fixture
def source(tmp_path):
    """``blocks`` of run_1 made on threads in a store of its own; its key."""
    fe = DirectoryFrontend(str(tmp_path / "src"))
    ctx = Context(storage=[fe], register=plugins.PLUGINS, config=CONFIG)
    with dask.config.set(scheduler="threads"):
        ctx.make("run_1", "blocks")
    return fe, ctx.key_for("run_1", "blocks")


def test_copy_to_another_local_store_recompressed_and_rechunked(source, tmp_path):
    src, key = source
    dst_dir = tmp_path / "dst"
    args = ["copy", "run_1", "blocks", "--to", str(dst_dir), "-s", src.url, "-p", SPEC]
    result = CliRunner().invoke(
        main, [*args, *CONFIG_ARGS, "--compressor", "zstd", "--rechunk-mb", "0.05"]
    )
    assert result.exit_code == 0, result.output
    assert f"copied {key}" in result.output
    assert "verified" in result.output
    dst = DirectoryFrontend(str(dst_dir))
    np.testing.assert_array_equal(dst.loader(key).to_numpy(), src.loader(key).to_numpy())
    ms, md = src.get_metadata(key), dst.get_metadata(key)
    assert [(p.start, p.end, p.rows) for p in md.partitions] == [
        (p.start, p.end, p.rows) for p in ms.partitions
    ]
    assert md.metadata == ms.metadata
    assert "blosc" in _codecs(src, key)
    assert "zstd" in _codecs(dst, key)
    assert "blosc" not in _codecs(dst, key)
    assert _codecs(dst, key)[-1] == "crc32c"  # still checksummed
    src_rows, dst_rows = (max(s.chunk_rows["data"] for s in m.segments) for m in (ms, md))
    assert dst_rows * md.np_dtype["data"].itemsize <= 0.05 * 2**20  # rechunked to 0.05 MiB
    assert dst_rows < src_rows
    # again: nothing to do; --overwrite copies anew
    result = CliRunner().invoke(main, [*args, *CONFIG_ARGS])
    assert result.exit_code == 0, result.output
    assert "already stored" in result.output
    result = CliRunner().invoke(main, [*args, *CONFIG_ARGS, "--overwrite", "--compressor", "none"])
    assert result.exit_code == 0, result.output
    assert "zstd" not in _codecs(dst, key)
    np.testing.assert_array_equal(dst.loader(key).to_numpy(), src.loader(key).to_numpy())


def test_copy_of_data_that_is_not_stored_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            *("copy", "run_1", "blocks", "--to", str(tmp_path / "dst")),
            *("-s", str(tmp_path / "src"), "-p", SPEC, *CONFIG_ARGS),
        ],
    )
    assert result.exit_code == 1
    assert "cannot copy run_1-blocks-" in result.output


@pytest.mark.slow
def test_copy_on_the_cluster(cluster, source, tmp_path):
    procs, client = cluster
    src, key = source
    dst_dir = tmp_path / "dst"
    with get_task_stream(client) as ts:
        result = CliRunner().invoke(
            main,
            [
                *("copy", "run_1", "blocks", "--to", str(dst_dir), "-s", src.url, "-p", SPEC),
                *(*CONFIG_ARGS, "--compressor", "lz4"),
                *("--scheduler-file", str(procs.scheduler_file)),
            ],
        )
    assert result.exit_code == 0, result.output
    assert f"Dask cluster {procs.address}" in result.output
    dst = DirectoryFrontend(str(dst_dir))
    np.testing.assert_array_equal(dst.loader(key).to_numpy(), src.loader(key).to_numpy())
    # the workers wrote the segments and the commit
    ran = {t["key"].split("-")[0]: t["worker"] for t in ts.data if isinstance(t["key"], str)}
    assert {"stage", "commit"} <= set(ran)
    assert set(ran.values()) <= set(worker_pids(client))
