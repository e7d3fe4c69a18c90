"""SSH against a real OpenSSH sshd: commit primitive, SSH config, ranged reads, secrets and
clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from strata.storage import DataKey, DirectoryFrontend
from strata.storage.errors import AccessDenied, AuthenticationFailed, StorageUnreachable
from strata.storage.fs import atomic_write, exclusive_write, open_fs
from strata.storage.fs.ssh import parse_ssh_url
from tests.helpers import STRAX_DTYPE, lineage, make_run
from tests.remote.fixtures import forget
from tests.remote.servers import SSHServer, blackhole, free_port, poll

KEY = DataKey("run_1", "records", lineage("records", threshold=1))
PASSPHRASE = "pass-Phrase-of-the-test-key"


def save(frontend, key=KEY, sizes=(300, 20, 0, 700), seed=0):
    parts, intervals = make_run(list(sizes), seed=seed)
    frontend.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def protected_server():
    """An sshd whose client key is protected by a passphrase."""
    with SSHServer(passphrase=PASSPHRASE) as server:
        yield server


@pytest.fixture(scope="module")
def readonly_server():
    """An sshd serving SFTP read-only: writes are refused with "permission denied"."""
    with SSHServer(sftp_readonly=True) as server:
        yield server


def test_parse_ssh_url():
    assert parse_ssh_url("ssh://h/data") == ("h", {}, "/data")
    assert parse_ssh_url("sftp://u:p%40ss@h:2200/a/b/") == (
        "h",
        {"username": "u", "port": 2200, "password": "p@ss"},
        "/a/b",
    )
    assert parse_ssh_url("ssh://h/~") == ("h", {}, ".")
    assert parse_ssh_url("ssh://h/~/x/y") == ("h", {}, "x/y")
    assert parse_ssh_url("ssh://h") == ("h", {}, "/")
    for bad in ("ssh:///path", "http://h/x", "ssh://h:port/x"):
        with pytest.raises(ValueError, match="SSH URL"):
            parse_ssh_url(bad)


# -- commit primitive and atomic replacement -------------------------------------------------
def test_exclusive_write_never_overwrites(ssh_url, ssh_options):
    fs, root = open_fs(ssh_url, ssh_options)
    path = f"{root}/k/zarr.json"
    exclusive_write(fs, path, b"first")
    with pytest.raises(FileExistsError, match="already exists: ssh://"):
        exclusive_write(fs, path, b"second")
    assert fs.cat_file(path) == b"first"
    assert fs.ls(f"{root}/k", detail=False) == [path]  # no temporary file left behind
    atomic_write(fs, path, b"replaced")
    assert fs.cat_file(path) == b"replaced"
    assert fs.ls(f"{root}/k", detail=False) == [path]


def test_ranged_reads(ssh_url, ssh_options):
    fs, root = open_fs(ssh_url, ssh_options)
    fs.pipe_file(f"{root}/f", b"0123456789")
    assert fs.cat_file(f"{root}/f", start=2, end=5) == b"234"
    assert fs.cat_file(f"{root}/f", start=-3) == b"789"
    assert fs.cat_file(f"{root}/f", start=7, end=-1) == b"78"
    assert fs.cat_file(f"{root}/f") == b"0123456789"


# -- credentials from the usual places ------------------------------------------------------
def test_host_alias_from_ssh_config(ssh_server, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host strata-test-alias\n"
        f"    HostName 127.0.0.1\n"
        f"    Port {ssh_server.port}\n"
        f"    User {ssh_server.user}\n"
        f"    IdentityFile {ssh_server.client_key}\n"
    )
    url = f"ssh://strata-test-alias{tmp_path}/store"
    opts = {"config": [str(config)], "known_hosts": str(ssh_server.known_hosts)}
    fe = DirectoryFrontend(url, storage_options=opts)
    try:
        ref = save(fe)
        assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
        assert (tmp_path / "store" / "data" / "run_1" / KEY.name / "zarr.json").exists()
    finally:
        forget(url)


# -- a dropped connection is reopened --------------------------------------------------------
def test_lost_connection_is_reopened(tmp_path):
    with SSHServer() as server:  # its own server: all its sessions are killed
        url = server.url(f"{tmp_path}/s")
        fe = DirectoryFrontend(url, storage_options=server.storage_options())
        try:
            ref = save(fe)
            clients = [fe.backend.fs, fe.backend.store.fs.sync_fs]
            assert server.drop_connections() >= 2
            poll(lambda: all(c._client.is_closed() for c in clients), "clients see the drop")
            assert [e.key for e in fe.list()] == [KEY]
            assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
            other = DataKey("run_1", "records", lineage("records", threshold=5))
            save(fe, other)
            assert fe.is_stored(other)
        finally:
            forget(url)


# -- errors --------------------------------------------------------------------------------
def test_refused_connection(ssh_server, tmp_path):
    url = f"ssh://{ssh_server.user}:Hunter2-secret@127.0.0.1:{free_port()}{tmp_path}/s"
    fe = DirectoryFrontend(url, storage_options=ssh_server.storage_options())
    with pytest.raises(StorageUnreachable, match=r"ssh://.*@127\.0\.0\.1:\d+/") as e:
        fe.find(KEY)
    assert isinstance(e.value, ConnectionError)
    assert "Hunter2-secret" not in str(e.value)
    assert "Hunter2-secret" not in repr(fe)


@pytest.mark.timeout(60)
def test_unresponsive_server_times_out(ssh_server, tmp_path):
    sock, port = blackhole()
    url = f"ssh://{ssh_server.user}@127.0.0.1:{port}{tmp_path}/s"
    try:
        fe = DirectoryFrontend(url, storage_options=ssh_server.storage_options(connect_timeout=1))
        with pytest.raises(StorageUnreachable, match="timed out connecting"):
            fe.list()
    finally:
        sock.close()


def test_unknown_host(ssh_server, tmp_path):
    url = f"ssh://nosuchhost.invalid{tmp_path}/s"
    with pytest.raises(StorageUnreachable, match=r"nosuchhost\.invalid"):
        DirectoryFrontend(url, storage_options=ssh_server.storage_options()).list()


def test_refused_authentication(ssh_server, readonly_server, ssh_url):
    other_key = readonly_server.storage_options(known_hosts=str(ssh_server.known_hosts))
    with pytest.raises(AuthenticationFailed, match=r"refused.*client_keys") as e:
        DirectoryFrontend(ssh_url, storage_options=other_key).find(KEY)
    assert isinstance(e.value, PermissionError)
    wrong_host_key = ssh_server.storage_options(known_hosts=str(readonly_server.known_hosts))
    with pytest.raises(AuthenticationFailed, match="host key"):
        DirectoryFrontend(ssh_url, storage_options=wrong_host_key).find(KEY)


def test_wrong_passphrase(protected_server, tmp_path):
    url = protected_server.url(f"{tmp_path}/s")
    opts = protected_server.storage_options(passphrase="not-" + PASSPHRASE)
    with pytest.raises(AuthenticationFailed, match="cannot load the SSH client key") as e:
        DirectoryFrontend(url, storage_options=opts).find(KEY)
    assert PASSPHRASE not in str(e.value)


def test_permission_denied_leaves_nothing_visible(ssh_server, readonly_server, tmp_path):
    # one directory, seen through a read-write and a read-only SFTP server
    rw = DirectoryFrontend(
        ssh_server.url(f"{tmp_path}/s"), storage_options=ssh_server.storage_options()
    )
    ro = DirectoryFrontend(
        readonly_server.url(f"{tmp_path}/s"), storage_options=readonly_server.storage_options()
    )
    try:
        ref = save(rw)
        new = DataKey("run_1", "records", lineage("records", threshold=2))
        parts, intervals = make_run([500, 20])
        with pytest.raises(AccessDenied, match=rf"permission denied on ssh://.*{tmp_path}/s/data"):
            ro.saver(new, STRAX_DTYPE).save(parts, intervals).compute()
        with pytest.raises(AccessDenied):
            ro.write_run_metadata("run_1", {"x": 1})
        assert ro.loader(KEY).to_numpy().tobytes() == ref.tobytes()  # reading works
        assert not rw.is_stored(new)
        assert [e.key for e in rw.list()] == [KEY]
        assert rw.gc(min_age_seconds=0) == []
    finally:
        forget(rw.url)
        forget(ro.url)


# -- secrets -------------------------------------------------------------------------------
def test_secrets_never_leak(protected_server, tmp_path, caplog):
    url = protected_server.url(f"{tmp_path}/s").replace("@", ":Url-Password-1@", 1)
    fe = DirectoryFrontend(url, storage_options=protected_server.storage_options())
    seen: list[str] = []
    try:
        with caplog.at_level("DEBUG"):
            seen += [repr(fe), repr(fe.backend), str(fe.backends)]
            parts, intervals = make_run([800, 5])
            lazy_save = fe.saver(KEY, STRAX_DTYPE).save(parts, intervals)
            seen.append(str(dict(lazy_save.__dask_graph__())))
            lazy_save.compute()
            fe.write_run_metadata("run_1", {"gain": 2})
            lazy = fe.loader(KEY)
            seen.append(str(dict(lazy.array.__dask_graph__())))
            seen += [repr(e) for e in fe.list()]
            bad = DirectoryFrontend(
                url, storage_options=protected_server.storage_options(passphrase=PASSPHRASE[::-1])
            )
            with pytest.raises(AuthenticationFailed) as e:
                bad.find(KEY)
            seen += [str(e.value), repr(e.value), repr(bad)]
        seen.append(caplog.text)
        seen += [p.read_text() for p in (tmp_path / "s").rglob("*.json")]
        assert any("strata.manifest.v3" in s for s in seen)
        for text in seen:
            for secret in (PASSPHRASE, PASSPHRASE[::-1], "Url-Password-1"):
                assert secret not in text
    finally:
        forget(url)
