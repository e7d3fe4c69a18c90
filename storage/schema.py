"""The published JSON Schemas of strata's documents, and validation against them.

The schemas live in ``storage/schemas/`` (installed with the package) and are the format's
reference for writers of other readers:

- ``commit.v3.schema.json``: a key's ``zarr.json`` (the commit document, manifest format v3);
- ``object.v1.schema.json``: a stored object's document;
- ``run.v1.schema.json``: a run document.

Validation needs ``jsonschema`` (a test dependency); strata itself checks what it reads with
its own code (:meth:`strata.storage.manifest.Manifest.check`), which is stricter.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

__all__ = ["SCHEMAS", "load_schema", "validate", "validate_commit"]

SCHEMAS = {
    "commit": "commit.v3.schema.json",
    "object": "object.v1.schema.json",
    "run": "run.v1.schema.json",
}
"""Document kind -> schema file name."""


@functools.cache
def load_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of documents of ``kind`` (a key of :data:`SCHEMAS`)."""
    if kind not in SCHEMAS:
        raise ValueError(f"no schema for {kind!r}: known kinds are {sorted(SCHEMAS)}")
    text = resources.files(__package__).joinpath("schemas", SCHEMAS[kind]).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator(kind: str) -> Any:
    try:
        import jsonschema
    except ImportError as e:
        raise ImportError(
            "validating against strata's schemas needs jsonschema: pip install jsonschema"
        ) from e
    schema = load_schema(kind)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(doc: Any, kind: str) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` does not follow the schema of ``kind``."""
    _validator(kind).validate(doc)


def validate_commit(raw: bytes) -> None:
    """Validate the bytes of a commit document against the commit schema."""
    validate(json.loads(raw), "commit")
