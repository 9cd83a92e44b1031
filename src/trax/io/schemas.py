"""JSON Schemas of Trax's output files (kept in ``workflow/schemas/`` beside the workflow)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_DIR_ENV = "TRAX_SCHEMA_DIR"
SUFFIX = ".schema.yaml"


def schema_dir() -> Path:
    """The folder holding ``<name>.schema.yaml`` files.

    ``$TRAX_SCHEMA_DIR`` wins; otherwise the repository's ``workflow/schemas`` (Trax is installed
    in editable mode from its repository, see the Makefile).
    """
    override = os.environ.get(SCHEMA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "workflow" / "schemas"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Load and check the schema ``<name>.schema.yaml``."""
    path = schema_dir() / f"{name}{SUFFIX}"
    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@functools.cache
def _registry():  # -> referencing.Registry
    """Resolves a ``$ref`` to another file of the folder (``transcript.schema.yaml``) by name."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    def retrieve(uri: str) -> Resource:
        return Resource.from_contents(load_schema(uri.removesuffix(SUFFIX)), default_specification=DRAFT202012)

    return Registry(retrieve=retrieve)


def validate(obj: Any, name: str) -> None:
    """Raise :class:`jsonschema.ValidationError` when ``obj`` does not match schema ``name``."""
    jsonschema.Draft202012Validator(load_schema(name), registry=_registry()).validate(obj)


@functools.cache
def _item_validator(ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=_registry())


def validate_ref(obj: Any, ref: str) -> None:
    """Validate ``obj`` against the (sub)schema ``ref``, e.g.
    ``merged.schema.yaml#/properties/utterances/items``: one list item of a document that is
    written item by item (:func:`trax.io.jsonio.write_json_streamed`).

    Raises:
        jsonschema.ValidationError: when it does not match.
    """
    _item_validator(ref).validate(obj)
