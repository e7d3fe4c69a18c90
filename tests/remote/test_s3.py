"""S3 against a real server (moto): commit primitive, listing freshness, request counts,
credentials from the usual places, and clear errors.
"""

from __future__ import annotations

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError

from strata.storage import DataKey, DataNotAvailable, DirectoryFrontend
from strata.storage.errors import (
    AccessDenied,
    AuthenticationFailed,
    BucketNotFound,
    StorageUnreachable,
)
from strata.storage.fs import exclusive_write, open_fs
from tests.helpers import STRAX_DTYPE, lineage, make_records, make_run
from tests.remote.fixtures import forget
from tests.remote.servers import S3Server, blackhole, free_port

KEY = DataKey("run_1", "records", lineage("records", threshold=1))
NEW = DataKey("run_1", "records", lineage("records", threshold=77))


def save(frontend, key=KEY, sizes=(300, 20, 0, 700), seed=0):
    parts, intervals = make_run(list(sizes), seed=seed)
    frontend.saver(key, STRAX_DTYPE).save(parts, intervals).compute()
    return np.concatenate(parts)


# -- the commit primitive ------------------------------------------------------------------
def test_manifest_is_created_with_if_none_match(s3_server, s3_url, s3_options):
    fs, root = open_fs(s3_url, s3_options)
    s3_server.clear_requests()
    exclusive_write(fs, f"{root}/x/manifest.json", b"first")
    with pytest.raises(FileExistsError):
        exclusive_write(fs, f"{root}/x/manifest.json", b"second")
    # one conditional PUT each: no check-then-write window
    assert [r.split()[0] for r in s3_server.requests()] == ["PUT", "PUT"]
    assert fs.cat_file(f"{root}/x/manifest.json") == b"first"


# -- listings are never stale --------------------------------------------------------------
@pytest.mark.parametrize("listings_cache", [False, True], ids=["default", "cache-enabled"])
def test_listing_never_hides_or_invents_a_commit(s3_url, s3_options, listings_cache):
    opts = {**s3_options, "use_listings_cache": listings_cache}
    reader = DirectoryFrontend(s3_url, storage_options=opts)
    # another instance (another s3fs, as in another process): options differ harmlessly
    writer = DirectoryFrontend(
        s3_url, storage_options={**opts, "config_kwargs": {"connect_timeout": 4}}
    )
    assert reader.backend.fs is not writer.backend.fs
    fuzzy = DataKey("run_1", "records", lineage("records", threshold=2))
    assert reader.list() == []
    assert reader.list_runs() == []

    saver = writer.saver(KEY, STRAX_DTYPE)
    saver.save_partition(make_records(3000, 0), 0, 1_000_000)  # written, not committed
    assert reader.list() == []
    assert not reader.is_stored(KEY)
    assert not reader.is_stored(fuzzy, fuzzy_for_options=("threshold",))

    saver.close()
    assert [e.key for e in reader.list()] == [KEY]
    assert reader.is_stored(KEY)
    assert reader.find_key(fuzzy, fuzzy_for_options=("threshold",))[1] == KEY
    assert reader.list_runs() == ["run_1"]

    writer.write_run_metadata("run_2", {"gain": 1})
    assert reader.run_metadata("run_2") == {"gain": 1}
    assert reader.list_runs() == ["run_1", "run_2"]

    writer.remove(KEY)
    assert reader.list() == []
    assert not reader.is_stored(KEY)
    with pytest.raises(DataNotAvailable):
        reader.find(fuzzy, fuzzy_for_options=("threshold",))


# -- request counts ------------------------------------------------------------------------
def test_reading_one_field_of_one_partition_costs_fixed_requests(
    s3_server, s3_url, s3_options, capsys
):
    writer = DirectoryFrontend(s3_url, storage_options=s3_options, chunk_target_mb=0.25)
    ref = save(writer, sizes=(600, 600, 600))
    figures = {}
    stored = 1
    for n in (1, 40):
        while stored < n:
            other = DataKey("run_1", "records", lineage("records", threshold=100 + stored))
            save(writer, other, sizes=(3, 3), seed=stored)
            stored += 1
        # a fresh instance: nothing cached from before
        opts = {**s3_options, "config_kwargs": {"connect_timeout": 10 + n}}
        reader = DirectoryFrontend(s3_url, storage_options=opts)
        s3_server.clear_requests()
        lazy = reader.loader(KEY, fields=["area"])
        first, second = lazy.manifest.partitions[:2]
        got = lazy.fields["area"][first.rows : first.rows + second.rows].compute()
        figures[n] = s3_server.requests()
        np.testing.assert_array_equal(got, ref["area"][600:1200])
    with capsys.disabled():
        print(
            f"\n[remote efficiency] open a key + read one field of one partition on S3: "
            f"{len(figures[1])} requests with 1 key stored, {len(figures[40])} with 40 keys "
            f"stored: {[r.split('?')[0].rsplit('/', 3)[-3:] for r in figures[40]]}"
        )
    assert len(figures[1]) == len(figures[40]) <= 3
    assert all(r.startswith("GET ") for r in figures[40])  # no listing, no HEAD


# -- credentials from the usual places ------------------------------------------------------
@pytest.fixture(scope="module")
def auth_s3():
    """A moto server enforcing IAM: users admin (all), reader (get/list) and no-commit (all
    but writing manifests); one bucket with one key stored by admin.
    """
    with S3Server() as server:
        bucket = server.create_bucket()
        allow_all = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        users = {
            "admin": server.create_user(
                "admin", {"Version": "2012-10-17", "Statement": [allow_all]}
            ),
            "reader": server.create_user(
                "reader",
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["s3:GetObject", "s3:ListBucket"],
                            "Resource": "*",
                        }
                    ],
                },
            ),
            "no-commit": server.create_user(
                "no-commit",
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        allow_all,
                        {
                            "Effect": "Deny",
                            "Action": "s3:PutObject",
                            # the commit of NEW: its key's own zarr.json, not those below
                            "Resource": f"arn:aws:s3:::{bucket}/strata/data/run_1/{NEW.name}"
                            "/zarr.json",
                        },
                    ],
                },
            ),
        }
        server.enable_auth()
        url = f"s3://{bucket}/strata"
        admin = DirectoryFrontend(url, storage_options=server.storage_options(*users["admin"]))
        ref = save(admin)
        yield server, url, users, ref
        forget(url)


@pytest.fixture
def no_aws_env(monkeypatch, tmp_path):
    """No AWS credentials or configuration anywhere but what the test sets."""
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_credentials_from_environment(auth_s3, no_aws_env):
    server, url, users, ref = auth_s3
    key, secret = users["reader"]
    no_aws_env.setenv("AWS_ACCESS_KEY_ID", key)
    no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", secret)
    no_aws_env.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    fe = DirectoryFrontend(url)  # no storage_options at all
    try:
        assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
    finally:
        forget(url)
    no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(AuthenticationFailed, match="refused the credentials") as e:
        DirectoryFrontend(url).find(KEY)
    assert "not-the-secret" not in str(e.value)
    forget(url)


def test_credentials_from_aws_profile(auth_s3, no_aws_env, tmp_path):
    server, url, users, ref = auth_s3
    key, secret = users["reader"]
    (tmp_path / "aws-credentials").write_text(
        f"[strata-test]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    )
    (tmp_path / "aws-config").write_text(
        f"[profile strata-test]\nregion = us-east-1\nendpoint_url = {server.endpoint}\n"
    )
    fe = DirectoryFrontend(url, storage_options={"profile": "strata-test"})
    try:
        assert fe.loader(KEY).to_numpy().tobytes() == ref.tobytes()
        assert "strata-test" in repr(fe.backend)  # the profile name is not a secret
    finally:
        forget(url)


def test_no_credentials_is_a_clear_error(auth_s3, no_aws_env):
    server, url, _, _ = auth_s3
    fe = DirectoryFrontend(url, storage_options={"endpoint_url": server.endpoint})
    with pytest.raises(AuthenticationFailed, match=r"no usable AWS credentials.*AWS_ACCESS_KEY_ID"):
        fe.find(KEY)
    forget(url)


# -- errors --------------------------------------------------------------------------------
def _assert_no_secret(exc: BaseException, secret: str) -> None:
    assert secret not in str(exc)
    assert secret not in repr(exc)


def test_wrong_secret_is_refused(auth_s3):
    server, url, users, _ = auth_s3
    fe = DirectoryFrontend(
        url, storage_options=server.storage_options(users["reader"][0], "wrong-Secret-42")
    )
    with pytest.raises(AuthenticationFailed, match=f"{url}.*SignatureDoesNotMatch") as e:
        fe.loader(KEY)
    _assert_no_secret(e.value, "wrong-Secret-42")
    with pytest.raises(AuthenticationFailed, match="InvalidAccessKeyId"):
        DirectoryFrontend(url, storage_options=server.storage_options("AKIAUNKNOWN", "x")).list()
    forget(url)


def test_permission_denied_leaves_nothing_visible(auth_s3):
    server, url, users, ref = auth_s3
    admin = DirectoryFrontend(url, storage_options=server.storage_options(*users["admin"]))
    reader = DirectoryFrontend(url, storage_options=server.storage_options(*users["reader"]))
    new = NEW
    parts, intervals = make_run([2000, 30, 2000])
    with pytest.raises(AccessDenied, match=r"s3://.*/strata/data/run_1/records-.*AccessDenied"):
        reader.saver(new, STRAX_DTYPE).save(parts, intervals).compute()
    assert reader.loader(KEY).to_numpy().tobytes() == ref.tobytes()  # reading is allowed

    # segments may be written, the manifest may not: nothing becomes visible
    no_commit = DirectoryFrontend(
        url, storage_options=server.storage_options(*users["no-commit"]), chunk_target_mb=0.25
    )
    with pytest.raises(AccessDenied, match=rf"{NEW.name}/zarr\.json"):
        no_commit.saver(new, STRAX_DTYPE).save(parts, intervals).compute()
    assert not admin.is_stored(new)
    assert [e.key for e in admin.list()] == [KEY]
    # the failed commit removed its own attempt: nothing is left for gc
    assert admin.gc(min_age_seconds=0) == []
    assert admin.backend._ls_names(admin.backend.path("data", "run_1")) == [KEY.name]
    forget(url)


def test_missing_bucket(s3_server, s3_options):
    url = "s3://strata-no-such-bucket/strata"
    fe = DirectoryFrontend(url, storage_options=s3_options)
    for attempt in (
        lambda: fe.find(KEY),
        fe.list,
        lambda: fe.saver(KEY, STRAX_DTYPE),
        lambda: fe.write_run_metadata("run_1", {"a": 1}),
        lambda: fe.run_metadata("run_1"),
    ):
        with pytest.raises(BucketNotFound, match="'strata-no-such-bucket' does not exist") as e:
            attempt()
        assert not isinstance(e.value, KeyError | FileNotFoundError)  # not "no data here"
        _assert_no_secret(e.value, s3_options["secret"])
    with pytest.raises(ClientError):  # and strata did not create it
        s3_server.client().head_bucket(Bucket="strata-no-such-bucket")
    forget(url)


@pytest.mark.timeout(120)
def test_refused_connection(s3_options):
    url = "s3://strata-bucket/strata"
    opts = {**s3_options, "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(
        StorageUnreachable, match="cannot reach the S3 server for s3://strata-bucket"
    ) as e:
        DirectoryFrontend(url, storage_options=opts).find(KEY)
    assert isinstance(e.value, ConnectionError)
    _assert_no_secret(e.value, s3_options["secret"])
    forget(url)


@pytest.mark.timeout(120)
def test_unresponsive_server_times_out(s3_options):
    sock, port = blackhole()
    url = "s3://strata-bucket/strata"
    opts = {
        **s3_options,
        "endpoint_url": f"http://127.0.0.1:{port}",
        "config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}},
        "retries": 1,
    }
    try:
        with pytest.raises(StorageUnreachable, match="s3://strata-bucket"):
            DirectoryFrontend(url, storage_options=opts).find(KEY)
    finally:
        sock.close()
        forget(url)


# -- secrets -------------------------------------------------------------------------------
def test_secrets_never_leak(auth_s3, caplog):
    server, url, users, _ = auth_s3
    key, secret = users["admin"]
    opts = server.storage_options(key, secret)
    fe = DirectoryFrontend(url, storage_options=opts, chunk_target_mb=0.25)
    other = DataKey("run_9", "records", lineage("records", threshold=9))
    seen: list[str] = []
    with caplog.at_level("DEBUG"):
        seen += [repr(fe), repr(fe.backend), str(fe.backends)]
        parts, intervals = make_run([800, 5])
        lazy_save = fe.saver(other, STRAX_DTYPE, metadata={"note": "x"}).save(parts, intervals)
        seen.append(str(dict(lazy_save.__dask_graph__())))
        lazy_save.compute()
        fe.write_run_metadata("run_9", {"gain": 2})
        lazy = fe.loader(other)
        seen.append(str(dict(lazy.array.__dask_graph__())))
        seen.append(str(lazy.to_numpy()[:1]))
        seen += [repr(e) for e in fe.list()]
        bad = DirectoryFrontend(url, storage_options=server.storage_options(key, secret[::-1]))
        with pytest.raises(AuthenticationFailed) as e:
            bad.find(other)
        seen += [str(e.value), repr(e.value), repr(bad)]
    seen.append(caplog.text)
    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )
    bucket = url.split("/")[2]
    for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        if obj["Key"].endswith(".json"):  # manifests, run documents, zarr metadata
            seen.append(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode())
    assert any("strata.manifest.v3" in s for s in seen)  # the manifests were checked
    for text in seen:
        assert secret not in text
        assert secret[::-1] not in text
    assert "***" in repr(fe.backend)
    forget(url)
