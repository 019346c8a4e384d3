"""The JSON Schema is generated from the models, documents every field, and its copy is current."""

from __future__ import annotations

import json

import jsonschema
import pytest

from qlspec.spec.models import AppSpec
from qlspec.spec.schema import schema_text


def test_the_copy_in_specs_is_current(repo_root):
    assert (repo_root / "specs" / "app.schema.json").read_text() == schema_text(), "regenerate with: qlspec schema -o specs/app.schema.json"


def test_every_field_has_a_description():
    def walk(model, prefix=""):
        for name, info in model.model_fields.items():
            assert info.description or name == "name", f"{prefix}{name} has no description"
            for sub in getattr(info.annotation, "__args__", (info.annotation,)):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    walk(sub, f"{prefix}{name}.")

    walk(AppSpec)


def test_schema_rejects_unknown_keys_and_accepts_the_default_example(repo_root):
    from ruamel.yaml import YAML

    schema = json.loads(schema_text())
    example = YAML(typ="safe").load((repo_root / "examples" / "3ddfa-synthetic" / "app.yaml").read_text())
    jsonschema.validate(example, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**example, "trainig": {}}, schema)
