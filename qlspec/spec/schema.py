"""The JSON Schema of the spec, generated from the models (a copy lives in specs/app.schema.json)."""

from __future__ import annotations

import json

from qlspec.spec.models import AppSpec

SCHEMA_ID = "https://qlspec.dev/schema/app.schema.json"


def schema_text() -> str:
    """The schema as stable, indented JSON text ending in a newline."""
    schema = AppSpec.model_json_schema(by_alias=True, mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
