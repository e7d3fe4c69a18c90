"""Opening frontends and backends by URL scheme."""

from __future__ import annotations

import pytest

from strata.storage import DirectoryFrontend, ZarrBackend, open_backend, open_frontend


def test_paths_and_urls(tmp_path):
    fe = open_frontend(str(tmp_path))
    assert isinstance(fe, DirectoryFrontend)
    assert fe.backend.root == str(tmp_path)
    assert open_frontend(f"file://{tmp_path}").backend.root == str(tmp_path)
    assert isinstance(open_frontend("memory://x"), DirectoryFrontend)
    assert isinstance(open_backend(str(tmp_path)), ZarrBackend)
    assert open_frontend(fe) is fe


def test_unknown_scheme_lists_known_ones():
    with pytest.raises(ValueError) as e:
        open_frontend("nosuchscheme://bucket/x")
    msg = str(e.value)
    assert "nosuchscheme" in msg and "file" in msg and "memory" in msg and "s3" in msg


def test_frontend_kwargs_pass_through(tmp_path):
    fe = open_frontend(str(tmp_path), readonly=True, take_only=("peaks",))
    assert fe.readonly and fe.take_only == ("peaks",)
    assert not fe.takes("records")
