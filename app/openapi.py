"""GET /openapi.json: the API's OpenAPI 3.1 document, built from the pydantic models that check input
and those that describe the answers (app/openapi_responses.py)."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from app.openapi_operations import HEADER_DOCS, JSON, OPERATIONS, Operation
from app.routing.auto import AUTO_PROFILE
from app.services import services

bp = Blueprint("openapi", __name__)

REF_TEMPLATE = "#/components/schemas/{model}"
STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 400: "Invalid body or query (`param` names the field)",
    401: "Missing or wrong API key", 404: "Not found", 409: "Conflict with the resource's state",
    413: "Body too large", 414: "URL too long", 429: "Too many requests (see Retry-After)",
    503: "Database, queue or tokenizer unavailable",
}  # fmt: skip
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "param", "code"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI document of this API."""
    document = services().openapi_document
    if document is None:  # built once per process: the profiles are fixed at start
        document = services().openapi_document = build_document(current_app)
    return jsonify(document)


def build_document(app: Flask) -> dict[str, Any]:
    """Paths from OPERATIONS, schemas from their models; job profiles are this server's profiles."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = operation_object(operation, schemas)
    profiles = list(services(app).profiles)
    router = services(app).router
    if router is not None and getattr(router, "candidates", None):
        profiles.append(AUTO_PROFILE)
    schemas["JobCreate"]["properties"]["profile"]["enum"] = profiles
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gptoss-batch",
            "version": "1",
            "description": "Queue-backed batch jobs for gpt-oss models; OpenAI-compatible chat, files and "
            "batches. Errors are {error: {type, message, param, code}}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Enforced only when the server has API keys (GPTOSS_API_KEYS); /healthz never needs one.
        "security": [{"bearer": []}],
    }


def operation_object(operation: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"{(\w+)}", operation.path)
    ]
    if operation.query is not None:
        parameters += query_parameters(operation.query, schemas)
    for header in operation.headers:
        description, schema = HEADER_DOCS[header]
        parameters.append({"name": header, "in": "header", "description": description, "schema": schema})
    body = {"type": "object"} if operation.response is None else response_schema(operation.response, schemas)
    ok_content = {media: {"schema": body if media == JSON else {}} for media in operation.ok_types}
    responses: dict[str, Any] = {
        str(status): {"description": STATUS_TEXT[status], "content": ok_content}
        for status in sorted({operation.ok, *operation.also_ok})
    }
    error = {"$ref": "#/components/schemas/Error"}
    for status in sorted({*operation.errors, 401, 503}):
        schema = {"anyOf": [body, error]} if status in operation.errors_as_response else error
        responses[str(status)] = {"description": STATUS_TEXT[status], "content": {JSON: {"schema": schema}}}
    result: dict[str, Any] = {
        "operationId": operation.endpoint.replace(".", "_"),
        "summary": operation.summary,
        "tags": list(operation.tags),
        "parameters": parameters,
        "responses": responses,
    }
    if operation.endpoint == "health.healthz":
        result["security"] = []
    if operation.body is not None:
        body_schema = model_schema(operation.body, schemas)
        result["requestBody"] = {"required": True, "content": {JSON: {"schema": body_schema}}}
    elif operation.multipart is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": operation.multipart}},
        }
    return result


def model_schema(
    model: type[BaseModel],
    schemas: dict[str, Any],
    mode: JsonSchemaMode = "validation",
    generator: type[GenerateJsonSchema] = GenerateJsonSchema,
) -> dict[str, Any]:
    """A $ref to the model's schema, which goes (with the models it uses) into components."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode, schema_generator=generator)
    for name, definition in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
        if schemas.setdefault(name, definition) != definition:  # e.g. a request's and an answer's Message
            raise ValueError(f"two models named {name} differ: rename one (components/schemas/{name})")
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def response_schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """A $ref to the schema of an answer's model (app/openapi_responses.py), as its JSON is written."""
    return model_schema(model, schemas, mode="serialization", generator=AnswerJsonSchema)


class AnswerJsonSchema(GenerateJsonSchema):
    """An answer's schema has no `default`: a field of an answer with one (`x: str | Absent = None`) is
    left out where it has no value, never filled in with the default."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])


def query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    """One `in: query` parameter per field of a query-string model."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
    schemas.update(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": without_null(property_schema)}
        for name, property_schema in schema.get("properties", {}).items()
    ]


def without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query string has no null: `anyOf: [X, null]` (an optional field) becomes X."""
    options = [option for option in schema.get("anyOf", ()) if option != {"type": "null"}]
    if "anyOf" not in schema or len(options) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**options[0], **rest}
