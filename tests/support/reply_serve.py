"""Helpers of the tests that run ``mailgate serve`` with auto-replies on."""

from __future__ import annotations

import json
from typing import Any

from tests.support.server import MailgateServer


def reply_toml(smarthost: str, **extra: Any) -> str:
    """A ``[reply]`` section through ``smarthost`` retrying fast; ``extra`` adds keys."""
    lines = [
        "[reply]",
        "enabled = true",
        f'smarthost = "{smarthost}"',
        'from = "Example Support <support@example.test>"',
        'retry_schedule = "0s, 100ms*100"',
        'timeout = "5s"',
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def outbox(srv: MailgateServer) -> list[dict[str, Any]]:
    """The server's reply outbox rows, oldest first."""
    with srv.db() as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM reply_outbox ORDER BY rowid")]
