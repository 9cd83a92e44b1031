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


def field_reference(name: str) -> str:
    """A Markdown table of every field of schema ``name``: dotted path (``[]`` for list items), type
    and description. ``docs/outputs.md`` carries one per output file; a test keeps them current."""
    schema = load_schema(name)
    rows = ["| field | type | meaning |", "|---|---|---|"]
    for path, node in _fields(schema, schema, ""):
        description = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type_of(node, schema)} | {description} |")
    return "\n".join(rows) + "\n"


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/...``); references to other files are left as they are."""
    while isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _fields(node: dict[str, Any], root: dict[str, Any], prefix: str):  # -> Iterator[tuple[str, dict]]
    node = _resolve(node, root)
    for variant in node.get("oneOf", []) + node.get("anyOf", []):
        yield from _fields(variant, root, prefix)
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        child = _resolve(child, root)
        yield path, child
        yield from _fields(child, root, path)
    if isinstance(node.get("items"), dict):
        yield from _fields(node["items"], root, f"{prefix}[]")


def _type_of(node: dict[str, Any], root: dict[str, Any]) -> str:
    if "$ref" in node:
        return f"see `{node['$ref'].split('#')[0] or 'this file'}`"
    types = node.get("type")
    if types is None and ("oneOf" in node or "anyOf" in node):
        variants = [_resolve(v, root) for v in node.get("oneOf", []) + node.get("anyOf", [])]
        types = sorted({t for v in variants for t in ([v["type"]] if isinstance(v.get("type"), str) else v.get("type", []))})
    if isinstance(types, str):
        types = [types]
    if not types and "enum" in node:
        types = sorted({"null" if value is None else type(value).__name__.replace("str", "string") for value in node["enum"]})
    text = " or ".join(types or ["any"])
    if "enum" in node:
        text += ": " + ", ".join(f"`{value}`" for value in node["enum"])
    return text


def update_docs(path: str | os.PathLike[str]) -> bool:
    """Rewrite the generated blocks ``<!-- fields: NAME -->`` … ``<!-- /fields -->`` of a Markdown
    file from the schemas; True when the file changed."""
    import re

    text = Path(path).read_text(encoding="utf-8")
    pattern = re.compile(r"(<!-- fields: ([\w.]+) -->\n).*?(<!-- /fields -->)", re.S)
    updated = pattern.sub(lambda m: m.group(1) + field_reference(m.group(2)) + m.group(3), text)
    if updated != text:
        Path(path).write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":  # python -m trax.io.schemas docs/outputs.md
    import sys

    for document in sys.argv[1:]:
        print(f"{document}: {'updated' if update_docs(document) else 'up to date'}")
