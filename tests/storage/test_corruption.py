"""Damaged data raises DataCorrupted naming key and chunk; other data stays readable."""

from __future__ import annotations

import numpy as np
import pytest

from strata.storage import DataCorrupted, DataKey, DirectoryFrontend
from tests.helpers import STRAX_DTYPE, lineage, make_run


@pytest.fixture
def frontend(tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "store"), chunk_target_mb=0.25)
    for dt in ("a", "b"):
        parts, intervals = make_run([1000, 1000], seed=1)
        fe.saver(DataKey("run_1", dt, lineage(dt)), STRAX_DTYPE).save(parts, intervals).compute()
    return fe


def _chunk_files(fe, key):
    m = fe.get_metadata(key)
    root = fe.backend.path("data", fe.backend.backend_key(key), m.attempt)
    return sorted(f for f in fe.backend.fs.find(root) if "/area/c/" in f)


def test_flipped_bit_raises_naming_key_and_chunk(frontend):
    key_a, key_b = (DataKey("run_1", dt, lineage(dt)) for dt in ("a", "b"))
    target = _chunk_files(frontend, key_a)[0]
    raw = bytearray(open(target, "rb").read())
    raw[len(raw) // 2] ^= 0x01
    with open(target, "wb") as f:
        f.write(raw)
    with pytest.raises(DataCorrupted) as e:
        frontend.loader(key_a, fields=["area"]).to_numpy()
    msg = str(e.value)
    assert str(key_a) in msg and "chunk" in msg and "area" in msg and "crc32c" in msg
    # other fields and other keys are intact
    assert len(frontend.loader(key_a, fields=["time"]).to_numpy()) == 2000
    assert len(frontend.loader(key_b).to_numpy()) == 2000


def test_truncated_chunk_raises(frontend):
    key = DataKey("run_1", "a", lineage("a"))
    target = _chunk_files(frontend, key)[0]
    raw = open(target, "rb").read()
    with open(target, "wb") as f:
        f.write(raw[:10])
    with pytest.raises(DataCorrupted):
        frontend.loader(key).to_numpy()


def test_run_metadata_damage(frontend):
    frontend.write_run_metadata("run_1", {"a": 1})
    path = frontend._run_path("run_1")
    frontend.backend.fs.pipe_file(path, b"{not json")
    with pytest.raises(DataCorrupted, match="run_1"):
        frontend.run_metadata("run_1")


def test_data_after_corruption_elsewhere_still_equal(frontend):
    parts, _ = make_run([1000, 1000], seed=1)
    got = frontend.loader(DataKey("run_1", "b", lineage("b"))).to_numpy()
    assert got.tobytes() == np.concatenate(parts).tobytes()
