"""Lineage and keys from the plugin graph; configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from strata.pipeline import Context, OptionError, OptionTypeError, UnknownDataType
from tests.pipeline import toys


@pytest.fixture
def ctx(frontend):
    frontend.write_run_metadata("r1", {"calibration": {"gain": 2.0}})
    frontend.write_run_metadata("r2", {"calibration": {"gain": 3.0}})
    return Context(storage=[frontend], register=toys.TOYS)


def test_lineage_format(ctx):
    assert ctx.lineage("r1", "doubled") == {
        "doubled": ["Doubled", "1", {"factor": 2}],
        "ticks": [
            "Ticks",
            "1",
            {"n_per_partition": 5, "partition_ns": 100, "n_partitions": 4, "offset": 0},
        ],
    }
    key = ctx.key_for("r1", "doubled")
    assert key.run_id == "r1"
    assert key.data_type == "doubled"
    assert str(key) == f"r1-doubled-{key.lineage_hash}"


def test_upstream_tracked_option_changes_downstream_keys(ctx):
    before = {t: ctx.key_for("r1", t) for t in ("ticks", "doubled", "combined", "low")}
    ctx.set_config({"offset": 1.5})
    after = {t: ctx.key_for("r1", t) for t in before}
    assert all(before[t] != after[t] for t in before)
    assert ctx.lineage("r1", "doubled")["ticks"][2]["offset"] == 1.5


def test_own_option_changes_own_key_not_upstream(ctx):
    ticks, doubled = ctx.key_for("r1", "ticks"), ctx.key_for("r1", "doubled")
    ctx.set_config({"factor": 3.0})
    assert ctx.key_for("r1", "ticks") == ticks
    assert ctx.key_for("r1", "doubled") != doubled


def test_untracked_option_does_not_change_keys(ctx):
    doubled = ctx.key_for("r1", "doubled")
    ctx.set_config({"verbose": True})
    assert ctx.key_for("r1", "doubled") == doubled
    assert "verbose" not in ctx.lineage("r1", "doubled")["doubled"][2]


def test_version_and_class_of_an_upstream_plugin_change_keys(ctx):
    doubled = ctx.key_for("r1", "doubled")

    class TicksV2(toys.Ticks):
        version = "2"

    ctx.register(TicksV2)
    assert ctx.key_for("r1", "doubled") != doubled
    assert ctx.lineage("r1", "doubled")["ticks"][:2] == ["TicksV2", "2"]

    class OtherTicks(toys.Ticks):
        pass

    ctx.register(OtherTicks)
    assert ctx.lineage("r1", "doubled")["ticks"][:2] == ["OtherTicks", "1"]
    ctx.register(toys.Ticks)
    assert ctx.key_for("r1", "doubled") == doubled


def test_setting_an_option_to_its_default_keeps_the_key(ctx):
    doubled = ctx.key_for("r1", "doubled")
    ctx.set_config({"factor": 2})  # int 2 == float 2.0 in canonical JSON
    assert ctx.key_for("r1", "doubled") == doubled


def test_from_run_option_enters_the_lineage_per_run(ctx):
    l1, l2 = ctx.lineage("r1", "gained"), ctx.lineage("r2", "gained")
    assert l1["gained"][2] == {"gain": 2}
    assert l2["gained"][2] == {"gain": 3}
    assert ctx.key_for("r1", "gained").lineage_hash != ctx.key_for("r2", "gained").lineage_hash
    # types not reading the run document have the same lineage in both runs
    assert ctx.key_for("r1", "ticks").lineage_hash == ctx.key_for("r2", "ticks").lineage_hash


def test_from_run_option_result_uses_the_run_value(ctx):
    got = ctx.get_array("r2", "gained")
    np.testing.assert_allclose(got["value"], ctx.get_array("r2", "ticks")["value"] * 3.0)


def test_config_overrides_from_run(ctx):
    ctx.set_config({"gain": 5.0})
    assert ctx.lineage("r1", "gained")["gained"][2] == {"gain": 5}


def test_missing_run_field_names_run_option_and_path(ctx, frontend):
    frontend.write_run_metadata("r3", {"calibration": {"other": 1}})
    with pytest.raises(OptionError) as e:
        ctx.key_for("r3", "gained")
    msg = str(e.value)
    assert "run 'r3'" in msg
    assert "option 'gain' of Gained" in msg
    assert "'calibration.gain'" in msg


def test_missing_run_document(ctx):
    with pytest.raises(OptionError, match=r"run 'nodoc'.*there is no run metadata"):
        ctx.key_for("nodoc", "gained")
    # a type that needs no run metadata is fine
    assert ctx.key_for("nodoc", "ticks").run_id == "nodoc"


def test_wrong_type_from_run(ctx, frontend):
    frontend.write_run_metadata("r4", {"calibration": {"gain": "high"}})
    with pytest.raises(OptionTypeError, match="run 'r4': option 'gain' of Gained: expected float"):
        ctx.key_for("r4", "gained")


def test_unknown_target_suggests_close_names(ctx):
    with pytest.raises(UnknownDataType, match=r"no registered plugin provides 'dubled'.*'doubled'"):
        ctx.key_for("r1", "dubled")
    with pytest.raises(KeyError):  # a strax user's except KeyError still works
        ctx.get_array("r1", "nothing")


def test_unknown_option_in_config(ctx):
    with pytest.raises(OptionError, match=r"unknown option 'factr'.*did you mean 'factor'"):
        ctx.set_config({"factr": 2.0})
    with pytest.raises(OptionError, match="unknown option"):
        Context(register=toys.TOYS, config={"nope": 1})


def test_wrong_option_type_in_config(ctx):
    with pytest.raises(OptionTypeError, match=r"config option 'n_per_partition'.*expected int"):
        ctx.set_config({"n_per_partition": 2.5})
    # the shared option name is checked for every plugin taking it
    with pytest.raises(OptionTypeError, match="n_partitions"):
        ctx.set_config({"n_partitions": "four"})


def test_context_options(ctx):
    with pytest.raises(OptionError, match="unknown context option 'fuzzy'"):
        ctx.set_context_config({"fuzzy": ["ticks"]})
    ctx.set_context_config({"fuzzy_for": "ticks"})
    assert ctx.context_config["fuzzy_for"] == ("ticks",)


def test_config_replace_mode(ctx):
    ctx.set_config({"factor": 3.0})
    ctx.set_config({"offset": 1.0}, mode="replace")
    assert ctx.config == {"offset": 1.0}


def test_registering_something_else_fails(ctx):
    from strata.pipeline import PluginDefinitionError

    with pytest.raises(PluginDefinitionError, match="an instance"):
        ctx.register(toys.Ticks())  # type: ignore[arg-type]
    with pytest.raises(PluginDefinitionError, match="only register Plugin subclasses"):
        ctx.register([int])  # type: ignore[list-item]


def test_dependency_cycles_are_reported():
    class A(toys.Doubled):
        provides = "a"
        depends_on = "b"

        def compute(self, b, start, end):
            return b

    class B(toys.Doubled):
        provides = "b"
        depends_on = "a"

        def compute(self, a, start, end):
            return a

    from strata.pipeline import PluginDefinitionError

    ctx = Context(register=[A, B])
    with pytest.raises(PluginDefinitionError, match="dependency cycle: a -> b -> a"):
        ctx.key_for("r", "a")


def test_register_all_of_a_module():
    ctx = Context()
    found = ctx.register_all(toys)
    assert toys.Ticks in found
    assert toys.Broken in found
    assert set(ctx.plugins) >= {"ticks", "doubled", "low", "high", "never_saved", "broken"}
