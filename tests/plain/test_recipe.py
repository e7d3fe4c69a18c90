"""The plain-reader recipe of the README's Format section, in processes that never import
strata: a key's URL opens with zarr-python and xarray and shows exactly the committed data,
while an overwritten attempt, a killed save's attempt and a never-committed key sit beside it.
Folder walkers find a marker on every attempt no commit names.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from strata.storage import DataKey, DirectoryFrontend
from tests.helpers import STRAX_DTYPE, lineage, make_run

KEY = DataKey("run_1", "records", lineage("records"))
KILLED = DataKey("run_1", "records", lineage("records", gain=3.0))
EMPTY = DataKey("run_1", "nothing", lineage("nothing"))

# The README's recipe, verbatim in its three lines (url: the key's directory)
RECIPE = """\
tree = xr.open_datatree(url, engine="zarr")
attempt = tree[tree.attrs["strata"]["attempt"]]
ds = xr.concat([attempt[s].to_dataset() for s in sorted(attempt.children)], dim="row")
"""

READER = textwrap.dedent(
    """
    import json, sys, pathlib, warnings
    warnings.simplefilter("error")  # the recipe opens without a warning
    import numpy as np
    import xarray as xr
    import zarr

    url, expected, out = sys.argv[1], sys.argv[2], sys.argv[3]
    exec(sys.argv[4])
    want = np.load(expected)
    result = {"rows": ds.sizes["row"], "fields": sorted(ds.data_vars)}
    result["exact"] = all(
        np.array_equal(ds[f].values, want[f]) and ds[f].dtype == want[f].dtype
        for f in want.dtype.names
    )
    g = zarr.open_group(url, mode="r")
    result["groups"] = sorted(k for k, v in g.members(max_depth=None)
                              if isinstance(v, zarr.Group))
    result["arrays"] = len([k for k, v in g.members(max_depth=None)
                            if isinstance(v, zarr.Array)])
    result["strata_imported"] = "strata" in sys.modules
    pathlib.Path(out).write_text(json.dumps(result))
    """
)


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def store(tmp_path):
    """A key overwritten once (its first attempt superseded), a killed save of another key
    (segments written, never committed) and an empty data type.
    """
    fe = DirectoryFrontend(str(tmp_path / "s"), chunk_target_mb=0.002)
    parts, intervals = make_run([300, 0, 120], seed=1)
    fe.saver(KEY, STRAX_DTYPE).save(parts, intervals).compute()
    parts, intervals = make_run([250, 40], seed=2)
    fe.saver(KEY, STRAX_DTYPE, overwrite=True).save(parts, intervals).compute()
    committed = np.concatenate(parts)
    killed = fe.saver(KILLED, STRAX_DTYPE)
    for data, (a, b) in zip(*make_run([400, 300], seed=3), strict=True):
        killed.save_partition(data, a, b)  # then the process "dies": no close(), no abort()
    fe.saver(EMPTY, STRAX_DTYPE).save([np.zeros(0, STRAX_DTYPE)], [(0, 10)]).compute()
    np.save(tmp_path / "expected.npy", committed)
    return fe, tmp_path / "s", committed


def _key_dir(root, key: DataKey):
    return root / "data" / key.run_id / key.name


def test_the_recipe_sees_exactly_the_committed_data(store, tmp_path):
    fe, root, committed = store
    out = tmp_path / "out.json"
    res = _run(READER, str(_key_dir(root, KEY)), str(tmp_path / "expected.npy"), str(out), RECIPE)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    assert not got["strata_imported"]
    assert got["rows"] == len(committed) == 290  # not 290 + 420 of the superseded attempt
    assert got["exact"]
    attempt = fe.loader(KEY).manifest.attempt
    assert got["groups"] == [attempt, f"{attempt}/s000000", f"{attempt}/s000001"]
    assert got["arrays"] == 2 * len(STRAX_DTYPE.names)


def test_a_key_that_never_committed_does_not_open(store):
    _, root, _ = store
    code = (
        "import sys, zarr\n"
        "try:\n    zarr.open_group(sys.argv[1], mode='r')\n"
        "except Exception as e:\n    print(type(e).__name__)\nelse:\n    print('opened')\n"
    )
    res = _run(code, str(_key_dir(root, KILLED)))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "GroupNotFoundError"


def test_every_attempt_no_commit_names_carries_a_marker(store):
    fe, root, _ = store
    committed = fe.loader(KEY).manifest.attempt
    seen = {}
    for key in (KEY, KILLED):
        for d in sorted(p for p in _key_dir(root, key).iterdir() if p.is_dir()):
            seen[(key.data_type, d.name)] = sorted(
                m for m in ("strata.lease", "strata.superseded") if (d / m).exists()
            )
            attrs = (
                json.loads((d / "zarr.json").read_text())["attributes"]
                if (d / "zarr.json").exists()
                else None
            )
            if attrs is not None:  # an attempt group states the rule itself
                assert "committed only if" in attrs["strata"]["rule"]
    markers = {name: m for (_, name), m in seen.items()}
    assert markers.pop(committed) == []  # the committed attempt: no marker
    assert len(markers) == 2  # the superseded attempt and the killed one
    assert sorted(markers.values()) == [["strata.lease"], ["strata.superseded"]]
    superseded = next(n for n, m in markers.items() if m == ["strata.superseded"])
    note = json.loads((_key_dir(root, KEY) / superseded / "strata.superseded").read_text())
    assert note["superseded_by"] == committed


def test_an_empty_data_type_is_zero_length_arrays_of_its_dtype(store, tmp_path):
    fe, root, _ = store
    code = textwrap.dedent(
        """
        import json, sys
        import xarray as xr
        url = sys.argv[1]
        tree = xr.open_datatree(url, engine="zarr")
        attempt = tree[tree.attrs["strata"]["attempt"]]
        ds = xr.concat([attempt[s].to_dataset() for s in sorted(attempt.children)], dim="row")
        print(json.dumps({f: [str(ds[f].dtype), list(ds[f].shape)] for f in ds.data_vars}))
        """
    )
    res = _run(code, str(_key_dir(root, EMPTY)))
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    want = {f: [str(STRAX_DTYPE[f].base), [0, *STRAX_DTYPE[f].shape]] for f in STRAX_DTYPE.names}
    assert got == want
    assert fe.loader(EMPTY).to_numpy().dtype == STRAX_DTYPE
    assert len(fe.loader(EMPTY).to_numpy()) == 0
