"""Secrets never show: one redaction for storage options, URLs, reprs, logs and errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from strata.storage import (
    DataKey,
    DataNotAvailable,
    DirectoryFrontend,
    StorageError,
    ZarrBackend,
    open_backend,
    open_frontend,
)
from strata.storage.fs import redact, redact_url
from strata.storage.fs.redaction import is_secret_name
from tests.helpers import STRAX_DTYPE, lineage, make_run
from tests.remote.servers import free_port

SECRET = "S3cr3t-Value-42"
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
RSA_PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"

SECRET_NAMES = [
    "password",
    "passwd",
    "pass",
    "db_pass",
    "pwd",
    "secret",
    "token",
    "key",
    "session_token",
    "aws_session_token",
    "aws_secret_access_key",
    "access_key",
    "api_key",
    "account_key",
    "credentials",
    "passphrase",
    "client_keys",
    "private_key",
    "Authorization",
    "X-Amz-Security-Token",
    "sas_token",
    "connection_string",
]
VISIBLE_NAMES = [
    "username",
    "user",
    "key_file_name",
    "keyfile",
    "known_hosts",
    "region_name",
    "profile",
    "port",
    "host",
    "bucket",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_every_secret_option_name_is_hidden(name):
    assert is_secret_name(name)
    opts = {name: SECRET, "username": "alice"}
    shown = redact(opts)
    assert shown == {name: "***", "username": "alice"}
    assert SECRET not in repr(ZarrBackend("memory://redact", storage_options=opts))


@pytest.mark.parametrize("name", VISIBLE_NAMES)
def test_non_secret_values_stay_visible(name):
    assert not is_secret_name(name)
    assert redact({name: "visible-value"}) == {name: "visible-value"}


def test_secret_names_hide_any_value_but_none_and_booleans():
    shown = redact({"token": None, "use_token": True, "key": 1234, "secret": {"a": "b"}})
    assert shown == {"token": None, "use_token": True, "key": "***", "secret": "***"}
    # what a secret name holds is hidden whole, whatever it is: a list of key files or keys
    assert redact({"client_keys": ["/home/a/.ssh/id_ed25519", PEM]}) == {"client_keys": "***"}


def test_nested_mappings_lists_and_tuples():
    opts = {
        "client_kwargs": {
            "endpoint_url": f"http://minio:{SECRET}@minio.example:9000/",
            "region_name": "eu-west-1",
            "aws_session_token": SECRET,
        },
        "config_kwargs": {"s3": {"addressing_style": "path", "deep": {"password": SECRET}}},
        "mirrors": [f"https://u:{SECRET}@a.example/x", "https://b.example/x"],
        "pair": ("plain", f"sftp://bob:{SECRET}@host/data"),
        "use_ssl": True,
        "max_pool_connections": 10,
    }
    shown = redact(opts)
    assert SECRET not in repr(shown)
    assert shown["client_kwargs"] == {
        "endpoint_url": "http://minio:***@minio.example:9000/",
        "region_name": "eu-west-1",
        "aws_session_token": "***",
    }
    assert shown["config_kwargs"] == {
        "s3": {"addressing_style": "path", "deep": {"password": "***"}}
    }
    assert shown["mirrors"] == ["https://u:***@a.example/x", "https://b.example/x"]
    assert shown["pair"] == ("plain", "sftp://bob:***@host/data")
    assert shown["use_ssl"] is True and shown["max_pool_connections"] == 10
    # a copy: the options themselves are untouched
    assert opts["client_kwargs"]["aws_session_token"] == SECRET


@pytest.mark.parametrize("material", [PEM, RSA_PEM, PEM.encode()])
def test_private_key_material_is_hidden_under_any_name(material):
    assert redact({"identity": material, "note": "kept"}) == {"identity": "***", "note": "kept"}
    assert redact({"extra": ["kept", material]}) == {"extra": ["kept", "***"]}
    assert redact(material) == "***"


def test_urls_lose_passwords_and_secret_query_values():
    assert redact_url(f"http://u:{SECRET}@host:9000/b") == "http://u:***@host:9000/b"
    assert redact_url(f"postgresql+psycopg://strata:{SECRET}@db/cat") == (
        "postgresql+psycopg://strata:***@db/cat"
    )
    # a password that holds '@' (unescaped) is still taken whole
    assert redact_url(f"ssh://u:{SECRET}@x@host/p") == "ssh://u:***@host/p"
    assert redact_url("ssh://alice@cluster:2222/data") == "ssh://alice@cluster:2222/data"
    assert (
        redact_url(
            f"https://b.s3.example/k?X-Amz-Credential=AKIA&X-Amz-Signature={SECRET}&partNumber=2"
        )
        == "https://b.s3.example/k?X-Amz-Credential=***&X-Amz-Signature=***&partNumber=2"
    )
    assert redact_url(f"postgresql://db/cat?password={SECRET}&sslmode=require#x") == (
        "postgresql://db/cat?password=***&sslmode=require#x"
    )
    # URLs inside a sentence (an error message) too; paths and plain text are left alone
    text = f"cannot reach 'http://u:{SECRET}@h:1/x' (tried 3 times)"
    assert redact_url(text) == "cannot reach 'http://u:***@h:1/x' (tried 3 times)"
    assert redact_url("/data/a:b@c") == "/data/a:b@c"
    assert redact(None) == {}


def test_reprs_of_backends_and_frontends(tmp_path):
    url = f"http://reader:{SECRET}@data.example/strata"
    opts = {"client_kwargs": {"headers": {"Authorization": f"Bearer {SECRET}"}}, "timeout": 5}
    shown = [
        ZarrBackend(url, storage_options=opts),
        open_backend(url, storage_options=opts),
        DirectoryFrontend(url, storage_options=opts),
        open_frontend(url, storage_options=opts),
        ZarrBackend("memory://x", storage_options={"passwd": SECRET, "key_file_name": "k"}),
    ]
    for obj in shown:
        assert SECRET not in repr(obj), repr(obj)
        assert SECRET not in str(obj)
    assert repr(shown[0]) == (
        "ZarrBackend('http://reader:***@data.example/strata', storage_options="
        "{'client_kwargs': {'headers': {'Authorization': '***'}}, 'timeout': 5})"
    )
    assert repr(shown[3]) == "DirectoryFrontend('http://reader:***@data.example/strata')"
    assert "'key_file_name': 'k'" in repr(shown[4])


def test_logs_and_errors_of_a_store_with_secrets(caplog):
    # fsspec's memory filesystem takes (and ignores) any option: a store with credentials
    opts = {"password": SECRET, "token": SECRET, "client_keys": [PEM]}
    fe = open_frontend("memory://redaction/store", storage_options=opts)
    key = DataKey("run_1", "records", lineage("records", threshold=1))
    parts, intervals = make_run([30, 20])
    with caplog.at_level(logging.DEBUG):
        fe.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
        np.testing.assert_array_equal(fe.loader(key).to_numpy(), np.concatenate(parts))
        missing = DataKey("run_2", "records", lineage("records", threshold=1))
        with pytest.raises(DataNotAvailable) as e:
            fe.find(missing)
    assert SECRET not in str(e.value)
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert "PRIVATE KEY" not in record.getMessage()
    assert SECRET not in repr(fe) + repr(fe.backend)


def test_s3_error_hides_endpoint_password():
    # a real refusal: nothing listens on the port; the endpoint URL carries a password
    opts = {
        "key": "AKIAEXAMPLE",
        "secret": SECRET,
        "endpoint_url": f"http://minio:{SECRET}@127.0.0.1:{free_port()}",
        "config_kwargs": {"retries": {"max_attempts": 1}},
        "retries": 1,
    }
    backend = ZarrBackend("s3://bucket/strata", storage_options=opts)
    with pytest.raises(StorageError) as e:
        backend.list_backend_keys()
    assert SECRET not in str(e.value)
    assert SECRET not in repr(backend)
