"""OpenAPI 3.1 for one app: its scenario endpoints (request schemas as written, JSON Schema 2020-12
is OpenAPI 3.1's own dialect) plus the admin API."""

from __future__ import annotations

import copy
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchback.store.records import BLOCK_STATUSES, TX_STATUSES

if TYPE_CHECKING:
    from switchback.gateway.config import GatewayConfig
    from switchback.model import App, Scenario

PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")

NULLABLE_STR = {"type": ["string", "null"]}
NUM_OR_NULL = {"type": ["number", "null"]}
BLOCK_ERROR = {
    "type": ["object", "null"],
    "properties": {"type": NULLABLE_STR, "message": NULLABLE_STR, "traceback": NULLABLE_STR},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {}},
    },
    "ValidationError": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string"},
            "detail": {
                "type": "object",
                "properties": {
                    "violations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["path", "message"],
                            "properties": {
                                "path": {"type": "string", "description": "JSON pointer"},
                                "message": {"type": "string"},
                            },
                        },
                    }
                },
            },
        },
    },
    "Completed": {
        "type": "object",
        "required": ["xid", "status", "result"],
        "properties": {
            "xid": {"type": "string"},
            "status": {"const": "completed"},
            "result": {"description": "output of the scenario's result block (default: last DO)"},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["xid", "status"],
        "properties": {"xid": {"type": "string"}, "status": {"enum": list(TX_STATUSES)}},
    },
    "Parked": {
        "type": "object",
        "required": ["xid", "status", "failed_block", "error"],
        "properties": {
            "xid": {"type": "string"},
            "status": {"enum": ["suspended", "rollback_failed", "rolled_back"]},
            "reason": NULLABLE_STR,
            "failed_block": NULLABLE_STR,
            "error": BLOCK_ERROR,
        },
    },
    "TransactionSummary": {
        "type": "object",
        "required": ["xid", "scenario", "status"],
        "properties": {
            "xid": {"type": "string"},
            "scenario": {"type": "string"},
            "status": {"enum": list(TX_STATUSES)},
            "reason": NULLABLE_STR,
            "cursor": {"type": "integer"},
            "created_at": {"type": "number"},
            "updated_at": {"type": "number"},
        },
    },
    "TransactionList": {
        "type": "object",
        "required": ["transactions", "next_cursor"],
        "properties": {
            "transactions": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/TransactionSummary"},
            },
            "next_cursor": NULLABLE_STR,
        },
    },
    "Block": {
        "type": "object",
        "required": ["index", "name", "status", "attempts"],
        "properties": {
            "index": {"type": "integer"},
            "name": {"type": "string"},
            "status": {"enum": list(BLOCK_STATUSES)},
            "attempts": {"type": "integer"},
            "output": {},
            "error": BLOCK_ERROR,
            "started_at": NUM_OR_NULL,
            "ended_at": NUM_OR_NULL,
            "undo_attempts": {"type": "integer"},
            "undo_output": {},
            "undo_error": BLOCK_ERROR,
            "note": NULLABLE_STR,
        },
    },
    "Audit": {
        "type": "object",
        "required": ["at", "actor", "action"],
        "properties": {
            "at": {"type": "number"},
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "reason": NULLABLE_STR,
            "input": {},
        },
    },
    "Transaction": {
        "type": "object",
        "required": ["xid", "scenario", "status", "blocks", "audit"],
        "properties": {
            "xid": {"type": "string"},
            "scenario": {"type": "string"},
            "status": {"enum": list(TX_STATUSES)},
            "reason": NULLABLE_STR,
            "request": {},
            "cursor": {"type": "integer"},
            "current_block": NULLABLE_STR,
            "failed_block": NULLABLE_STR,
            "error": BLOCK_ERROR,
            "result": {},
            "created_at": {"type": "number"},
            "updated_at": {"type": "number"},
            "deadline": NUM_OR_NULL,
            "blocks": {"type": "array", "items": {"$ref": "#/components/schemas/Block"}},
            "audit": {"type": "array", "items": {"$ref": "#/components/schemas/Audit"}},
        },
    },
    "Plan": {
        "type": "object",
        "required": ["xid", "status", "rollforward", "rollback", "resume_after_signal"],
        "properties": {
            "xid": {"type": "string"},
            "status": {"enum": list(TX_STATUSES)},
            "rollforward": {"type": "array", "items": {"type": "object"}},
            "rollback": {"type": "array", "items": {"type": "object"}},
            "resume_after_signal": {"type": "array", "items": {"type": "object"}},
        },
    },
}


# Text the platform accepts (engine/inputs.py): no NUL anywhere (nor a lone surrogate, which
# JSON text can only carry as an escape, and no URL at all). Published on the fields the admin
# API defines; a scenario's own request schema is the app's, so this rule is stated in the
# document's description for its fields.
NO_NUL = "^[^\\x00]*$"
_REASON = {"type": "string", "pattern": NO_NUL}
# The bodies of the admin API's decisions: the gateway validates against these, and the OpenAPI
# document publishes them as <Action>Body (rollforward's ``request`` and ``from`` made precise
# for the app, see rollforward_body).
DECISION_BODIES: dict[str, dict[str, Any]] = {
    "rollforward": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "request": {
                "description": "corrected request, validated against the transaction's "
                "scenario schema; leave it out to keep the stored one (null is refused)",
                "not": {"type": "null"},
            },
            "from": {
                "type": "string",
                "minLength": 1,
                "pattern": NO_NUL,
                "description": "the failed block or an earlier one",
            },
            "reason": _REASON,
        },
    },
    "rollback": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": _REASON},
    },
    "pause": {"type": "object", "additionalProperties": False, "properties": {"reason": _REASON}},
    "compensated": {
        "type": "object",
        "additionalProperties": False,
        "required": ["reason"],
        "properties": {
            "reason": {
                "type": "string",
                "minLength": 1,
                "pattern": "^[^\\x00]*[^\\s\\x00][^\\x00]*$",
            }
        },
    },
    "signal": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"payload": {}, "reason": _REASON},
    },
}
SCHEMAS.update({f"{k.capitalize()}Body": v for k, v in DECISION_BODIES.items()})


def rollforward_body(app: App) -> dict[str, Any]:
    """The rollforward body as the server checks it for this app: a corrected ``request`` is
    validated against the transaction's scenario (so it is one of the scenarios' requests, never
    null), ``from`` names one of its blocks."""
    body = copy.deepcopy(DECISION_BODIES["rollforward"])
    props = body["properties"]
    requests: list[Any] = []
    for sc in sorted(app.scenarios.values(), key=lambda s: s.name):
        if sc.request not in requests:
            requests.append(copy.deepcopy(sc.request))
    if requests:
        props["request"]["anyOf"] = requests
    blocks = sorted({b.name for sc in app.scenarios.values() for b in sc.blocks})
    if blocks:
        props["from"]["enum"] = blocks
    return body


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        out["headers"] = headers
    return out


LOCATION = {"Location": {"description": "the transaction", "schema": {"type": "string"}}}
ALLOW = {"Allow": {"description": "methods of this path", "schema": {"type": "string"}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "malformed JSON or a bad header",
        401: "missing or invalid bearer token",
        404: "unknown transaction",
        405: "method not allowed (see Allow)",
        409: "conflict: the decision does not apply to the current status, or (scenario calls) "
        "a resource lock is held by another transaction",
        413: "request body over the configured limit",
        415: "body is not application/json",
        422: "validation failed: every violation with its JSON pointer",
        503: "the scenario's request check could not decide (nothing was started)",
    }
    out: dict[str, Any] = {}
    for c in codes:
        schema = _ref("ValidationError") if c == 422 else _ref("Error")
        out[str(c)] = _json(schema, text[c], ALLOW if c == 405 else None)
    out["default"] = _json(_ref("Error"), "any other error")
    return out


def path_params(path: str) -> list[str]:
    return PARAM.findall(path)


def public_request_schema(sc: Scenario) -> Any:
    """The body schema as a caller sees it: path parameters come from the path, so they are not
    required in the body (when present there they must agree with the path)."""
    names = path_params(sc.path or "")
    schema = copy.deepcopy(sc.request)
    if not names or not isinstance(schema, dict):
        return schema
    req = schema.get("required")
    if isinstance(req, list):
        schema["required"] = [r for r in req if r not in names]
    return schema


def _scenario_operation(sc: Scenario, config: GatewayConfig) -> dict[str, Any]:
    props = sc.request.get("properties", {}) if isinstance(sc.request, dict) else {}
    params: list[dict[str, Any]] = [
        {
            "name": n,
            "in": "path",
            "required": True,
            "schema": props.get(n, {"type": "string"})
            if isinstance(props, dict)
            else {"type": "string"},
        }
        for n in path_params(sc.path or "")
    ]
    params += [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "the caller's key for this call: the same key, scenario and body "
            "return the same transaction; another body or another scenario → 422",
            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
        },
        {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "description": "respond-async → 202 at once (other preferences are ignored, RFC 7240)",
            "schema": {"type": "string"},
        },
    ]
    codes = [400, 409, 413, 415, 422] + ([401] if config.scenario_auth else [])
    codes += [503] if sc.request_check else []
    responses = {
        "200": _json(_ref("Completed"), "completed; `result` is the result block's output"),
        "202": _json(
            _ref("Accepted"),
            "accepted: asynchronous, or still running/waiting when the synchronous wait ended",
            LOCATION,
        ),
        "424": _json(
            _ref("Parked"),
            "the transaction parked at a failed block (suspended / rollback_failed) or was rolled "
            "back; it is durable and awaits a decision at Location",
            LOCATION,
        ),
        **_errors(*sorted(codes)),
    }
    op: dict[str, Any] = {
        "operationId": f"scenario_{sc.name}",
        "summary": sc.description or sc.name,
        "tags": ["scenarios"],
        "parameters": params,
        "responses": responses,
    }
    if config.scenario_auth:
        op["security"] = [{"bearer": []}]
    else:
        op["security"] = []
    # GET/DELETE calls carry their input in the path only (a body is still accepted).
    if sc.method not in ("GET", "DELETE"):
        op["requestBody"] = {
            # An empty body counts as {}: required only when {} (with the path parameters merged
            # in) cannot satisfy the schema, so that a client generated from this document knows
            # which calls need one.
            "required": _body_required(sc),
            "description": "an empty body counts as {}; path parameters are merged in",
            "content": {"application/json": {"schema": public_request_schema(sc)}},
        }
    return op


def _body_required(sc: Scenario) -> bool:
    schema = sc.request if isinstance(sc.request, dict) else {}
    names = {f for _, f, _, _ in string.Formatter().parse(sc.path or "") if f}
    required = schema.get("required", [])
    return bool(set(required if isinstance(required, list) else []) - names)


XID = {
    "name": "xid",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NO_NUL},
}
PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "respond-async → 202 without waiting (other preferences are ignored)",
    "schema": {"type": "string"},
}


def _decision(
    op_id: str, summary: str, body: str, required: bool, extra: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "post": {
            "operationId": op_id,
            "summary": summary,
            "tags": ["transactions"],
            "parameters": [XID, *(extra or []), PREFER],
            "requestBody": {
                "required": required,
                "content": {"application/json": {"schema": _ref(body)}},
            },
            "responses": {
                "200": _json(_ref("Transaction"), "the transaction after the decision"),
                "202": _json(_ref("Transaction"), "still running when the wait ended", LOCATION),
                **_errors(400, 401, 404, 409, 413, 415, 422),
            },
        }
    }


def build_openapi(app: App, config: GatewayConfig) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for sc in sorted(app.scenarios.values(), key=lambda s: s.name):
        if sc.path:
            paths.setdefault(sc.path, {})[sc.method.lower()] = _scenario_operation(sc, config)
    status_q = {"name": "status", "in": "query", "required": False,
                "schema": {"type": "string", "enum": list(TX_STATUSES)}}  # fmt: skip
    paths["/transactions"] = {
        "get": {
            "operationId": "list_transactions",
            "summary": "transactions, newest first",
            "tags": ["transactions"],
            "parameters": [
                status_q,
                {
                    "name": "scenario",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "pattern": NO_NUL},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "required": False,
                    "description": "next_cursor of the previous page",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                },
            ],
            "responses": {
                "200": _json(_ref("TransactionList"), "a page"),
                **_errors(401, 422),
            },
        }
    }
    paths["/transactions/{xid}"] = {
        "get": {
            "operationId": "get_transaction",
            "summary": "blocks with status, attempts, output, error; the audit trail",
            "tags": ["transactions"],
            "parameters": [
                XID,
                {
                    "name": "traceback",
                    "in": "query",
                    "required": False,
                    "description": "include block tracebacks",
                    "schema": {"type": "boolean"},
                },
            ],
            "responses": {
                "200": _json(_ref("Transaction"), "the transaction"),
                **_errors(401, 404),
            },
        }
    }
    paths["/transactions/{xid}/plan"] = {
        "get": {
            "operationId": "plan_transaction",
            "summary": "dry run: what a rollforward / rollback would run",
            "tags": ["transactions"],
            "parameters": [XID],
            "responses": {"200": _json(_ref("Plan"), "the plan"), **_errors(401, 404)},
        }
    }
    paths["/transactions/{xid}/rollforward"] = _decision(
        "rollforward",
        "run a suspended transaction again from its failed block",
        "RollforwardBody",
        False,
    )
    paths["/transactions/{xid}/rollback"] = _decision(
        "rollback", "UNDO every block that ran, newest first", "RollbackBody", False
    )
    paths["/transactions/{xid}/pause"] = _decision(
        "pause",
        "park a running transaction at its next block boundary (a waiting one at once), "
        "reason paused; rollforward goes on",
        "PauseBody",
        False,
    )
    paths["/transactions/{xid}/compensated"] = _decision(
        "compensated", "mark the failed UNDO as done by hand", "CompensatedBody", True
    )
    paths["/transactions/{xid}/signals/{name}"] = _decision(
        "signal",
        "deliver a signal; a transaction waiting for it resumes",
        "SignalBody",
        False,
        [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": NO_NUL},
            }
        ],
    )
    for path, summary in (("/healthz", "liveness"), ("/readyz", "readiness")):
        paths[path] = {
            "get": {
                "operationId": path.strip("/"),
                "summary": summary,
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "ok"),
                    "503": _json(_ref("Error"), "not ready"),
                },
            }
        }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "tags": ["operations"],
            "security": [],
            "responses": {
                "200": {
                    "description": "text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    title = Path(app.root).name if app.root else "switchback app"
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": f"{title} (switchback)",
            "version": "1",
            "description": "Scenario endpoints run as durable DO/UNDO transactions. A parked "
            "transaction answers 424 with its failed block; decide on it through /transactions. "
            "Everywhere — any JSON string or key, any path or query parameter — text with a NUL "
            "(U+0000) or a lone surrogate, and numbers beyond the double range, are refused "
            "with 422 `input not accepted`, each place named. Request headers are limited in "
            "size and count (431), bodies in size (413).",
        },
        "paths": paths,
        "components": {
            "schemas": {**copy.deepcopy(SCHEMAS), "RollforwardBody": rollforward_body(app)},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
