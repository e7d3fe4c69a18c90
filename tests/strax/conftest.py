"""Strax data written by the real strax 2.2.3 (in a subprocess, once per session), and copies
of it that a test may damage.

strax is installed by ``.ci/install-strax.sh`` (with ``--no-deps``: strax pins zarr < 3); the
test process itself never imports it.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from strata.storage import DataKey
from strata.storage.frontends.strax import StraxDirectoryFrontend

ROOT = Path(__file__).resolve().parents[2]
STRAX_VERSION = "2.2.3"


@dataclass(frozen=True)
class StraxData:
    """A strax ``DataDirectory`` (``path``) and what strax said about it (``expected``)."""

    path: Path
    expected: dict[str, Any]
    expected_dir: Path

    def folder(self, run_id: str, data_type: str) -> str:
        """The folder of the one key of ``data_type`` in ``run_id``."""
        (name,) = [
            f
            for f, k in self.expected["keys"].items()
            if k["run_id"] == run_id and k["data_type"] == data_type
        ]
        return name

    def key(self, run_id: str, data_type: str) -> DataKey:
        """The strata key of that folder, from the lineage strax stored."""
        k = self.expected["keys"][self.folder(run_id, data_type)]
        return DataKey(run_id, data_type, k["lineage"])

    def array(self, run_id: str, data_type: str) -> np.ndarray:
        """What strax's own ``get_array`` returned (field titles and all)."""
        return np.load(self.expected_dir / f"{self.folder(run_id, data_type)}.npy")

    def frontend(self) -> StraxDirectoryFrontend:
        """A frontend over this directory."""
        return StraxDirectoryFrontend(str(self.path))


def _strax_version() -> str | None:
    try:
        return importlib.metadata.version("strax")
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="session")
def strax_written(tmp_path_factory: pytest.TempPathFactory) -> StraxData:
    """The directory strax wrote (never modify it: use ``strax_data``)."""
    version = _strax_version()
    if version != STRAX_VERSION:
        pytest.skip(
            f"strax {STRAX_VERSION} is not installed (found {version}): bash .ci/install-strax.sh"
        )
    out = tmp_path_factory.mktemp("strax") / "written"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.strax.write_strax", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode:
        raise RuntimeError(
            f"the strax writer failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    expected = json.loads((out / "expected.json").read_text())
    return StraxData(out / "data", expected, out / "expected")


@pytest.fixture
def strax_data(strax_written: StraxData, tmp_path: Path) -> StraxData:
    """A copy of the strax directory, this test's own to read or damage."""
    dest = tmp_path / "strax_data"
    shutil.copytree(strax_written.path, dest)
    return StraxData(dest, strax_written.expected, strax_written.expected_dir)
