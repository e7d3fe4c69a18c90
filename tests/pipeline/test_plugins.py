"""Plugin classes, options and output validation, without a Context."""

from __future__ import annotations

import numpy as np
import pytest

from strata.pipeline import (
    Option,
    OptionError,
    OptionTypeError,
    Plugin,
    PluginDefinitionError,
    PluginOutputError,
    SaveWhen,
)
from strata.pipeline.build import align_intervals
from tests.pipeline import toys


def test_options_resolve_on_instances_and_defaults_apply():
    p = toys.Doubled(factor=3.0)
    assert p.factor == 3.0
    assert p.verbose is False
    assert toys.Doubled().factor == 2.0
    assert set(toys.Doubled.takes_config) == {"factor", "verbose"}
    assert isinstance(toys.Doubled.factor, Option)  # the class attribute is the declaration


def test_options_are_inherited_and_read_only():
    assert set(toys.NeverSaved.takes_config) == {"factor", "verbose"}
    p = toys.Doubled()
    with pytest.raises(AttributeError, match="read-only"):
        p.factor = 5.0


def test_unknown_option_and_wrong_type_on_instantiation():
    with pytest.raises(OptionError, match=r"no option\(s\) \['fator'\]"):
        toys.Doubled(fator=3.0)
    with pytest.raises(OptionTypeError, match="option 'factor' of Doubled: expected float"):
        toys.Doubled(factor="three")
    # ints are fine for floats, bools are not ints
    assert toys.Doubled(factor=3).factor == 3
    with pytest.raises(OptionTypeError):
        toys.Ticks(n_per_partition=True)


def test_from_run_option_without_a_context_says_so():
    p = toys.Gained()
    with pytest.raises(OptionError, match=r"read from run metadata \('calibration.gain'\)"):
        _ = p.gain
    assert toys.Gained(gain=2.0).gain == 2.0


def test_bad_option_declarations_fail_at_class_creation():
    with pytest.raises(OptionTypeError, match="default of option 'n'"):

        class BadDefault(Plugin):
            n = Option(default="x", type=int)

    with pytest.raises(PluginDefinitionError, match="reserved"):

        class Reserved(Plugin):
            dtype = toys.VALUE_DTYPE
            version = Option(default="1")

    with pytest.raises(OptionError, match="dotted path"):
        Option(from_run="a..b")
    with pytest.raises(OptionTypeError, match="must be a type"):
        Option(type="int")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        ({}, "provides nothing"),
        ({"provides": "x"}, "declares no dtype"),
        ({"provides": "x", "dtype": [("a", "f8")]}, "int64 'time' field"),
        ({"provides": "x-y", "dtype": toys.VALUE_DTYPE}, "invalid data_type"),
        ({"provides": ("a", "b"), "dtype": toys.VALUE_DTYPE}, "give dtype as a dict"),
        ({"provides": "x", "dtype": toys.VALUE_DTYPE}, "does not define compute"),
        (
            {"provides": "x", "dtype": toys.VALUE_DTYPE, "compute": lambda self, start, end: 0},
            "must define partitions",
        ),
        (
            {
                "provides": "x",
                "depends_on": "ticks",
                "dtype": toys.VALUE_DTYPE,
                "compute": lambda self, start, end: 0,
            },
            r"does not accept \['ticks'\]",
        ),
        (
            {"provides": "x", "depends_on": "x", "dtype": toys.VALUE_DTYPE},
            "depends on what it provides",
        ),
        (
            {"provides": "x", "dtype": toys.VALUE_DTYPE, "save_when": "sometimes"},
            "save_when must be a SaveWhen",
        ),
        (
            {"provides": "x", "dtype": {"y": toys.VALUE_DTYPE}},
            r"names \['y'\], which it does not provide",
        ),
    ],
)
def test_malformed_plugin_classes_are_refused(attrs, match):
    cls = type("Bad", (Plugin,), attrs)
    with pytest.raises(PluginDefinitionError, match=match):
        cls.validate_class()


def test_class_description():
    assert toys.Split.outputs() == ("low", "high")
    assert toys.Split.multi_output()
    assert toys.Ticks.is_source()
    assert not toys.Doubled.is_source()
    assert toys.TickInfo.kind_of("tick_info") == "ticks"
    assert toys.Doubled.kind_of("doubled") == "doubled"
    assert toys.NeverSaved.save_when_of("never_saved") is SaveWhen.NEVER
    assert toys.Doubled.save_when_of("doubled") is SaveWhen.ALWAYS
    for cls in toys.TOYS:
        cls.validate_class()


def test_titles_are_help_not_part_of_the_stored_dtype():
    p = toys.Ticks()
    assert p.dtype_of("ticks") == toys.VALUE_DTYPE
    assert p.field_help_of("ticks") == {
        "time": "Start time [ns]",
        "endtime": "End time [ns]",
        "value": "A wiggly value",
    }
    # an array made with the titled dtype is accepted
    titled = np.zeros(2, dtype=toys.Ticks.dtype)
    titled["time"] = [0, 1]
    out = p._check_output("ticks", titled, 0, 100, "here")
    assert out.dtype == toys.VALUE_DTYPE


def test_compute_partition_returns_validated_outputs():
    ticks = toys.ticks_numpy(0, 100, 5)
    out = toys.Split(run_id="r1").compute_partition(0, 0, 100, {"ticks": ticks})
    assert set(out) == {"low", "high"}
    assert len(out["low"]) + len(out["high"]) == 5
    np.testing.assert_array_equal(np.sort(np.concatenate([out["low"], out["high"]])), ticks)


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("dtype", "returned dtype .* differs from the declared"),
        ("bounds", "ends at 305, after the partition end 300"),
        ("unsorted", "times are not sorted"),
        ("list", "expected a numpy structured array, got list"),
    ],
)
def test_bad_output_names_plugin_run_and_partition(how, match):
    p = toys.Broken(run_id="run_7", how=how)
    ticks = toys.ticks_numpy(200, 300, 5)
    with pytest.raises(PluginOutputError, match=match) as e:
        p.compute_partition(2, 200, 300, {"ticks": ticks})
    assert "Broken (run 'run_7', partition 2 [200, 300))" in str(e.value)


def test_multi_output_must_return_every_output():
    class Half(toys.Split):
        def compute(self, ticks, start, end):
            return {"low": ticks[:0]}

    with pytest.raises(PluginOutputError, match=r"no data for output\(s\) \['high'\]"):
        Half(run_id="r").compute_partition(0, 0, 100, {"ticks": toys.ticks_numpy(0, 100, 5)})


def test_source_partitions_are_validated():
    class Overlapping(toys.Ticks):
        def partitions(self, run_id):
            return [(0, 100), (50, 150)]

    with pytest.raises(PluginOutputError, match="partition 1 \\[50, 150\\) is out of time order"):
        Overlapping().checked_partitions("r")

    class NotInts(toys.Ticks):
        def partitions(self, run_id):
            return [("a", "b")]

    with pytest.raises(PluginOutputError, match="must return"):
        NotInts().checked_partitions("r")


@pytest.mark.parametrize(
    ("lists", "expected"),
    [
        ([[(0, 10), (10, 20)]], [(0, 10), (10, 20)]),
        ([[(0, 10), (10, 20)], [(0, 5), (5, 10), (10, 20)]], [(0, 10), (10, 20)]),
        ([[(0, 10), (10, 20)], [(0, 15), (15, 20)]], [(0, 20)]),
        (
            [[(0, 100), (100, 200), (200, 300), (300, 400)], [(0, 150), (150, 300), (300, 400)]],
            [(0, 300), (300, 400)],
        ),
        # gaps: an output interval no input covers is dropped
        ([[(0, 10), (20, 30)], [(0, 10), (20, 30)]], [(0, 10), (20, 30)]),
        ([[(0, 10)], [(20, 30)]], [(0, 10), (20, 30)]),
    ],
)
def test_align_intervals(lists, expected):
    intervals, members = align_intervals(lists)
    assert intervals == expected
    for j, ivs in enumerate(lists):
        # every input interval is in exactly one output interval, and inside it
        seen = sorted(k for m in members[j] for k in m)
        assert seen == list(range(len(ivs)))
        for i, m in enumerate(members[j]):
            for k in m:
                assert intervals[i][0] <= ivs[k][0]
                assert ivs[k][1] <= intervals[i][1]
