"""Fixtures every test directory may use: the real S3 and SSH servers (started on first use,
once per session; see :mod:`tests.remote.fixtures`)."""

from tests.remote.fixtures import (  # noqa: F401
    s3_bucket,
    s3_options,
    s3_server,
    s3_url,
    ssh_options,
    ssh_server,
    ssh_url,
)
