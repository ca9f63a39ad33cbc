"""What one SMTP session knows (``Session``) and what one mail transaction carries (``Envelope``).

Plain data shared by the protocol (``session.py``, which fills them from the wire) and the
handler (``handler.py``, which decides on them and spools the message): neither imports the
other's internals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mailgate.recipients import Accepted


@dataclass(slots=True)
class Session:
    peer: Any
    """The socket's peer address (``(ip, port)`` for TCP)."""
    host_name: str | None = None
    """The HELO/EHLO argument; None until the client has greeted (and again after STARTTLS)."""
    extended_smtp: bool = False
    ssl: Any = None
    """The ``ssl.SSLObject`` once STARTTLS has completed, else None."""
    proxy_data: Any = None
    """aiosmtpd's ``ProxyData`` when the listener reads a PROXY header, else None."""


@dataclass(slots=True)
class Envelope:
    mail_from: str | None = None
    """The MAIL FROM path as given; ``"<>"`` for the null reverse-path."""
    mail_options: list[str] = field(default_factory=list)
    smtp_utf8: bool = False
    rcpt_tos: list[str] = field(default_factory=list)
    rcpt_options: list[str] = field(default_factory=list)
    content: bytes | None = None
    """The message after DATA, dot-stuffing removed."""
    spf_task: asyncio.Task[Any] | None = None
    """SPF, started at MAIL FROM so that its DNS lookups overlap RCPT and DATA."""
    accepted: dict[str, Accepted] = field(default_factory=dict)
    """Each accepted recipient's verdict (its tenant)."""


def peer_ip(session: Session) -> str:
    """The client's IP: from the PROXY header when behind a load balancer, else the socket."""
    proxy = session.proxy_data
    if proxy is not None and getattr(proxy, "src_addr", None):
        return str(proxy.src_addr)
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")
