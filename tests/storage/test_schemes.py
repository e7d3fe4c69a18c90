"""One registry of frontends by URL scheme, one of transports by fsspec protocol."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.dirfs import DirFileSystem

import strata.storage.fs as strata_fs
from strata.storage import (
    DataExistsError,
    DataKey,
    DirectoryFrontend,
    ZarrBackend,
    open_backend,
    open_frontend,
)
from strata.storage.fs import (
    TRANSPORTS,
    exclusive_write,
    get_transport,
    open_fs,
    register_transport,
    split_url,
)
from strata.storage.fs.memory import MemoryTransport
from strata.storage.registry import FRONTENDS, register_frontend
from tests.helpers import STRAX_DTYPE, lineage, make_run

FS_DIR = Path(strata_fs.__file__).parent


class MyCatalog(DirectoryFrontend):
    """A catalog for a scheme that is no fsspec protocol: ``<scheme>://name`` lives in memory."""

    def __init__(self, url: str, **kwargs):
        self.given_url = url
        super().__init__(f"memory://my-catalogs/{url.split('://', 1)[1]}", **kwargs)


@pytest.fixture
def scheme():
    """A scheme no other test registers (the registry lives as long as the process)."""
    return f"mycat{uuid.uuid4().hex[:8]}"


# -- frontends ---------------------------------------------------------------------------------
def test_custom_scheme_with_a_factory(scheme):
    register_frontend(scheme, MyCatalog)
    fe = open_frontend(f"{scheme}://x", readonly=True)
    assert isinstance(fe, MyCatalog) and fe.given_url == f"{scheme}://x" and fe.readonly
    assert FRONTENDS[scheme] is MyCatalog
    # a +driver suffix maps to the entry, as postgresql+psycopg does to postgresql
    assert isinstance(open_frontend(f"{scheme}+v2://y"), MyCatalog)
    # a scheme of any case
    assert isinstance(open_frontend(f"{scheme.upper()}://z"), MyCatalog)


def test_custom_scheme_with_a_lazy_import_path(scheme, tmp_path, monkeypatch):
    module = f"lazy_frontend_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from tests.storage.test_schemes import MyCatalog\n\nclass Lazy(MyCatalog):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    register_frontend(scheme, f"{module}:Lazy")
    assert module not in sys.modules  # registering imports nothing
    assert FRONTENDS[scheme] == f"{module}:Lazy"
    fe = open_frontend(f"{scheme}://x")
    assert type(fe).__name__ == "Lazy" and module in sys.modules
    assert isinstance(fe, MyCatalog)


def test_lazy_path_into_this_module(scheme):
    register_frontend(scheme, "tests.storage.test_schemes:MyCatalog")
    assert type(open_frontend(f"{scheme}://x")) is MyCatalog


def test_lazy_path_that_does_not_import(scheme):
    register_frontend(scheme, "no_such_module_for_strata:Frontend")
    with pytest.raises(ImportError, match="no_such_module_for_strata:Frontend"):
        open_frontend(f"{scheme}://x")
    register_frontend(scheme + "b", "tests.storage.test_schemes:NoSuchClass")
    with pytest.raises(ImportError, match="NoSuchClass"):
        open_frontend(f"{scheme}b://x")


def test_bad_registrations_are_refused(scheme):
    with pytest.raises(ValueError, match=r"package\.module:attribute"):
        register_frontend(scheme, "tests.storage.test_schemes.MyCatalog")
    with pytest.raises(ValueError, match="plain word"):
        register_frontend("s3://", MyCatalog)


def test_clobber_refusal(scheme):
    register_frontend(scheme, MyCatalog)
    with pytest.raises(ValueError, match=f"{scheme}.*clobber=True"):
        register_frontend(scheme, DirectoryFrontend)
    assert FRONTENDS[scheme] is MyCatalog
    with pytest.raises(ValueError, match="clobber=True"):
        register_frontend("file", MyCatalog)  # built-ins too
    register_frontend(scheme, "tests.storage.test_schemes:MyCatalog", clobber=True)
    assert FRONTENDS[scheme] == "tests.storage.test_schemes:MyCatalog"


def test_the_public_views_are_read_only():
    with pytest.raises(TypeError):
        FRONTENDS["evil"] = MyCatalog  # type: ignore[index]
    with pytest.raises(TypeError):
        del FRONTENDS["file"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        TRANSPORTS["evil"] = MemoryTransport()  # type: ignore[index]
    assert FRONTENDS["sqlite"] == "strata.storage.frontends.sql:SQLFrontend"


def test_factory_must_return_a_frontend(scheme):
    register_frontend(scheme, lambda url, **kw: "not a frontend")
    with pytest.raises(TypeError, match="not a StorageFrontend"):
        open_frontend(f"{scheme}://x")


def test_unknown_scheme_lists_the_known_ones(scheme):
    register_frontend(scheme, MyCatalog)
    with pytest.raises(ValueError) as e:
        open_frontend("nosuchscheme://u:pw@bucket/x")
    msg = str(e.value)
    for known in ("file", "memory", "sqlite", "postgresql", scheme, "s3", "ssh"):
        assert known in msg
    assert "fsspec protocol" in msg and "register_frontend" in msg and "strata.frontends" in msg
    assert ":pw@" not in msg
    with pytest.raises(ValueError, match="nosuchscheme"):
        open_backend("nosuchscheme://bucket/x")


def test_fsspec_protocols_get_directory_catalogs(tmp_path):
    # no frontend is registered for these: any fsspec protocol is a directory catalog
    assert "s3" not in FRONTENDS and "ssh" not in FRONTENDS
    assert isinstance(open_frontend("s3://bucket/x"), DirectoryFrontend)
    assert isinstance(open_frontend("http://example.invalid/x"), DirectoryFrontend)
    assert isinstance(open_backend("memory://x"), ZarrBackend)


def test_entry_point_adds_a_frontend(tmp_path):
    dist = tmp_path / "strata_thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: strata-thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[strata.frontends]\nthirdparty = strata_thirdparty_frontend:ThirdParty\n"
    )
    (tmp_path / "strata_thirdparty_frontend.py").write_text(
        textwrap.dedent(
            """
            from strata.storage import DirectoryFrontend

            class ThirdParty(DirectoryFrontend):
                def __init__(self, url, **kwargs):
                    super().__init__("memory://thirdparty/" + url.split("://", 1)[1], **kwargs)
            """
        )
    )
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from strata.storage import open_frontend
        from strata.storage.registry import FRONTENDS
        assert "strata_thirdparty_frontend" not in sys.modules
        fe = open_frontend("thirdparty://x", readonly=True)
        assert type(fe).__name__ == "ThirdParty" and fe.readonly, fe
        assert fe.url == "memory://thirdparty/x", fe.url
        assert FRONTENDS["thirdparty"] == "strata_thirdparty_frontend:ThirdParty"
        try:
            open_frontend("nosuchscheme://x")
        except ValueError as e:
            assert "thirdparty" in str(e), e
        else:
            raise AssertionError("nosuchscheme")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_sql_extra_names_the_install_command():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sqlalchemy"] = None
        from strata.storage import MissingDependency, open_frontend
        for url in ("sqlite:///x.db", "postgresql+psycopg://strata:pw@db/cat", "postgres://db/c"):
            try:
                open_frontend(url)
            except MissingDependency as e:
                assert "pip install 'strata-lineage[sql]'" in str(e), e
                assert ":pw@" not in str(e), e
            else:
                raise AssertionError(url)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- transports --------------------------------------------------------------------------------
def test_transports_by_protocol():
    assert {"file", "local", "memory", "s3", "s3a", "ssh", "sftp"} <= set(TRANSPORTS)
    assert get_transport("s3").name == "s3" and get_transport("sftp").name == "ssh"
    assert get_transport("gcs").name == "fsspec"  # the fallback
    assert split_url("postgresql+psycopg://h/db") == ("postgresql+psycopg", "h/db")
    assert split_url("local:///a/../b") == ("file", "/b")


def test_exclusive_write_on_a_filesystem_without_one():
    fs = DirFileSystem("/strata-test", fsspec.filesystem("memory"))
    with pytest.raises(NotImplementedError) as e:
        exclusive_write(fs, "manifest.json", b"{}")
    msg = str(e.value)
    assert "'dir'" in msg
    for known in ("file", "memory", "s3", "ssh", "sftp"):
        assert known in msg


class PrefixedMemory(MemoryTransport):
    """A transport of its own for ``mem2://``: fsspec's memory filesystem under /mem2."""

    name = "mem2"

    def open(self, url, options, asynchronous):
        return super().open(f"memory://mem2/{url.split('://', 1)[1]}", options, asynchronous)


def test_a_registered_transport_serves_frontends_and_commits():
    protocol = f"mem{uuid.uuid4().hex[:6]}"
    register_transport(protocol, PrefixedMemory())
    with pytest.raises(ValueError, match="clobber"):
        register_transport(protocol, MemoryTransport())
    fs, root = open_fs(f"{protocol}://store")
    assert root == "/mem2/store"
    fe = open_frontend(f"{protocol}://store")  # no fsspec protocol, but strata's transport
    assert isinstance(fe, DirectoryFrontend)
    parts, intervals = make_run([5, 7])
    key = DataKey("run_1", "records", lineage("records"))
    fe.saver(key, STRAX_DTYPE).save(parts, intervals).compute()  # commits with exclusive_write
    assert fs.exists(f"{root}/data/run_1")
    with pytest.raises(DataExistsError):
        fe.saver(key, STRAX_DTYPE)


def test_s3_filesystem_pickles_by_reference():
    fs, root = get_transport("s3").open(
        "s3://bucket/prefix", {"endpoint_url": "http://127.0.0.1:9", "anon": True}, False
    )
    cls = type(fs)
    assert cls.__module__ == "strata.storage.fs.s3" and cls.__qualname__ == "StrataS3FileSystem"
    from strata.storage.fs import s3

    assert s3.StrataS3FileSystem is cls
    clone = pickle.loads(pickle.dumps(fs))
    assert type(clone) is cls and root == "bucket/prefix"
    from strata.storage.fs import ssh

    assert ssh.StrataSSHFileSystem.__module__ == "strata.storage.fs.ssh"


@pytest.mark.parametrize(
    "module", sorted(p.stem for p in FS_DIR.glob("*.py") if p.stem != "__init__")
)
def test_transport_modules_import_alone(module):
    # each module imports in a fresh process, and never from the package that dispatches to it
    subprocess.run(
        [sys.executable, "-c", f"import strata.storage.fs.{module}"], check=True, timeout=120
    )
    tree = ast.parse((FS_DIR / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            assert node.module, f"{module}.py imports from its package's __init__"
        if isinstance(node, ast.ImportFrom) and node.level == 2:
            assert node.module != "fs", f"{module}.py imports strata.storage.fs"
