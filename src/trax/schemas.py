"""JSON Schemas of Trax's output files (kept in ``workflow/schemas/`` beside the workflow)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_DIR_ENV = "TRAX_SCHEMA_DIR"


def schema_dir() -> Path:
    """The folder holding ``<name>.schema.yaml`` files.

    ``$TRAX_SCHEMA_DIR`` wins; otherwise the repository's ``workflow/schemas`` (Trax is installed
    in editable mode from its repository, see the Makefile).
    """
    override = os.environ.get(SCHEMA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "workflow" / "schemas"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Load and check the schema ``<name>.schema.yaml``."""
    path = schema_dir() / f"{name}.schema.yaml"
    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def validate(obj: Any, name: str) -> None:
    """Raise :class:`jsonschema.ValidationError` when ``obj`` does not match schema ``name``."""
    jsonschema.Draft202012Validator(load_schema(name)).validate(obj)
