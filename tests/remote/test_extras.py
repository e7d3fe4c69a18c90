"""The optional dependencies of remote storage are imported lazily, with an install hint."""

from __future__ import annotations

import subprocess
import sys


def test_missing_extra_names_the_install_command():
    code = (
        "import sys; sys.modules['s3fs'] = None; sys.modules['sshfs'] = None\n"
        "from strata.storage import ZarrBackend\n"
        "for url, extra in (('s3://bucket/x', 's3'), ('ssh://host/x', 'ssh')):\n"
        "    try:\n"
        "        ZarrBackend(url).fs\n"
        "    except ImportError as e:\n"
        "        assert f\"pip install 'strata-lineage[{extra}]'\" in str(e), e\n"
        "    else:\n"
        "        raise AssertionError(url)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
