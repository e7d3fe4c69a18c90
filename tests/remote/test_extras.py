"""The optional dependencies of remote storage are imported lazily, with an install hint."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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


def test_missing_extra_when_opening_by_url():
    code = textwrap.dedent(
        """
        import pickle, sys
        sys.modules["s3fs"] = None
        sys.modules["sshfs"] = None
        from strata.storage import MissingDependency, open_backend, open_frontend
        from strata.storage.fs import zarr_store
        urls = [
            ("s3://bucket/x", "s3"),
            ("s3a://bucket/x", "s3"),
            ("ssh://u:pw@host/x", "ssh"),
            ("sftp://host/x", "ssh"),
        ]
        for url, extra in urls:
            for opener in (open_frontend, open_backend, zarr_store):
                try:
                    opener(url)
                except MissingDependency as e:
                    assert f"pip install 'strata-lineage[{extra}]'" in str(e), e
                    assert ":pw@" not in str(e), e
                    # it travels from Dask workers intact
                    assert str(pickle.loads(pickle.dumps(e))) == str(e)
                else:
                    raise AssertionError((opener, url))
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_importing_strata_imports_no_optional_dependency():
    code = textwrap.dedent(
        """
        import sys
        import strata.storage, strata.storage.fs, strata.storage.registry
        from strata.storage import open_frontend, ZarrBackend
        open_frontend("memory://x")
        ZarrBackend("s3://bucket/x")  # nothing is opened before it is used
        heavy = ("s3fs", "sshfs", "asyncssh", "botocore", "aiobotocore", "sqlalchemy")
        loaded = [m for m in heavy if m in sys.modules]
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
