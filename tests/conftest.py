"""Fixtures every test directory may use: the real S3 and SSH servers (started on first use,
once per session; see :mod:`tests.remote.fixtures`).

Every commit document the suite writes, in this process and in every worker process it starts
(they inherit the environment), is validated against the published JSON Schema
(``storage/schemas/commit.v3.schema.json``) before it is written: a commit that does not follow
the schema fails its test.
"""

import os

from strata.storage.commit import SCHEMA_CHECK_ENV
from tests.remote.fixtures import (  # noqa: F401
    s3_bucket,
    s3_options,
    s3_server,
    s3_url,
    ssh_options,
    ssh_server,
    ssh_url,
)

os.environ[SCHEMA_CHECK_ENV] = "1"
