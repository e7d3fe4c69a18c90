"""Moving strax data into a strata store: ``copy_data``, ``Context.copy_to_frontend`` and
``strata copy`` / ``strata ls`` with ``strax://`` URLs, verified partition by partition."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from strata.pipeline import Context
from strata.pipeline.cli import main
from strata.storage import (
    DataCorrupted,
    DataExistsError,
    DirectoryFrontend,
    copy_data,
    open_frontend,
)
from strata.storage.frontends.strax import StraxDirectoryFrontend
from tests.strax.mirror import PLUGINS

MIRROR = "tests.strax.mirror:PLUGINS"


@pytest.mark.parametrize("data_type", ["records_lz4", "sums"])
def test_copy_into_a_strata_store_is_verified_and_exact(strax_written, tmp_path, data_type):
    src = strax_written.frontend()
    dst = DirectoryFrontend(str(tmp_path / "strata"))
    key = strax_written.key("r1", data_type)
    m = copy_data(src, dst, key)
    want = strax_written.array("r1", data_type)
    got = dst.loader(key).to_numpy()
    assert got.dtype.names == want.dtype.names and got.tobytes() == want.tobytes()
    # the partitions are strax's chunks, the empty one included
    assert [p.rows for p in m.partitions] == [p.rows for p in src.get_metadata(key).partitions]
    assert m.metadata["strax"]["folder"] == strax_written.folder("r1", data_type)
    name = "area" if data_type == "records_lz4" else "scaled"
    want_help = "Integral [PE]" if name == "area" else "Scaled area"
    assert m.arrays[name]["attributes"]["description"] == want_help  # strax's field titles
    assert all(not r.problems for r in dst.verify())
    with pytest.raises(DataExistsError):
        copy_data(src, dst, key)
    again = copy_data(src, dst, key, compressor="zstd", overwrite=True)
    assert dst.loader(key).to_numpy().tobytes() == want.tobytes()
    assert again.rows == len(want)


def test_a_damaged_source_commits_nothing(strax_data, tmp_path):
    folder = strax_data.folder("r1", "records_bz2")
    chunk = strax_data.path / folder / f"{folder.split('-', 1)[1]}-000003"
    chunk.write_bytes(chunk.read_bytes()[:-1])
    dst = DirectoryFrontend(str(tmp_path / "strata"))
    key = strax_data.key("r1", "records_bz2")
    with pytest.raises(DataCorrupted, match="chunk 3"):
        copy_data(strax_data.frontend(), dst, key)
    assert not dst.is_stored(key)


def test_context_copies_from_strax_to_strata(strax_written, tmp_path):
    dst = DirectoryFrontend(str(tmp_path / "strata"))
    ctx = Context(storage=[strax_written.frontend(), dst], register=PLUGINS)
    m = ctx.copy_to_frontend("r1", "sums", dst)
    assert m.key == ctx.key_for("r1", "sums")
    # the strata store now serves it on its own (its plugins never compute)
    alone = Context(storage=[dst], register=PLUGINS)
    assert alone.get_array("r1", "sums").tobytes() == strax_written.array("r1", "sums").tobytes()


def test_strax_urls_open_the_strax_frontend(strax_written):
    fe = open_frontend(f"strax://{strax_written.path}")
    assert isinstance(fe, StraxDirectoryFrontend)
    assert fe.list_runs() == ["r1", "r2"]


def test_cli_ls_and_copy_with_a_strax_url(strax_written, tmp_path):
    runner = CliRunner()
    url = f"strax://{strax_written.path}"
    r = runner.invoke(main, ["ls", "-s", url], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    for folder in strax_written.expected["keys"]:
        assert folder.split("-")[1] in r.output
    dest = tmp_path / "strata"
    args = ["copy", "r1", "records_blosc", "-s", url, "--to", str(dest), "--plugins", MIRROR]
    r = runner.invoke(main, args, env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "verified" in r.output
    got = DirectoryFrontend(str(dest)).loader(strax_written.key("r1", "records_blosc")).to_numpy()
    want = strax_written.array("r1", "records_blosc")
    assert got.tobytes() == want.tobytes() and np.array_equal(got["data"], want["data"])
