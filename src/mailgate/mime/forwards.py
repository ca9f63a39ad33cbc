"""Inline forwards: the original message quoted in the body by Gmail, Outlook, Apple Mail & co.

A forward sent as an attachment (``message/rfc822``) is read by ``structure.py``; most forwards
are *inline*: the client writes a marker and a small header block into the text. An agent or a
colleague who forwards a customer's mail into support is not the customer: ``customer`` names
the original sender, so threading, dedup and rules can use the person who actually wrote.

Recognised (each with its localized markers: en, de, fr, es, it, nl, pt):

* Gmail ``---------- Forwarded message ---------``, Thunderbird ``-------- Forwarded Message
  --------``, Yahoo ``----- Forwarded Message -----``: a dashed marker line;
* Apple Mail ``Begin forwarded message:`` (``Anfang der weitergeleiteten Nachricht:``…);
* Outlook ``-----Original Message-----`` and the bare ``From: … Sent: … To: … Subject:`` block
  (``Von:/Gesendet:/An:/Betreff:``, ``De :/Envoyé :/À :/Objet :``, ``De:/Enviado:/Para:/Asunto:``,
  ``Da:/Inviato:/A:/Oggetto:``, ``Van:/Verzonden:/Aan:/Onderwerp:``). Outlook writes the same
  block above the quoted mail of a *reply*, so it only counts when the subject says forward
  (``Fwd:``, ``FW:``, ``WG:``, ``TR:``, ``RV:``, ``I:``, ``Doorst:``, ``Enc:``).

Only text is read (the HTML body was already turned into ``text`` when there is no text part).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, cast

from mailgate.envelope import Address
from mailgate.mime.addresses import parse_address_list
from mailgate.mime.fields import parse_date
from mailgate.mime.text import lines_with

MAX_FORWARDS = 10
SCAN_LIMIT = 200_000
"""Characters of the body searched for forward markers."""
TEXT_LIMIT = 20_000
"""Characters of each forwarded text kept in the envelope."""

_DASHED = re.compile(
    r"^[ \t>]*-{3,}[ \t]*(?:forwarded message|original message|weitergeleitete nachricht|"
    r"ursprüngliche nachricht|message transféré|message d'origine|message original|"
    r"mensaje reenviado|mensaje original|messaggio inoltrato|messaggio originale|"
    r"doorgestuurd bericht|oorspronkelijk bericht|origineel bericht|mensagem encaminhada|"
    r"mensagem original|mensagem reencaminhada)[ \t]*-{3,}[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_APPLE = re.compile(
    r"^[ \t>]*(?:begin forwarded message|anfang der weitergeleiteten (?:nachricht|e-mail)|"
    r"début du message réexpédié|début du message transféré|inicio del mensaje reenviado|"
    r"comienzo del mensaje reenviado|inizio messaggio inoltrato|begin doorgestuurd bericht|"
    r"início da mensagem reencaminhada|começo da mensagem encaminhada)[ \t]*:[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
# One of these is in every phrase _APPLE matches (lower-cased): no phrase, no scan.
_APPLE_WORDS = (
    "forwarded message",
    "weitergeleiteten",
    "réexpédié",
    "transféré",
    "mensaje reenviado",
    "messaggio inoltrato",
    "doorgestuurd bericht",
    "encaminhada",
)
_FIELDS = {
    "from": ("from", "von", "de", "da", "van", "från", "fra", "od"),
    "date": ("date", "sent", "datum", "gesendet", "envoyé", "enviado", "enviada", "fecha",
             "inviato", "data", "verzonden", "verstuurd", "skickat"),
    "subject": ("subject", "betreff", "objet", "asunto", "oggetto", "onderwerp", "assunto",
                "ämne"),
    "to": ("to", "an", "à", "a", "para", "aan", "till", "til"),
    "cc": ("cc", "kopie", "copie", "cco"),
}  # fmt: skip
_FIELD_OF = {label: key for key, labels in _FIELDS.items() for label in labels}
_FIELD_LINE = re.compile(r"^[ \t>]*\*?([^\W\d_]{1,10})\*?[ \t]?:\*?[ \t]*(.*?)[ \t]*$")
_OUTLOOK_START = re.compile(
    r"^[ \t>]*\*?(?:from|von|de|da|van)\*?[ \t]?:\*?[ \t]+\S", re.IGNORECASE | re.MULTILINE
)
_FORWARD_SUBJECT = re.compile(
    r"^\s*(?:(?:re|aw|antw|sv|r|rif)\s*:\s*)*(?:fwd?|wg|tr|rv|i|doorst|enc|vs|vl)\s*:",
    re.IGNORECASE,
)
_MAILTO = re.compile(r"\[mailto:([^\]\s]+)\]|<mailto:([^>\s]+)>", re.IGNORECASE)
_DATE_FORMATS = (
    "%a, %b %d, %Y at %I:%M %p",  # Gmail: Thu, Apr 23, 2026 at 10:32 AM
    "%A, %B %d, %Y %I:%M %p",  # Outlook: Thursday, April 23, 2026 10:32 AM
    "%A, %B %d, %Y %H:%M",
    "%B %d, %Y at %I:%M:%S %p",  # Apple Mail (en-US): April 23, 2026 at 10:32:11 AM
    "%d %B %Y at %H:%M:%S",  # Apple Mail (en-GB): 23 April 2026 at 10:32:11
    "%d.%m.%Y %H:%M",  # Outlook (de): 23.04.2026 10:32
    "%d/%m/%Y %H:%M",  # Outlook (fr, es, it, pt)
    "%Y-%m-%d %H:%M",
)


def is_forward_subject(subject: str | None) -> bool:
    return bool(subject) and _FORWARD_SUBJECT.match(subject or "") is not None


def _address(value: str) -> Address | None:
    value = _MAILTO.sub(lambda m: f"<{m.group(1) or m.group(2)}>", value)
    found = parse_address_list([value.encode("utf-8", "surrogateescape")])
    return found[0] if found else None


def _date(value: str) -> str | None:
    """RFC 3339 when readable: RFC 5322 dates in UTC, clients' local forms without an offset."""
    found = parse_date(value)
    if found is not None:
        return found
    text = re.sub(
        r"\s+(?:(?!AM$|PM$)[A-Z]{2,5}|[+-]\d{4}|GMT[+-]\d{1,2}(?::\d\d)?)$", "", value.strip()
    )
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).isoformat()
        except ValueError:
            continue
    return None


def _header_block(lines: list[str], start: int) -> tuple[dict[str, str], int]:
    """The ``Field: value`` lines from ``start`` (blank lines before them skipped)."""
    i = start
    while i < len(lines) and not lines[i].strip(" \t>"):
        i += 1
    fields: dict[str, str] = {}
    last = ""
    while i < len(lines):
        line = lines[i]
        m = _FIELD_LINE.match(line)
        key = _FIELD_OF.get(m.group(1).lower()) if m else None
        if m is not None and key is not None:
            fields.setdefault(key, m.group(2))
            last = key
        elif last and line[:1] in (" ", "\t") and line.strip():
            fields[last] = f"{fields[last]} {line.strip()}"  # a folded value
        else:
            break
        i += 1
    return fields, i


def _apple_words(text: str) -> bool:
    """Whether a line could be an Apple-style marker: it ends with a colon, so only the lines
    holding one are searched for ``_APPLE_WORDS`` (a colon-heavy text: the whole text)."""
    lines = lines_with(text, ":")
    if lines is None:
        lowered = text.lower()
        return any(word in lowered for word in _APPLE_WORDS)
    for start, end in lines:
        line = text[start:end].lower()
        if any(word in line for word in _APPLE_WORDS):
            return True
    return False


def _markers(text: str, subject_says_forward: bool) -> list[tuple[int, int, str]]:
    """(marker start, header block start, style) of every forward marker, in order.

    A multi-line ``^``-anchored pattern is tried at every position of the body, which made
    this a tenth of a 100 KB message's parse; each pattern runs only when the literal text it
    cannot match without is present (dashes; one of the Apple-style phrases).
    """
    found: list[tuple[int, int, str]] = []
    dashed = _DASHED.finditer(text) if "-" in text and "---" in text else ()
    for m in dashed:
        word = m.group(0).lower()
        original = "original" in word or "ursprüngliche" in word or "origine" in word
        if original and not subject_says_forward:
            continue
        dashes = len(m.group(0).strip(" \t>")) - len(m.group(0).strip(" \t>").strip("-"))
        style = "outlook" if original else ("gmail" if dashes >= 18 else "thunderbird")
        if not original and m.group(0).strip(" \t>").startswith("-----") and dashes == 10:
            style = "yahoo"
        found.append((m.start(), m.end(), style))
    if _apple_words(text):
        found.extend((m.start(), m.end(), "apple") for m in _APPLE.finditer(text))
    if subject_says_forward:
        taken = {start for start, _, _ in found}
        found.extend(
            (m.start(), m.start(), "outlook")
            for m in _OUTLOOK_START.finditer(text)
            if m.start() not in taken
        )
    found.sort()
    return found


def inline_forwards(text: str | None, subject: str | None = None) -> list[dict[str, Any]]:
    """Every inline forward in ``text``, outermost first: from, date, subject, text, style."""
    if not text:
        return []
    text = text[:SCAN_LIMIT]
    markers = _markers(text, is_forward_subject(subject))
    out: list[dict[str, Any]] = []
    consumed = 0
    for start, block_start, style in markers:
        if start < consumed:  # a From: line inside the block just read
            continue
        head = text[block_start:]
        lines = head.split("\n")
        fields, used = _header_block(lines, 1 if block_start and head[:1] == "\n" else 0)
        if "from" not in fields or (style == "outlook" and len(fields) < 2):
            continue
        body_start = block_start + sum(len(line) + 1 for line in lines[:used])
        consumed = body_start
        end = next((m[0] for m in markers if m[0] >= body_start), len(text))
        body = text[body_start:end].strip("\n")
        out.append(
            {
                "from": _address(fields["from"]),
                "date": _date(fields.get("date", "")),
                "dateText": fields.get("date"),
                "subject": fields.get("subject"),
                "messageId": None,
                "text": body[:TEXT_LIMIT],
                "inline": True,
                "style": style,
            }
        )
        if len(out) >= MAX_FORWARDS:
            break
    return out


def _related(a: str, b: str) -> bool:
    """Same organisation, roughly: one domain equals or is a subdomain of the other."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def effective_customer(
    sender: Address | None, recipients: list[Address], forwards: list[dict[str, Any]]
) -> Address | None:
    """The original sender when a colleague forwarded a customer's mail, else None.

    A colleague: the forwarder's domain is the domain (or a sub/parent domain) of a recipient
    (``agent@yourco.com`` to ``support@help.yourco.com``). The customer: the first forwarded
    sender, outermost first, outside those domains. A customer who forwards a third party's
    mail is still the customer (no ``customer`` then: ``from`` is it).
    """
    forwarder = str(sender.get("email") or "") if sender else ""
    own = forwarder.rpartition("@")[2].lower()
    inside = [r["email"].rpartition("@")[2].lower() for r in recipients if r.get("email")]
    if not own or not any(_related(own, d) for d in inside):
        return None
    for fwd in forwards:
        original = fwd.get("from")
        if not isinstance(original, dict):
            continue
        domain = str(original.get("email") or "").rpartition("@")[2].lower()
        if domain and not _related(domain, own) and not any(_related(domain, d) for d in inside):
            result: Address = cast(Address, original)
            return result
    return None


def add_forwards(env: dict[str, Any], attached: list[dict[str, Any]]) -> None:
    """Fill ``forwarded`` (attached forwards, then inline ones) and ``customer`` of ``env``."""
    inline = inline_forwards(env.get("text"), env.get("subject"))
    forwards = attached + inline
    env["forwarded"] = forwards or None
    env["customer"] = effective_customer(
        env.get("from"), [*(env.get("to") or []), *(env.get("cc") or [])], forwards
    )
