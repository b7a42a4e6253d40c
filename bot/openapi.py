"""The OpenAPI 3.1 document of /api/v1, built from the same pydantic records the server validates."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, create_model

from crm_store.records import KEY_FIELD, RECORDS, Record

# The key of a record in a URL or a bulk item. Stricter than a reference to one: no whitespace or
# control characters, nothing that is special in a URL, and no markup or quoting characters, so a
# key can be shown in chat and logs and put in a URL as it is.
_NOT_IN_KEY = r"\s\x00-\x1f\x7f/?#<>\"'`\\"
_NOT_IN_EMAIL = r"\s\x00-\x1f\x7f@<>()\[\],;:\"\\"
KeyExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128,
                                                 pattern=f"^[^{_NOT_IN_KEY}]+$")]
KeyEmail = Annotated[str, StringConstraints(
    strip_whitespace=True, to_lower=True, max_length=320,
    pattern=f"^[^{_NOT_IN_EMAIL}]+@[^{_NOT_IN_EMAIL}/?#'`]+\\.[^{_NOT_IN_EMAIL}/?#'`]+$")]
KEY_TYPES: dict[str, TypeAdapter[str]] = {
    kind: TypeAdapter(KeyEmail if field == "email" else KeyExternalId) for kind, field in KEY_FIELD.items()
}
MAX_BULK = 5000


def _bulk_request(kind: str, record: type[Record]) -> type[BaseModel]:
    """``{"items": [...]}`` where each item is the record plus its key: one pydantic-core call
    validates a whole bulk straight from the request bytes (the API's fast path)."""
    key_type = KeyEmail if KEY_FIELD[kind] == "email" else KeyExternalId
    key: Any = (key_type, ...)
    item = create_model(f"{record.__name__}BulkItem", __base__=record, **{KEY_FIELD[kind]: key})
    return create_model(f"{record.__name__}Bulk", items=(list[item], Field(max_length=MAX_BULK)))  # type: ignore[valid-type]


BULK_REQUESTS: dict[str, type[BaseModel]] = {kind: _bulk_request(kind, model) for kind, model in RECORDS.items()}

ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "field": {"type": "string"},
                                          "details": {"type": "array", "items": {"type": "object"}}},
         "required": ["error"]}
RESULT = {"type": "object", "required": ["key", "status"], "properties": {
    "key": {"type": "string"},
    "status": {"enum": ["created", "updated", "unchanged", "stale", "error"]},
    "stale": {"type": "boolean"},
    "error": {}, "field": {"type": "string"},
    "possible_duplicates": {"type": "array", "items": {"type": "object"}},
}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", **_json(ok)}}
    reasons = {201: "Created", 401: "Missing or wrong bearer token", 403: "Unknown acting user",
               404: "Not found (or not visible to the acting user)", 413: "Too large", 415: "Not JSON",
               422: "Invalid input; the field is named"}
    for code in codes:
        out[str(code)] = {"description": reasons[code], **_json(ok if code == 201 else ERROR)}
    return out


@cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR, "Result": RESULT}
    paths: dict[str, Any] = {}
    acting = {"name": "X-Dealbot-User", "in": "header", "required": False, "schema": {"type": "string"},
              "description": "Email of the CRM user whose visibility applies; absent: admin scope."}
    for kind, model in RECORDS.items():
        name = model.__name__
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
        key = KEY_FIELD[kind]
        key_schema = KEY_TYPES[kind].json_schema()
        bulk = BULK_REQUESTS[kind].model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(bulk.pop("$defs", {}))
        schemas[bulk["title"]] = bulk
        paths[f"/api/v1/{kind}/{{{key}}}"] = {"put": {
            "summary": f"Create or update one {kind[:-1]} (idempotent)",
            "parameters": [{"name": key, "in": "path", "required": True, "schema": key_schema}],
            "requestBody": {"required": True, **_json({"$ref": f"#/components/schemas/{name}"})},
            "responses": _responses({"$ref": "#/components/schemas/Result"}, 201, 401, 415, 422),
        }}
        paths[f"/api/v1/{kind}/bulk"] = {"post": {
            "summary": f"Create or update up to 5,000 {kind} in one request, with a result per item",
            "requestBody": {"required": True, **_json({"$ref": f"#/components/schemas/{bulk['title']}"})},
            "responses": _responses({"type": "object", "properties": {
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}}}}, 401, 413, 415, 422),
        }}
    ext = {"name": "external_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths["/api/v1/opportunities/{external_id}"]["get"] = {
        "summary": "One opportunity", "parameters": [ext, acting],
        "responses": _responses({"type": "object"}, 401, 403, 404)}
    paths["/api/v1/opportunities/{external_id}/timeline"] = {"get": {
        "summary": "Timeline entries, newest first (format=csv for an export)",
        "parameters": [ext, acting,
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                       {"name": "before", "in": "query", "schema": {"type": "integer"}},
                       {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}],
        "responses": _responses({"type": "object", "properties": {
            "items": {"type": "array", "items": {"type": "object"}}, "next_before": {"type": ["integer", "null"]}}},
            401, 403, 404, 422)}}
    paths["/api/v1/search"] = {"get": {
        "summary": "Search accounts, opportunities and contacts by name",
        "parameters": [{"name": "q", "in": "query", "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200}}, acting],
        "responses": _responses({"type": "object"}, 401, 403, 422)}}
    for kind, key in (("contacts", "external_id"), ("users", "email")):
        paths[f"/api/v1/{kind}/{{{key}}}"]["delete"] = {
            "summary": f"Erase a {kind[:-1]}'s personal data (history stays, anonymised)",
            "parameters": [{"name": key, "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": _responses({"type": "object"}, 401, 404)}
    from bot.api_digests import PATH, SubscriptionItem  # it validates with these models: no import cycle

    item = SubscriptionItem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["DigestSubscription"] = item
    paths[PATH] = {
        "put": {"summary": f"Subscribe users to digests (or turn them off), up to {MAX_BULK:,} in one request",
                "requestBody": {"required": True, **_json({"type": "object", "required": ["items"], "properties": {
                    "items": {"type": "array", "maxItems": MAX_BULK,
                              "items": {"$ref": "#/components/schemas/DigestSubscription"}}}})},
                "responses": _responses({"type": "object", "properties": {"results": {"type": "array", "items": {
                    "type": "object", "required": ["email", "status"], "properties": {
                        "email": {"type": "string"}, "status": {"enum": ["subscribed", "off", "error"]},
                        "time_zone": {"type": "string"}, "next_due_at": {"type": "string", "format": "date-time"},
                        "field": {"type": "string"}, "error": {"type": "string"}}}}}}, 401, 413, 415, 422)},
        "get": {"summary": "Every digest subscription", "responses": _responses({"type": "object"}, 401)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Dealbot API", "version": "1"},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
