"""The published JSON Schemas (storage/schemas/) against what strata writes: every commit the
suite writes is validated in the commit path (tests/conftest.py sets STRATA_CHECK_SCHEMA);
here, the schemas themselves, run documents and stored-object documents, and a forged commit
that the schema refuses.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from strata.storage import DataKey, DirectoryFrontend
from strata.storage.schema import SCHEMAS, load_schema, validate
from tests.helpers import STRAX_DTYPE, lineage, make_run
from tests.objects.models import Measurement


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_schema_is_a_valid_json_schema(kind):
    schema = load_schema(kind)
    jsonschema.validators.validator_for(schema).check_schema(schema)


@pytest.fixture
def store(tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "s"), chunk_target_mb=0.01)
    key = DataKey("run_1", "records", lineage())
    fe.saver(key, STRAX_DTYPE).save(*make_run([200, 0, 50])).compute()
    fe.write_run_metadata("run_1", {"start": 0, "end": 10, "mode": "bg", "tags": ["a"]})
    fe.backend.store_object(Measurement(run_id="r1", name="m", value=1))
    return tmp_path / "s", key


def test_written_documents_follow_their_schemas(store):
    root, key = store
    commit = root / "data" / key.run_id / key.name / "zarr.json"
    validate(json.loads(commit.read_bytes()), "commit")
    (run_doc,) = (root / "runs").glob("*.json")
    validate(json.loads(run_doc.read_bytes()), "run")
    objects = list((root / "objects").glob("*.json"))
    assert objects
    for doc in objects:
        validate(json.loads(doc.read_bytes()), "object")


@pytest.mark.parametrize(
    "forge",
    [
        lambda d: d["attributes"]["strata"]["partitions"].__setitem__("rows", [1.5]),
        lambda d: d["attributes"]["strata"].__setitem__("attempt", "../x"),
        lambda d: d["attributes"]["strata"].__setitem__("extra", 1),
        lambda d: d["consolidated_metadata"]["metadata"].__setitem__("../../x", {}),
        lambda d: d.__setitem__("node_type", "array"),
    ],
)
def test_the_commit_schema_refuses_forgeries(store, forge):
    root, key = store
    doc = json.loads((root / "data" / key.run_id / key.name / "zarr.json").read_bytes())
    forge(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc, "commit")
