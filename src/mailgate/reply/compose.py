"""The acknowledgement as an RFC 5322 message: subject, threading and RFC 3834 headers.

Every header is set through the ``email`` package (``EmailMessage`` with an SMTP policy), and
every value that came from the original message is first stripped of control characters, so a
subject or name carrying CR/LF (raw, or smuggled in an RFC 2047 encoded word) cannot add a
header; the package itself refuses CR/LF in a value as a second line of defence.

Headers written (RFC 3834 section 3.1 and 5, RFC 5322 section 3.6.4):

- ``From``: the configured reply address; ``To``: the envelope return path of the original;
- ``Subject``: ``Re: <original> [Ticket T-1042]`` with earlier ``Re:``/``Fwd:`` prefixes
  (several languages) and ticket tokens removed, so they never stack;
- ``In-Reply-To``: the original Message-ID; ``References``: the original References (or its
  In-Reply-To) followed by its Message-ID, trimmed to the first and the latest ids;
- ``Message-ID``: fresh, derived from the acknowledged message's id (a replayed run yields the
  same id); ``Date``;
- ``Reply-To``: the per-ticket alias ``support+T-1042@domain`` so the answer threads back;
- ``Auto-Submitted: auto-replied``, ``X-Auto-Response-Suppress: All`` (stops Exchange/Outlook
  out-of-office replies to the acknowledgement) and ``X-Mailgate-Loop`` (mailgate's own loop
  marker); ``Precedence`` is deliberately not written (RFC 3834 section 3.1.8 discourages it).
"""

from __future__ import annotations

import dataclasses
import email.policy
import functools
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr

from mailgate.envelope import LOOP_HEADER

_CTL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")
_WS = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|antw|antwort|ref|tr|rif|r|odp|vá|ynt|res|enc|atb|"
    r"回复|回覆|答复|转发|轉寄)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*)+",
    re.IGNORECASE,
)
_MSGID = re.compile(r"<[^<>\s\x00-\x1f\x7f]{1,250}>")
MAX_SUBJECT = 200
MAX_NAME = 64
MAX_REFERENCES = 10


class _CachedRegistry(HeaderRegistry):
    """The stdlib registry builds a new header class on every lookup (a third of the cost of
    a reply); the classes depend only on the name, so build each once."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = super().__getitem__(name)
            self._classes[key] = cls
        return cls


_REGISTRY = _CachedRegistry()
# RFC 5322 section 2.1.1: lines up to 998 characters. Folding at 78 would turn an unbreakable
# Message-ID into an RFC 2047 encoded word, which breaks threading, so headers fold at 998.
POLICY = email.policy.SMTP.clone(max_line_length=998, header_factory=_REGISTRY)
POLICY_UTF8 = email.policy.SMTPUTF8.clone(max_line_length=998, header_factory=_REGISTRY)


def clean(value: object, limit: int = 998) -> str:
    """One line of text: control characters (CR, LF, NUL…) become spaces, whitespace collapses,
    lone surrogates become U+FFFD."""
    if not isinstance(value, str):
        return ""
    # lone surrogates (undecodable bytes kept by a lenient decoder) cannot be encoded: U+FFFD
    if not value.isascii():
        value = _SURROGATE.sub("\ufffd", value)
    text = _WS.sub(" ", _CTL.sub(" ", value)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


@functools.lru_cache(maxsize=64)
def ticket_token_re(prefix: str) -> re.Pattern[str]:
    """``[Ticket T-1042]`` tokens (any number) of a ticket prefix; the thread stage reads them."""
    return re.compile(r"\s*\[\s*ticket\s*[:#]?\s*" + re.escape(prefix) + r"\d+\s*\]", re.IGNORECASE)


@functools.lru_cache(maxsize=256)
def _exact_token_re(ticket: str) -> re.Pattern[str]:
    return re.compile(r"\s*\[\s*ticket\s*[:#]?\s*" + re.escape(ticket) + r"\s*\]", re.IGNORECASE)


def reply_subject(original: object, ticket: str | None, ticket_prefix: str = "T-") -> str:
    """``Re: <original> [Ticket T-1042]``, never ``Re: Re: … [Ticket T-1042] [Ticket T-1042]``."""
    base = clean(original)
    token = ticket_token_re(ticket_prefix)
    if ticket and not token.search(f"[Ticket {ticket}]"):
        token = _exact_token_re(ticket)  # a ticket outside the configured prefix (rare)
    base = token.sub(" ", base)
    previous = None
    while previous != base:  # "Re: [Ticket T-1] Fwd: x" -> "x"
        previous = base
        base = _PREFIX.sub("", base)
        base = token.sub(" ", base).strip()
    base = _WS.sub(" ", base).strip()
    if len(base) > MAX_SUBJECT:
        base = base[: MAX_SUBJECT - 1].rstrip() + "…"
    parts = ["Re:", base or "(no subject)"]
    if ticket:
        parts.append(f"[Ticket {clean(ticket, 40)}]")
    return " ".join(parts)


@functools.lru_cache(maxsize=256)
def parse_from(value: str) -> tuple[str, str]:
    """``"Acme Support" <support@example.test>`` -> (display name, address)."""
    name, addr = parseaddr(value)
    return clean(name, MAX_NAME), addr.strip()


def alias_address(address: str, ticket: str | None) -> str:
    """``support@example.test`` + ``T-1042`` -> ``support+T-1042@example.test`` (RFC 5233)."""
    local, _, domain = address.rpartition("@")
    if not ticket or not local:
        return address
    base = local.split("+", 1)[0]
    tag = re.sub(r"[^A-Za-z0-9_.-]", "", ticket)
    return f"{base}+{tag}@{domain}" if tag else address


def reply_message_id(msg_id: str, domain: str) -> str:
    """``<ack.01jbx…@example.test>``: unique per acknowledged message, stable across replays."""
    token = re.sub(r"[^A-Za-z0-9]", "", msg_id.split("_", 1)[-1]).lower() or "x"
    host = re.sub(r"[^A-Za-z0-9.-]", "", domain) or "mailgate.invalid"
    return f"<ack.{token}@{host}>"


def msg_ids(values: object) -> list[str]:
    """Well-formed ``<id>`` tokens of a Message-ID/References value (a string or a list)."""
    items = values if isinstance(values, list) else [values]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.extend(_MSGID.findall(item))
    return out


def references_for(message_id: object, references: object, in_reply_to: object) -> list[str]:
    """RFC 5322 section 3.6.4: the parent's References (else In-Reply-To), then its Message-ID."""
    chain = msg_ids(references) or msg_ids(in_reply_to)[:1]
    own = msg_ids(message_id)[:1]
    chain = list(dict.fromkeys([*chain, *own]))
    if len(chain) > MAX_REFERENCES:  # keep the thread root and the most recent ids
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1) :]]
    return chain


@dataclass(frozen=True)
class ReplyHeaders:
    from_name: str
    from_address: str
    to: str
    subject: str
    message_id: str
    reply_to: str
    in_reply_to: str | None
    references: list[str]
    ticket: str | None = None


@dataclass(frozen=True)
class ReplyDraft:
    """A rendered reply before it becomes bytes: what the outbox stores.

    Building the MIME message costs about a millisecond with the email package, so the
    pipeline stores the draft (headers and rendered bodies, as JSON) and the SMTP worker builds
    the message when it sends it (`build`), with the Date of sending.
    """

    headers: ReplyHeaders
    text: str
    html: str | None = None

    def to_json(self) -> str:
        h = self.headers
        headers = {f.name: getattr(h, f.name) for f in dataclasses.fields(h)}
        data = {"headers": headers, "text": self.text, "html": self.html}
        return json.dumps(data, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, value: str) -> ReplyDraft:
        data = json.loads(value)
        return cls(ReplyHeaders(**data["headers"]), data["text"], data.get("html"))

    def build(self, *, now: float | None = None) -> bytes:
        return build_message(self.headers, self.text, self.html, now=now)


def needs_smtputf8(*addresses: str) -> bool:
    return any(not a.isascii() for a in addresses)


def build_message(
    headers: ReplyHeaders, text: str, html: str | None, *, now: float | None = None
) -> bytes:
    """The reply as bytes (CRLF line ends), ready to sign and send."""
    utf8 = needs_smtputf8(headers.from_address, headers.to, headers.reply_to)
    msg = EmailMessage(policy=POLICY_UTF8 if utf8 else POLICY)
    msg["From"] = _address(headers.from_name, headers.from_address)
    msg["To"] = _address("", headers.to)
    msg["Subject"] = clean(headers.subject)
    msg["Date"] = format_datetime(datetime.fromtimestamp(now or time.time(), UTC))
    msg["Message-ID"] = headers.message_id
    if headers.in_reply_to:
        msg["In-Reply-To"] = headers.in_reply_to
    if headers.references:
        msg["References"] = " ".join(headers.references)
    msg["Reply-To"] = _address(headers.from_name, headers.reply_to)
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 section 5.1
    msg["X-Auto-Response-Suppress"] = "All"
    # mailgate's own loop marker: a mailgate receiving this classifies it as own-notification
    msg[LOOP_HEADER] = headers.from_address.rpartition("@")[2] or "mailgate"
    if headers.ticket:
        msg["X-Mailgate-Ticket"] = clean(headers.ticket, 40)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()


def _address(name: str, address: str) -> Address:
    """An Address from its parts: ``addr_spec=`` refuses a non-ASCII local part (an SMTPUTF8
    return path, RFC 6532), ``username=``/``domain=`` take it as it is."""
    local, _, domain = address.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def addresses_of(value: str) -> list[str]:
    return [a for _, a in getaddresses([value]) if a]
