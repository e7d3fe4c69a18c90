"""Fixtures of the object-store tests: the real S3 and SSH servers of the remote tests."""

from tests.remote.fixtures import (  # noqa: F401
    s3_bucket,
    s3_options,
    s3_server,
    s3_url,
    ssh_options,
    ssh_server,
    ssh_url,
)
