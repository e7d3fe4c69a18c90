"""Automatic plugin versions (``version = None``), as strax's ``__version__ = None``.

Follows strax's test_auto_lineage (tests/test_context.py): the version is derived from the
code, survives a redefinition with nothing changed, changes with the code; plus what strata
promises beyond it: comments and docstrings do not count, and the version is the same in
another process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from strata.pipeline import Context, Plugin, PluginDefinitionError, auto_version
from tests.cluster.conftest import ROOT
from tests.pipeline import toys

SOURCE = '''
import numpy as np
from strata.pipeline import Option, Plugin

class Develop(Plugin):
    """A plugin under development."""

    provides = "develop"
    depends_on = "ticks"
    version = None
    dtype = [("time", np.int64), ("endtime", np.int64), ("value", np.float64)]
    scale = Option(default={scale}, type=float)

    def compute(self, ticks, start, end):
        {comment}
        out = ticks.copy()
        out["value"] = ticks["value"] * {factor}  # the algorithm
        return out
'''


def load(tmp_path, name, **fmt):
    values = {"scale": 1.0, "comment": "# nothing", "factor": 2, **fmt}
    path = tmp_path / f"{name}.py"
    path.write_text(SOURCE.format(**values))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Develop


def test_auto_lineage(frontend, calls):
    ctx = Context(storage=[frontend], register=[toys.Ticks, toys.AutoTicks])
    key = ctx.key_for("r1", "auto_ticks")
    version = toys.AutoTicks.resolved_version()
    assert version.startswith("auto_") and len(version) > len("auto_")
    assert key.lineage["auto_ticks"][1] == version
    ctx.make("r1", "auto_ticks")
    assert ctx.is_stored("r1", "auto_ticks")
    assert frontend.get_metadata(key).metadata["version"] == version
    ctx.set_context_config({"forbid_creation_of": "*"})
    assert len(ctx.get_array("r1", "auto_ticks")) == 20

    # a new class with the same properties (and name) has the same version
    class AutoTicks(toys.AutoTicks):
        pass

    assert Context(register=[AutoTicks]).key_for("r1", "auto_ticks") == key

    # other code: another version, another key
    class AutoTicks(toys.AutoTicks):  # type: ignore[no-redef]
        def compute(self, start: int, end: int) -> np.ndarray:
            return super().compute(start, end)

    assert AutoTicks.resolved_version() != version
    assert Context(register=[AutoTicks]).key_for("r1", "auto_ticks") != key


def test_comments_docstrings_and_formatting_do_not_count(tmp_path):
    base = auto_version(load(tmp_path, "a"))
    assert auto_version(load(tmp_path, "b", comment="# a comment")) == base
    assert auto_version(load(tmp_path, "c", comment='"""A docstring of compute."""')) == base
    assert auto_version(load(tmp_path, "g", comment="unused = 1")) != base  # code is code
    assert auto_version(load(tmp_path, "d", factor="(2)")) == base  # same syntax tree
    assert auto_version(load(tmp_path, "e", factor=3)) != base
    # option values enter the lineage on their own, not the version
    assert auto_version(load(tmp_path, "f", scale=5.0)) == base


def test_changed_attributes_change_the_version():
    class A(toys.Doubled):
        version = None

    class B(toys.Doubled):
        version = None
        save_when = toys.SaveWhen.EXPLICIT

    class C(toys.Doubled):
        version = None
        dtype = np.dtype([("time", np.int64), ("endtime", np.int64), ("value", np.float32)])

    class D(toys.Doubled):
        version = None
        lookup = (1, 2, 3)

    versions = {auto_version(c) for c in (A, B, C, D)}
    assert len(versions) == 4


def test_the_same_in_another_process():
    here = toys.AutoTicks.resolved_version()
    code = "from tests.pipeline import toys; print(toys.AutoTicks.resolved_version())"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == here


def test_classes_without_source_or_with_unstable_attributes_are_refused():
    namespace: dict[str, object] = {"Plugin": Plugin, "np": np}
    exec(  # a class typed into an interpreter: Python keeps no source for it
        textwrap.dedent(
            """
            class Typed(Plugin):
                provides = "typed"
                version = None
                dtype = [("time", np.int64), ("endtime", np.int64)]
                def partitions(self, run_id):
                    return [(0, 10)]
                def compute(self, start, end):
                    return np.zeros(0, self.dtype_of("typed"))
            """
        ),
        namespace,
    )
    with pytest.raises(PluginDefinitionError, match=r"cannot read the source of Typed\.compute"):
        Context(register=[namespace["Typed"]])

    class Unstable(toys.Doubled):
        version = None
        helper = object()

    with pytest.raises(PluginDefinitionError, match=r"Unstable\.helper = <object object at"):
        Context(register=[Unstable])

    class Bad(toys.Doubled):
        version = 1.5  # type: ignore[assignment]

    with pytest.raises(PluginDefinitionError, match="version must be a string"):
        Context(register=[Bad])
