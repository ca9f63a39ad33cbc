"""Records and protocols of the delivery area: the event log, the webhook outbox, the DLQ.

The webhook and the polling API are two views of one durable event log: a processed message
becomes one event row (``PublishIntent``), and one outbox row per webhook target, in the
transaction that stores the envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.store.base import Intent


@dataclass(frozen=True)
class PublishIntent(Intent):
    """Publish the processed envelope as an event.

    ``targets`` are webhook target ids (``WebhookConfig.name``, or its URL when unnamed), already
    filtered to the message's tenant. ``ordering_key`` (the thread id) makes events of one thread
    leave in order while different threads go in parallel.
    """

    event_type: str = "message.received"
    targets: tuple[str, ...] = ()
    ordering_key: str | None = None
