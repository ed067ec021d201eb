"""The OpenAPI document the service publishes at ``/docs.json``: every response it gives.

BentoML 1.4 generates the document from the service's pydantic models, with three gaps this
module closes (``tests/e2e/test_serving_contract.py`` fuzzes the result with schemathesis):

* Optional fields: pydantic writes ``anyOf: [X, {type: null}]``, which OpenAPI 3.0 (the
  version BentoML declares) does not know, and the inline copy of a response model loses the
  ``null`` branch altogether. Here every such schema becomes ``X`` with ``nullable: true``, and
  inline response models are replaced by a reference to their component.
* Error bodies: BentoML publishes ``detail`` as a string, but a validation error carries the
  list of pydantic errors. The published error body is ``{"error": str, "detail": any}``.
* Status codes: BentoML lists 400, 404 and 500 on every API. Published here: what the service
  answers — 400 (validation; the message names the field), 401 (with an API key configured),
  413 (body too large), 415 (not JSON), 503 with ``Retry-After`` (overloaded, or no model
  loaded yet). A 500 is a bug, not part of the contract.
"""

from __future__ import annotations

import json
from typing import Any

ERROR = "Error"
REF = "#/components/schemas/{}"
ERRORS = {
    "400": "Invalid request: the message names the field.",
    "401": "Missing or wrong X-API-Key (only when FRAUD_SERVING_API_KEY is set).",
    "413": "Request body too large.",
    "415": "Content-Type is not application/json.",
    "503": "Overloaded (retry after the Retry-After header's seconds) or no model loaded yet.",
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": ERROR,
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "title": "Message"},
        "detail": {"title": "Detail", "description": "Validation errors, when there are."},
    },
}


def _nullable(node: Any) -> Any:
    """``anyOf: [X, {type: null}]`` -> ``X`` + ``nullable: true``, recursively."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    branches = node.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        node.pop("anyOf")
        if len(rest) == 1:
            node = {**rest[0], **node, "nullable": True}
        else:
            node = {**node, "anyOf": rest, "nullable": True}
    return node


def published_spec(generated: dict[str, Any]) -> dict[str, Any]:
    """The document BentoML generated, made to describe what the service really answers."""
    # A JSON round trip: BentoML's dict has int status codes (keys become strings in JSON).
    spec = _nullable(json.loads(json.dumps(generated)))
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas[ERROR] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": REF.format(ERROR)}}}
    by_title = {schema.get("title"): name for name, schema in schemas.items()}
    for item in spec.get("paths", {}).values():
        operation = item.get("post")
        if operation is None or "x-bentoml-name" not in operation:
            continue  # infrastructure endpoints (health, metrics) answer 200 only
        responses = operation["responses"]
        ok = responses.get("200", {}).get("content", {}).get("application/json", {})
        component = by_title.get(ok.get("schema", {}).get("title"))
        if component is not None:
            ok["schema"] = {"$ref": REF.format(component)}
        for code in ("400", "404", "500"):
            responses.pop(code, None)
        for code, description in ERRORS.items():
            responses[code] = {"description": description, "content": error}
        responses["503"]["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying (when overloaded).",
                "schema": {"type": "integer"},
            }
        }
    return spec
