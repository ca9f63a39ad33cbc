"""The OpenAPI 3.0 document of the HTTP API, served at ``/openapi.json``.

Kept true by tests: schemathesis generates requests from it against a running server and
checks every response (status, content type, schema), and the API tests read it too.
"""

from __future__ import annotations

from typing import Any

from mailgate import __version__
from mailgate.api.common import NAME_PATTERN


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_UNAUTHORIZED = {
    **_err("Missing or unknown bearer token"),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The message id (msg_…) or its event id (evt_…)",
    "schema": {"type": "string", "minLength": 1},
}
_NULL_STR = {"type": "string", "nullable": True}
_NULL_TIME = {"type": "string", "format": "date-time", "nullable": True}


def document() -> dict[str, Any]:
    doc = _document()
    for item in doc["paths"].values():
        for op in item.values():
            op["responses"].setdefault("400", _err("Unknown query parameter or bad value"))
    return doc


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mailgate API",
            "version": __version__,
            "description": (
                "Poll processed mail as events (cursor + ack), fetch raw MIME and attachments. "
                "The same events, with the same ids, are pushed by signed webhooks; an event "
                "consumed by either is shown as such by both."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Envelope": {
                    "type": "object",
                    "description": "The normalized envelope (see the envelope JSON Schema)",
                    "additionalProperties": True,
                    "properties": {
                        "id": {"type": "string"},
                        "attachments": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": True,
                                "properties": {"id": {"type": "string"}, "url": _NULL_STR},
                            },
                        },
                    },
                },
                "Delivery": {
                    "type": "object",
                    "required": ["target", "state", "attempts"],
                    "properties": {
                        "target": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": ["pending", "delivered", "dead", "skipped"],
                        },
                        "attempts": {"type": "integer", "minimum": 0},
                        "lastStatus": {"type": "integer", "nullable": True},
                        "lastError": _NULL_STR,
                        "deliveredAt": _NULL_TIME,
                        "nextAttemptAt": _NULL_TIME,
                    },
                },
                "Message": {
                    "type": "object",
                    "required": ["id", "eventId", "type", "cursor", "acked", "envelope"],
                    "properties": {
                        "id": {"type": "string", "description": "message id (msg_…)"},
                        "eventId": {
                            "type": "string",
                            "description": "event id (evt_…), the webhook-id header of pushes",
                        },
                        "type": {"type": "string"},
                        "cursor": {"type": "string"},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "receivedAt": {"type": "string", "format": "date-time"},
                        "acked": {"type": "boolean"},
                        "ackedAt": _NULL_TIME,
                        "ackedBy": {
                            "type": "string",
                            "nullable": True,
                            "description": "webhook:<target> or api:<token name>",
                        },
                        "deliveredAt": _NULL_TIME,
                        "traceId": _NULL_STR,
                        "envelope": {"$ref": "#/components/schemas/Envelope"},
                        "deliveries": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Delivery"},
                        },
                    },
                },
                "MessageList": {
                    "type": "object",
                    "required": ["data", "next_cursor", "has_more"],
                    "properties": {
                        "data": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Message"},
                        },
                        "next_cursor": _NULL_STR,
                        "has_more": {"type": "boolean"},
                    },
                },
                "Ack": {
                    "type": "object",
                    "required": ["id", "eventId", "acked", "ackedAt"],
                    "properties": {
                        "id": {"type": "string"},
                        "eventId": {"type": "string"},
                        "acked": {"type": "boolean", "enum": [True]},
                        "ackedAt": {"type": "string", "format": "date-time"},
                        "ackedBy": _NULL_STR,
                    },
                },
                "LabelRequest": {
                    "type": "object",
                    "required": ["queue"],
                    "additionalProperties": False,
                    "properties": {
                        "queue": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 100,
                            "pattern": NAME_PATTERN,
                        },
                        "tags": {
                            "type": "array",
                            "maxItems": 50,
                            "items": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 100,
                                "pattern": NAME_PATTERN,
                            },
                        },
                    },
                },
                "Label": {
                    "type": "object",
                    "required": ["id", "queue", "tags", "labelledAt"],
                    "properties": {
                        "id": {"type": "string"},
                        "queue": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "labelledBy": {"type": "string"},
                        "labelledAt": {"type": "string", "format": "date-time"},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string"},
                        "checks": {"type": "object", "additionalProperties": True},
                    },
                },
            },
        },
        "paths": {
            "/v1/messages": {
                "get": {
                    "operationId": "listMessages",
                    "summary": "Unacknowledged events of the token's tenant, oldest first",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "cursor",
                            "in": "query",
                            "description": "next_cursor of the previous page",
                            "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 500,
                                "default": 50,
                            },
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of events",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/MessageList"}
                                }
                            },
                        },
                        "400": _err("Bad cursor or limit"),
                        "401": _UNAUTHORIZED,
                    },
                }
            },
            "/v1/messages/{id}": {
                "get": {
                    "operationId": "getMessage",
                    "summary": "One event with its envelope and webhook deliveries",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "responses": {
                        "200": {
                            "description": "The event",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Message"}
                                }
                            },
                        },
                        "401": _UNAUTHORIZED,
                        "404": _err("No such message for this tenant"),
                    },
                }
            },
            "/v1/messages/{id}/ack": {
                "post": {
                    "operationId": "ackMessage",
                    "summary": "Acknowledge (idempotent: a repeat keeps the first time)",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "responses": {
                        "200": {
                            "description": "Acknowledged",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Ack"}}
                            },
                        },
                        "401": _UNAUTHORIZED,
                        "404": _err("No such message for this tenant"),
                    },
                }
            },
            "/v1/messages/{id}/label": {
                "post": {
                    "operationId": "labelMessage",
                    "summary": "Say which queue (and tags) a message belongs in: a label for the routing model",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/LabelRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Labelled (replaces an earlier label of the message)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Label"}
                                }
                            },
                        },
                        "401": _UNAUTHORIZED,
                        "404": _err("No such message for this tenant"),
                    },
                }
            },
            "/v1/messages/{id}/raw": {
                "get": {
                    "operationId": "getRawMessage",
                    "summary": "The exact bytes received over SMTP",
                    "security": [{"bearer": []}],
                    "parameters": [_ID],
                    "responses": {
                        "200": {
                            "description": "The raw message",
                            "content": {
                                "message/rfc822": {"schema": {"type": "string", "format": "binary"}}
                            },
                        },
                        "401": _UNAUTHORIZED,
                        "404": _err("No such message for this tenant"),
                    },
                }
            },
            "/v1/subjects/{address}": {
                "delete": {
                    "operationId": "eraseSubject",
                    "summary": "Erase a data subject (GDPR Art. 17): every message they sent or"
                    " received, and all derived from them. Admin tokens only",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "address",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 3},
                        },
                        {
                            "name": "tenant",
                            "in": "query",
                            "description": "Only this tenant (default: every tenant)",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "dry_run",
                            "in": "query",
                            "description": "Only count what would be erased",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The erasure report (counts, erased message ids, the"
                            " subject's keyed hash; never the address)",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "additionalProperties": True}
                                }
                            },
                        },
                        "400": _err("Not one complete address, or a bad dry_run"),
                        "401": _UNAUTHORIZED,
                        "403": _err("The token is not an admin token"),
                    },
                }
            },
            "/v1/attachments/{id}": {
                "get": {
                    "operationId": "getAttachment",
                    "summary": "Attachment bytes by signed, expiring URL (no bearer token)",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                        {
                            "name": "expires",
                            "in": "query",
                            "required": True,
                            "description": "Unix time the URL expires",
                            "schema": {"type": "integer"},
                        },
                        {
                            "name": "sig",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The attachment, as a download",
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                                "*/*": {"schema": {"type": "string", "format": "binary"}},
                            },
                        },
                        "403": _err("Expired or altered URL"),
                        "404": _err("No such attachment"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Alive",
                    "responses": {
                        "200": {
                            "description": "The process answers",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Status"}
                                }
                            },
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Store reachable, disk space left, outbox not stuck",
                    "responses": {
                        status: {
                            "description": text,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Status"}
                                }
                            },
                        }
                        for status, text in (("200", "Ready"), ("503", "Not ready"))
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "Metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.0 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }
