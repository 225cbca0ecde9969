"""JSON Schemas of the rule files and the config for editors, generated from pydantic models.

Generated rather than written, so that they cannot drift from the models. Draft-07: the
yaml-language-server (VS Code's and Neovim's YAML support) validates with draft-07 whatever
``$schema`` says, so pydantic's 2020-12 ``$defs`` become draft-07 ``definitions``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ByteSize
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from checker.config import Settings
from checker.config_types import setting_text
from checker.rules.schema import RuleFile

if TYPE_CHECKING:
    from pydantic_core import core_schema

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
MODELS: dict[str, type[BaseModel]] = {"rules": RuleFile, "config": Settings}


class _EditorSchema(GenerateJsonSchema):
    """What an editor shows on hover and offers to complete: a user's notation, nothing redundant."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        """Never: a title made from the key's name ("Every" for ``every``) only repeats it."""
        del schema
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        """No default for a whole block (``tempo:``), whose keys show their own, nor for "absent"."""
        if "default" in schema and (schema["default"] is None or isinstance(schema["default"], BaseModel)):
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def encode_default(self, dft: Any) -> Any:
        """Durations and sizes as the config takes them: ``1m``, not pydantic's ``PT1M`` (refused)."""
        if isinstance(dft, timedelta | ByteSize):
            return setting_text(dft)
        return super().encode_default(dft)


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The draft-07 JSON Schema of a model."""
    schema = model.model_json_schema(ref_template="#/definitions/{model}", schema_generator=_EditorSchema)
    definitions = schema.pop("$defs", {})
    return {"$schema": DRAFT_07, **schema, **({"definitions": definitions} if definitions else {})}


def schema_text(name: str) -> str:
    """``betrace schema NAME``'s output, and the committed ``schemas/NAME.schema.json``."""
    return json.dumps(json_schema(MODELS[name]), indent=2, ensure_ascii=False) + "\n"
