"""Prometheus metric objects shared by the subsystems (one registry, served at ``/metrics``).

Each subsystem updates its own metrics here; nothing else in mailgate keeps counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

SMTP_SESSIONS = Counter("mailgate_smtp_sessions", "SMTP sessions opened", registry=REGISTRY)
SMTP_ACTIVE = Gauge("mailgate_smtp_active_sessions", "SMTP sessions open now", registry=REGISTRY)
SMTP_ACCEPTED = Counter(
    "mailgate_smtp_accepted_messages", "Messages answered 250 (spooled durably)", registry=REGISTRY
)
SMTP_REJECTED = Counter(
    "mailgate_smtp_rejected",
    "Commands or messages refused, by reason",
    ["reason"],
    registry=REGISTRY,
)
SPOOL_BATCH = Histogram(
    "mailgate_store_commit_batch_size",
    "Writes committed together in one transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
INGEST_PROCESSED = Counter(
    "mailgate_ingest_processed",
    "Messages processed by the ingest worker, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
PARSE_ERRORS = Counter(
    "mailgate_parse_errors", "Messages whose envelope carries parseErrors", registry=REGISTRY
)
PARSE_SECONDS = Histogram(
    "mailgate_parse_seconds", "Time to parse one message into an envelope", registry=REGISTRY
)
AUTH_SECONDS = Histogram(
    "mailgate_auth_seconds", "Time for SPF+DKIM+DMARC+ARC of one message", registry=REGISTRY
)
QUARANTINED = Counter(
    "mailgate_quarantined", "Messages quarantined, by reason", ["reason"], registry=REGISTRY
)
SPOOL_BACKLOG = Gauge(
    "mailgate_spool_backlog", "Accepted messages not yet processed", registry=REGISTRY
)

AUTH_ACTIONS = Counter(
    "mailgate_auth_actions",
    "Authentication enforcement decisions: the action taken and, in shadow mode, the one it would take",
    ["action", "would"],
    registry=REGISTRY,
)


def record_auth_action(report: dict[str, object]) -> None:
    """Count one AuthReport's action (and shadow-mode ``would``) from its JSON form."""
    action = report.get("authAction")
    if isinstance(action, dict):
        AUTH_ACTIONS.labels(
            action=str(action.get("action") or ""), would=str(action.get("would") or "")
        ).inc()


SCAN_TOTAL = Counter(
    "mailgate_scan",
    "Content scans by engine (rspamd, clamav) and outcome (clean, spam, ham, virus, error)",
    ["engine", "outcome"],
    registry=REGISTRY,
)
SCAN_SECONDS = Histogram(
    "mailgate_scan_seconds",
    "Time one content-scan engine took for one message (errors included)",
    ["engine"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
