"""Keys and lineage hashing."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from strata.storage import DataKey, InvalidKey, canonical_json, lineage_hash, lineage_matches

LINEAGE = {
    "peaks": ["Peaks", "0.2.0", {"threshold": 3.5, "channels": (0, 1, 2), "mode": "sum"}],
    "records": ["Records", "0.1.0", {"gains": [1.0, 2.0], "baseline": 40}],
}


def test_str_and_hash():
    key = DataKey("run_1", "peaks", LINEAGE)
    assert str(key) == f"run_1-peaks-{key.lineage_hash}"
    assert len(key.lineage_hash) == 12
    assert key == DataKey("run_1", "peaks", LINEAGE)
    assert len({key, DataKey("run_1", "peaks", LINEAGE)}) == 1


def test_hash_is_known_value():
    # Pinned: a change of this value changes every key ever stored.
    assert lineage_hash({"a": ["A", "1", {}]}) == lineage_hash({"a": ("A", "1", {})})
    assert lineage_hash({"a": ["A", "1", {}]}) == "rryohcng5jac"


def test_normalisation():
    a = {"x": ["X", "1", {"v": 1.0, "t": (1, 2), "n": np.int32(3), "f": np.float32(0.5)}]}
    b = {"x": ["X", "1", {"n": 3, "f": 0.5, "t": [1, 2], "v": 1}]}
    assert canonical_json(a) == canonical_json(b)
    assert lineage_hash(a) == lineage_hash(b)
    assert canonical_json({"b": 1, "a": [True, None]}) == '{"a":[true,null],"b":1}'


def test_changes_change_the_hash():
    base = lineage_hash(LINEAGE)
    for mutate in (
        lambda d: d["peaks"][2].update(threshold=3.6),
        lambda d: d["records"].__setitem__(1, "0.1.1"),
        lambda d: d["records"].__setitem__(0, "OtherRecords"),
        lambda d: d["records"][2].update(extra=None),
    ):
        d = {k: [v[0], v[1], dict(v[2])] for k, v in LINEAGE.items()}
        mutate(d)
        assert lineage_hash(d) != base


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), {1, 2}, object(), b"bytes", {1: "int key"}, np.array([[[1]]])],
)
def test_unnormalisable_values_raise(bad):
    with pytest.raises(InvalidKey, match="lineage"):
        lineage_hash({"x": ["X", "1", {"opt": bad}]})


def test_same_hash_in_another_process():
    code = f"from strata.storage import lineage_hash;print(lineage_hash({LINEAGE!r}))"
    outs = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outs.add(out.stdout.strip())
    assert outs == {lineage_hash(LINEAGE)}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a/b",
        "a\\b",
        "..",
        "a..b",
        "a-b",
        "a\x00b",
        "a b",
        "tab\t",
        "new\nline",
        "é",
        ".",
        3,
        None,
    ],
)
def test_invalid_ids(bad):
    with pytest.raises(InvalidKey) as e:
        DataKey(bad, "peaks", {})
    assert "run_id" in str(e.value)
    with pytest.raises(InvalidKey) as e:
        DataKey("run_1", bad, {})
    assert "data_type" in str(e.value)


def test_valid_ids():
    for ok in ("run_1", "007", "a.b", "R2024.01_x"):
        DataKey(ok, ok, {})


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        {"peaks": ["Peaks", "1"]},
        {"peaks": "Peaks"},
        {"pea/ks": ["Peaks", "1", {}]},
        {"peaks": [1, "1", {}]},
    ],
)
def test_invalid_lineages(bad):
    with pytest.raises(InvalidKey):
        DataKey("run_1", "peaks", bad)


def test_fuzzy_matching():
    stored = {"p": ["P", "1", {"a": 1, "b": 2}], "r": ["R", "1", {"g": 1}]}
    assert lineage_matches(stored, stored)
    other_opt = {"p": ["P", "1", {"a": 5, "b": 2}], "r": ["R", "1", {"g": 1}]}
    assert not lineage_matches(stored, other_opt)
    assert lineage_matches(stored, other_opt, fuzzy_for_options=["a"])
    other_r = {"p": ["P", "1", {"a": 1, "b": 2}], "r": ["R2", "9", {"g": 7}]}
    assert not lineage_matches(stored, other_r, fuzzy_for_options=["g"])
    assert lineage_matches(stored, other_r, fuzzy_for=["r"])
