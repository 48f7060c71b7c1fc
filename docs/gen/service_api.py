"""The model service's API page, from the OpenAPI document of the service `create_service` makes for the shipped
configs, in this process: no server is started and no model is loaded."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

INTRO = """# Model service API

Generated from the OpenAPI document of the service made by `create_service` (include/serving/app.py) for the
configs of `include/config/`: each model has routes of its own, and its request and answer schemas come from its
config, so a service of other configs has other routes and schemas. A running service serves its own document at
`/docs.json`, browsable at `/`; the document below is also [here as JSON](model-service-openapi.json). What is
refused before a request reaches these routes (404, 413, 415, 422, 503) is in [The model service](model-service.md).
"""


def openapi_document(config_dir: Path) -> dict[str, Any]:
    from include.serving.app import create_service
    from include.serving.settings import Settings

    with tempfile.TemporaryDirectory() as state:
        service = create_service(Settings(config_dir=config_dir, state_dir=Path(state)))
        return service.openapi_spec.asdict()


def markdown(document: dict[str, Any]) -> str:
    schemas = document["components"]["schemas"]
    lines = [INTRO, "\n## Endpoints\n"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines.append(f"\n### `{method.upper()} {path}`\n\n")
            lines.append(" ".join(operation.get("description", operation.get("summary", "")).split()) + "\n")
            if operation.get("security"):
                lines.append("\nNeeds `Authorization: Bearer $MLOPS_ADMIN_TOKEN`.\n")
            body = operation.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                lines.append(f"\nRequest body (`{media}`): {_type(content['schema'], schemas)}\n")
            lines.append("\n| status | meaning | body |\n|---|---|---|\n")
            for status, response in operation["responses"].items():
                kinds = response.get("content", {}).values()
                answer = ", ".join(_type(c["schema"], schemas) for c in kinds if "schema" in c) or "-"
                lines.append(f"| {status} | {_cell(response.get('description', ''))} | {answer} |\n")
    lines.append("\n## Schemas\n")
    for name, schema in schemas.items():
        lines.append(f"\n### {name} {{#{_anchor(name)}}}\n\n")
        if "description" in schema:
            lines.append(_cell(schema["description"]) + "\n\n")
        lines.append("| field | type | required | description |\n|---|---|---|---|\n")
        required = set(schema.get("required", ()))
        for field, spec in schema.get("properties", {}).items():
            yes = "yes" if field in required else "no"
            lines.append(f"| `{field}` | {_type(spec, schemas)} | {yes} | {_cell(spec.get('description', ''))} |\n")
    return "".join(lines)


def _anchor(name: str) -> str:
    return "schema-" + name.lower()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _type(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if schema.get("title") in schemas and schema.get("type") == "object":
        return f"[{schema['title']}](#{_anchor(schema['title'])})"
    if "anyOf" in schema:
        return " or ".join(_type(option, schemas) for option in schema["anyOf"])
    if "enum" in schema:
        return " or ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), schemas)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {_type(schema['additionalProperties'], schemas)}"
    return f"{kind} ({schema['format']})" if "format" in schema else str(kind)
