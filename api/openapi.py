"""The OpenAPI document, completed: every error answer the API gives is declared, and links tie the answers that
create things (rounds, blobs, participants) to the operations that read them, so schema-driven clients and
fuzzers (schemathesis's stateful phase) can follow them.

Errors are ``{"error": <name>, "detail": <message>, ...}`` (api/errors.py). 422 is either FastAPI's request
validation answer or a domain rejection of an update's content (tampered, wrong shape, NaN).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "the error's name (a contract custom error or a domain error)"},
        "detail": {"type": "string", "description": "what was wrong, with the offending values"},
        "args": {"type": "object", "description": "a contract revert's arguments by name"},
    },
    "additionalProperties": True,
}

COMMON = {
    "400": "bad input the schema cannot express (a signature that does not verify, a rule out of range, bytes "
           "that are not an update); text/plain when the HTTP server itself refused a malformed request (a "
           "header such as Content-Length that is not a number) before the application saw it",
    "403": "the participant is not active in the registry",
    "404": "unknown round, participant, blob or result (or no PrivacyLedger in this deployment)",
    "409": "conflicts with the chain's state (duplicate, late, round in the wrong state, already claimed, a DP "
           "update over the participant's privacy budget: PrivacyBudgetExceeded with spent, requested and budget)",
    "502": "the chain answered with an unexpected error",
    "503": "the chain, the blob store or a local state database is unavailable, or the server is starting",
    "504": "a transaction was sent but not mined in time (it may still be mined: check before resending)",
}
OPERATOR = {"401": "the operator credential is missing or wrong (Authorization: Bearer <token>)"}
UPLOAD = {"413": "the upload exceeds FEDLEDGER_MAX_UPLOAD_BYTES", "415": "send application/octet-stream"}

# (path, method) of an answer -> links to other operations, parameters taken from that answer's body
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/operator/rounds", "post", "201"): {
        "GetRound": ("/rounds/{round_id}", "get", {"round_id": "$response.body#/round"}),
        "SubmitToRound": ("/rounds/{round_id}/submissions", "post", {"round_id": "$response.body#/round"}),
        "CloseRound": ("/operator/rounds/{round_id}/close", "post", {"round_id": "$response.body#/round"}),
        "AuditRound": ("/audit/rounds/{round_id}", "get", {"round_id": "$response.body#/round"}),
    },
    ("/operator/rounds/{round_id}/close", "post", "200"): {
        "FinalizeRound": ("/operator/rounds/{round_id}/finalize", "post", {"round_id": "$response.body#/round"}),
    },
    ("/operator/rounds/{round_id}/finalize", "post", "200"): {
        "AuditFinalizedRound": ("/audit/rounds/{round_id}", "get", {"round_id": "$response.body#/round"}),
        "GetNewModel": ("/blobs/{cid}", "get", {"cid": "$response.body#/new_model/cid",
                                                "content_hash": "$response.body#/new_model/hash"}),
    },
    ("/blobs", "post", "201"): {
        "DownloadBlob": ("/blobs/{cid}", "get", {"cid": "$response.body#/cid",
                                                 "content_hash": "$response.body#/content_hash"}),
    },
    ("/participants/register", "post", "201"): {
        "GetParticipant": ("/participants/{address}", "get", {"address": "$response.body#/address"}),
        "GetClaims": ("/participants/{address}/claims", "get", {"address": "$response.body#/address"}),
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, item in schema["paths"].items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            extra = dict(COMMON)
            if path.startswith("/operator"):
                extra |= OPERATOR
            if path == "/blobs" and method == "post":
                extra |= UPLOAD
            for code, description in extra.items():
                responses.setdefault(code, _error(description))
            responses["400"]["content"].setdefault("text/plain", {"schema": {"type": "string"}})
            validation = responses.get("422")
            if validation is not None:  # FastAPI's validation answer, or a domain rejection of the content
                validation["content"]["application/json"]["schema"] = {"anyOf": [
                    {"$ref": "#/components/schemas/HTTPValidationError"}, {"$ref": "#/components/schemas/Error"}]}
            else:
                responses["422"] = _error("the update was rejected: tampered, wrong shapes, NaN/Inf, or a malformed "
                                          "DP mechanism in its header")
    for (path, method, code), links in LINKS.items():
        response = schema["paths"][path][method]["responses"][code]
        response["links"] = {
            name: {"operationId": schema["paths"][to_path][to_method]["operationId"], "parameters": params}
            for name, (to_path, to_method, params) in links.items()
        }
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
