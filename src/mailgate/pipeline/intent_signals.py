"""The intent signal table: what each header, sender or wording says about who sent a message.

Why a table: "is this a machine?" is answered by dozens of conventions (RFCs, Microsoft's,
each helpdesk's and email service provider's own headers), and each one is a claim that must
cite its source, be tested on its own and be explained in an audit ("auto-reply because
``X-Autorespond`` (cPanel/Exim)"). A 300-line ``if`` chain could do none of that. Here every
`Signal` is one row: an id, the intent it points to, a *group* (what kind of evidence it is),
the groups that must corroborate it (``needs``), the groups that explain it away
(``vetoed_by``), and the system, meaning and source shown in ``docs/intent.md``
(``tests/test_intent_docs.py`` keeps the two identical).

How the rows combine is in ``stages/intent.py``: rows are tried in table order (the order *is*
the precedence: our own loop, bounces, calendar replies, helpdesk acknowledgements,
out-of-office, auto-replies, lists, then generic automation), and the first row that fired,
is not vetoed and, when it ``needs`` support, has a live corroborating row decides.

Weak evidence only ever *hints*: a helpdesk header is on an agent's human reply too, a
``Precedence`` header is added by some forwarders, wording alone is what people write. Strong
evidence (RFC 3834 ``auto-replied``, a delivery report, ``List-Id``) decides alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from functools import cached_property, lru_cache
from typing import Any

import ahocorasick_rs

from mailgate.envelope import LOOP_HEADER, Envelope
from mailgate.pipeline.fastre import lower_pattern, required_literals, utf8_safe

SUBJECT_LIMIT = 1000
BODY_LIMIT = 3000
"""Wording is looked for in the first 3000 characters: what an auto-reply says, it says first."""

INTENTS = (
    "human",
    "auto-reply",
    "out-of-office",
    "bounce",
    "list",
    "ticket-system-ack",
    "own-notification",
    "calendar",
)


AUTOMATION = frozenset(
    {"auto-replied", "auto-generated", "responder", "precedence", "suppress", "null-sender"}
)
"""Groups that mean "a program sent this" (they corroborate wording and vendor hints)."""


def ci(pattern: str) -> re.Pattern[str]:
    """Compiled to search *lower-cased* text without IGNORECASE (much faster; see fastre)."""
    low = lower_pattern(pattern)
    return re.compile(low) if low is not None else re.compile(pattern)


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class Own:
    """Our domains (exact and ``*.`` suffixes) and reply addresses, for own-notification."""

    domains: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    addresses: frozenset[str] = frozenset()
    known: bool = False
    """False when classified without a config (``classify_intent(env)``): loops count as ours."""

    def domain(self, value: str) -> bool:
        d = value.strip().strip("<>").rpartition("@")[2].lower().rstrip(".")
        return bool(d) and (d in self.domains or d.endswith(self.suffixes or ("\0",)))

    def address(self, value: str) -> bool:
        """One of our reply addresses, or its per-ticket alias ``local+T-7@domain``."""
        local, _, domain = value.lower().partition("@")
        return value.lower() in self.addresses or f"{local.partition('+')[0]}@{domain}" in (
            self.addresses
        )


def own_of(domains: Any, reply: Any) -> Own:
    """`Own` from ``[[domains]]`` and ``[reply]`` (from and every tenant_from).

    Built once per distinct set of those values (parsing the reply addresses cost ~0.1 ms per
    message); keyed on the values, not the config object, so a changed config is seen."""
    values = [reply.from_]
    if isinstance(reply.tenant_from, dict):
        values.extend(v for v in reply.tenant_from.values() if isinstance(v, str))
    return _own_from(tuple(str(d.name) for d in domains), tuple(values))


@lru_cache(maxsize=64)
def _own_from(names: tuple[str, ...], values: tuple[str, ...]) -> Own:
    exact: set[str] = set()
    suffixes: list[str] = []
    for raw in names:
        name = raw.lower().rstrip(".")
        if name.startswith("*."):
            suffixes.append(name[1:])
            exact.add(name[2:])
        else:
            exact.add(name)
    addresses = frozenset(parseaddr(v)[1].lower() for v in values if parseaddr(v)[1])
    exact.update(a.rpartition("@")[2] for a in addresses)
    return Own(frozenset(exact), tuple(suffixes), addresses, True)


class GateLiterals:
    """Every literal the body gates look for (``body_gate``), found in one pass.

    Each `Body` test may run its regular expression only when one of its required literals
    occurs in the body. Testing them one ``in`` at a time scanned the first 3000 characters of
    every message ~60 times (~100 µs a message, 7 % of the worker's CPU at 4 KB); an
    Aho-Corasick automaton (``ahocorasick_rs``) finds every literal that occurs, overlapping ones
    included, in one pass (~7 µs). The `Body` tests register their literals when built."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.version = 0
        """Bumped when a literal is added: hits found before do not cover it."""
        self._words: list[str] = []
        self._odd: list[str] = []  # literals the automaton cannot take
        self._automaton: ahocorasick_rs.AhoCorasick | None = None

    def add(self, literals: tuple[str, ...]) -> None:
        new = [w for w in dict.fromkeys(literals) if w and w not in self.known]
        if new:
            self.known.update(new)
            for w in new:
                # the automaton silently loses patterns after one it cannot encode (a lone
                # surrogate): such a literal is looked for on its own
                (self._words if utf8_safe(w) else self._odd).append(w)
            self._automaton = None
            self.version += 1

    def found(self, text: str) -> frozenset[str]:
        """The registered literals that occur in ``text``."""
        odd = {w for w in self._odd if w in text}
        if not self._words:
            return frozenset(odd)
        if self._automaton is None:
            self._automaton = ahocorasick_rs.AhoCorasick(self._words)
        try:
            found = self._automaton.find_matches_as_strings(text, overlapping=True)
        except UnicodeEncodeError:  # a lone surrogate (bytes a broken charset left): one by one
            found = [w for w in self._words if w in text]
        return frozenset(found).union(odd)


GATE_LITERALS = GateLiterals()
HEADER_PREFIXES = GateLiterals()
"""``"\n" + prefix`` of every vendor header family (`Prefixed`, `Vendor`), found in a message's
`Facts.header_names` in one pass instead of ~60 substring tests a message."""


@dataclass
class Facts:
    """What the signals read, computed once per message (lower-cased, capped)."""

    headers: dict[str, list[str]]
    subject: str
    body: str
    sender: str
    null_sender: bool
    env: Envelope
    own: Own = field(default_factory=Own)
    results: dict[str, str | None] = field(default_factory=dict)
    """Signal id -> evidence (None: did not fire), as `decide` tests the rows: a row that
    reads other rows (``helpdesk-agent``) reuses them instead of testing them again."""
    _gate_hits: dict[int, frozenset[str]] = field(default_factory=dict, repr=False)
    _prefix_hits: tuple[int, frozenset[str]] | None = field(default=None, repr=False)
    """(`HEADER_PREFIXES.version`, the needles found in `header_names`)."""

    def first(self, name: str) -> str:
        values = self.headers.get(name)
        return values[0].strip().lower() if values else ""

    def may_contain(self, gate: tuple[str, ...], limit: int) -> bool:
        """Whether one of ``gate``'s literals occurs in the first ``limit`` characters of the
        body (one pass for all the gates of a message: `GateLiterals`)."""
        if "" in gate:
            return True
        if not GATE_LITERALS.known.issuperset(gate):  # a test built elsewhere: look itself
            body = self.body[:limit]
            return any(lit in body for lit in gate)
        found = self._gate_hits.get(limit)
        if found is None:
            found = self._gate_hits[limit] = GATE_LITERALS.found(self.body[:limit])
        return not found.isdisjoint(gate)

    @cached_property
    def header_names(self) -> str:
        """Every header name, each after a newline: ``"\n" + prefix`` occurs in it exactly
        when a name starts with ``prefix`` (~40 vendors test the same ~15 names per message)."""
        return "".join("\n" + name for name in self.headers)

    def may_have_prefix(self, needles: tuple[str, ...]) -> bool:
        """Whether a header name starts with one of the prefixes ``needles`` spells as
        ``"\n" + prefix`` (one pass for every vendor of a message: `HEADER_PREFIXES`)."""
        if not HEADER_PREFIXES.known.issuperset(needles):  # not registered: look itself
            return any(n in self.header_names for n in needles)
        hits = self._prefix_hits
        if hits is None or hits[0] != HEADER_PREFIXES.version:
            hits = self._prefix_hits = (
                HEADER_PREFIXES.version,
                HEADER_PREFIXES.found(self.header_names),
            )
        return not hits[1].isdisjoint(needles)

    @cached_property
    def message_id(self) -> str:
        return str(self.env.get("messageId") or self.first("message-id")).lower().strip("<> ")


Test = Callable[[Facts], str | None]
"""Evidence text when the signal fires, else None."""


# --------------------------------------------------------------------------- test builders
# Small frozen callables rather than closures: the table is built once at import, and a
# callable's logic runs (and can be checked, mutation-tested, read in a traceback) per message.


@lru_cache(maxsize=256)
def rx(pattern: str) -> re.Pattern[str]:
    """A pattern that searches *lower-cased* text, compiled once."""
    return ci(pattern)


@lru_cache(maxsize=256)
def body_gate(pattern: str) -> tuple[str, ...] | None:
    """`required_literals` of ``rx(pattern)``, worked out once."""
    return required_literals(rx(pattern))


@dataclass(frozen=True)
class Present:
    """Any of these headers is present (with any value)."""

    names: tuple[str, ...]

    def __call__(self, f: Facts) -> str | None:
        for name in self.names:
            if name in f.headers:
                return f"{name}: {f.first(name)[:60]}"
        return None


@dataclass(frozen=True)
class Prefixed:
    """A header whose name starts with one of ``prefixes`` (a vendor's header family)."""

    prefixes: tuple[str, ...]

    def __post_init__(self) -> None:
        prefix_needles(self.prefixes)

    def __call__(self, f: Facts) -> str | None:
        return prefixed_header(f, self.prefixes)


@lru_cache(maxsize=256)
def prefix_needles(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """``"\n" + prefix`` of each prefix, registered for the one-pass search."""
    needles = tuple("\n" + prefix for prefix in prefixes)
    HEADER_PREFIXES.add(needles)
    return needles


def prefixed_header(f: Facts, prefixes: tuple[str, ...]) -> str | None:
    if not f.may_have_prefix(prefix_needles(prefixes)):
        return None
    for name in f.headers:
        if name.startswith(prefixes):
            return f"header {name}"
    return None


@dataclass(frozen=True)
class Value:
    """Header ``name`` (its first value, lower-cased) matches ``pattern``."""

    name: str
    pattern: str

    def __call__(self, f: Facts) -> str | None:
        return header_value(f, self.name, self.pattern)


def header_value(f: Facts, name: str, pattern: str) -> str | None:
    v = f.first(name)
    return f"{name}: {v[:60]}" if v and rx(pattern).search(v) else None


@dataclass(frozen=True)
class Either:
    tests: tuple[Test, ...]

    def __call__(self, f: Facts) -> str | None:
        for t in self.tests:
            found = t(f)
            if found is not None:
                return found
        return None


@dataclass(frozen=True)
class Subject:
    pattern: str

    def __call__(self, f: Facts) -> str | None:
        m = rx(self.pattern).search(f.subject)
        return f"subject {m.group(0).strip()[:40]!r}" if m else None


@dataclass(frozen=True)
class Body:
    pattern: str
    limit: int = BODY_LIMIT

    def __post_init__(self) -> None:
        gate = body_gate(self.pattern)
        if gate:
            GATE_LITERALS.add(gate)

    def __call__(self, f: Facts) -> str | None:
        gate = body_gate(self.pattern)
        if gate is not None and not f.may_contain(gate, self.limit):
            return None  # no phrase of the pattern can be in the body
        m = rx(self.pattern).search(f.body[: self.limit])
        return f"body {m.group(0).strip()[:40]!r}" if m else None


@dataclass(frozen=True)
class Sender:
    """The From (else MAIL FROM) address matches ``pattern``."""

    pattern: str

    def __call__(self, f: Facts) -> str | None:
        return f"sender {f.sender}" if f.sender and rx(self.pattern).search(f.sender) else None


@dataclass(frozen=True)
class Vendor:
    """A helpdesk or ESP: its header family, its X-Mailer/User-Agent, or its Message-ID host."""

    prefixes: tuple[str, ...]
    mailer: str = ""
    msgid: str = ""

    def __post_init__(self) -> None:
        prefix_needles(self.prefixes)

    def __call__(self, f: Facts) -> str | None:
        found = prefixed_header(f, self.prefixes)
        if found is None and self.mailer:
            found = header_value(f, "x-mailer", self.mailer) or header_value(
                f, "user-agent", self.mailer
            )
        if found is None and self.msgid:
            mid = f.message_id
            if rx(self.msgid).search(mid):
                found = f"Message-ID @{mid.rpartition('@')[2][:40]}"
        return found


@dataclass(frozen=True)
class Report:
    """``multipart/report`` of this report-type (RFC 6522)."""

    kind: str

    def __call__(self, f: Facts) -> str | None:
        ctype = f.first("content-type")
        pattern = r'^multipart/report\s*;.*report-type\s*=\s*"?' + self.kind + r'"?\s*(;|$)'
        return f"multipart/report; report-type={self.kind}" if re.search(pattern, ctype) else None


# --------------------------------------------------------------------------- fact tests


def _loop_ours(f: Facts) -> str | None:
    if LOOP_HEADER.lower() not in f.headers:
        return None
    v = f.first(LOOP_HEADER.lower())
    return f"{LOOP_HEADER}: {v[:60]}" if not f.own.known or f.own.domain(v) else None


def _loop_theirs(f: Facts) -> str | None:
    if LOOP_HEADER.lower() not in f.headers or _loop_ours(f) is not None:
        return None
    return f"{LOOP_HEADER} of another system: {f.first(LOOP_HEADER.lower())[:60]}"


def _x_loop_ours(f: Facts) -> str | None:
    for word in re.split(r"[\s,<>]+", f.first("x-loop")):
        if "@" in word and f.own.domain(word):
            return f"X-Loop: {word[:60]}"
    return None


def _from_reply_address(f: Facts) -> str | None:
    return f"From is our reply address {f.sender}" if f.own.address(f.sender) else None


def _own_domain_sender(f: Facts) -> str | None:
    return f"sender in our domain {f.sender.rpartition('@')[2]}" if f.own.domain(f.sender) else None


def _parsed_bounce(f: Facts) -> str | None:
    return (
        "parsed delivery status (RFC 3464 or a mailer-daemon's text)"
        if f.env.get("bounce")
        else None
    )


def _null_sender(f: Facts) -> str | None:
    return "MAIL FROM:<>" if f.null_sender else None


def _calendar(f: Facts) -> str | None:
    cal = f.env.get("calendar")
    method = str(cal.get("method") or "").upper() if isinstance(cal, dict) else ""
    return (
        f"METHOD:{method}" if method in ("REPLY", "CANCEL", "COUNTER", "DECLINECOUNTER") else None
    )


def _role_sender(f: Facts) -> str | None:
    local = f.sender.rpartition("@")[0]
    return f"sender {local}@…" if local and _ROLE.match(local) else None


def _forwarder(f: Facts) -> str | None:
    found = Present(
        (
            "resent-from",
            "resent-sender",
            "x-forwarded-for",
            "x-forwarded-to",
            "x-ms-exchange-organization-autoforwarded",
            "x-google-original-from",
        )
    )(f)
    if found is not None:
        return found
    fwd = f.env.get("forwarded")
    if isinstance(fwd, list) and any(isinstance(x, dict) and x.get("inline") for x in fwd):
        return "inline forward in the body"
    return None


_ROLE = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|noreply|newsletters?|news|marketing|"
    r"mailer|notifications?|notify|info-?mail|bounces?)([-+._].*)?$"
)

_OOO_PREFIX = (
    r"^\s*(automatic reply|auto(matic)?[- ]?reply|autoreply|automatische antwort|"
    r"abwesenheitsnotiz|abwesend|réponse automatique|respuesta automática|risposta automatica|"
    r"resposta automática|automatisch antwoord|autosvar|automaattinen vastaus|"
    r"automatyczna odpowiedź|odpověď mimo kancelář|out of (the )?office( auto ?reply)?|"
    r"absence|fuera de la oficina|vacation( reply)?)\s*[:\-]"
)
_OOO_WORDING = (
    r"\b(out of (the )?office|ooo|on (vacation|holiday|leave|annual leave|parental leave)|"
    r"away from (the |my )?(office|desk)|auto(matic)?[- ]?(reply|response|antwort)|"
    r"abwesenheit|abwesend|urlaub|nicht im büro|absent|absence|en vacances|cong[ée]s|"
    r"fuera de la oficina|vacaciones|ferie|in ferie|vacation reply|afwezig|met vakantie|"
    r"i am (currently )?(out|away)|i'?m (currently )?(out|away)|with limited access to (e-?mail))\b"
)
_DSN_SUBJECT = (
    r"(undeliver(ed|able)|delivery (status notification|failure|has failed|incomplete)|"
    r"returned mail|mail delivery (failed|subsystem)|failure notice|non[- ]?delivery|"
    r"unzustellbar|nicht zustellbar|message not delivered|could not be delivered|"
    r"mail system error|non remis|no se puede entregar|non recapitabile|onbestelbaar)"
)
_DSN_BODY = (
    r"(this is the mail system at host|i'm sorry to have to inform you that your message|"
    r"delivery to the following recipients? failed|message could not be delivered|"
    r"the following (message|address(es)?) (to|had)|permanent fatal errors|"
    r"diagnostic-code:|final-recipient:|your message wasn'?t delivered|"
    r"mail delivery failed: returning message to sender|recipient address rejected|"
    r"\b5\.\d{1,3}\.\d{1,3}\b.{0,40}(user unknown|mailbox|not found|does not exist))"
)
_ACK_SUBJECT = (
    r"(\b(request|ticket|case|incident|inquiry|enquiry|support request|anfrage|demande|"
    r"solicitud|richiesta)\b[^\n]{0,60}?\b(received|created|opened|logged|submitted|registered|"
    r"updated|solved|resolved|closed|eingegangen|erstellt|reçue|recibida|ricevuta)\b|"
    r"\[(request|ticket|case)\s*(received|#\s*\d+)|"
    r"^\s*(re:\s*)?\[?#?\s*[a-z]{0,6}-?\d{3,}\]?\s*(received|created|opened)|"
    r"we(\s*'ve|\s+have)\s+received\s+your|"
    r"thank(s| you) for (contacting|reaching out|your (email|message|request)))"
)
_ACK_BODY = (
    r"(this is an automated (response|reply|message|notification)|"
    r"we(\s*'ve|\s+have) received your (request|email|e-mail|message|inquiry|enquiry)|"
    r"your (request|ticket|case) (\(#?\w+\) )?has been (received|created|opened|logged|updated|"
    r"solved|resolved|closed)|a (support )?(ticket|case) has been (created|opened)|"
    r"your (ticket|case|request) (number|id|#) is|"
    r"(we|our team) will (get back to you|respond) (shortly|as soon as possible|within)|"
    r"ihre anfrage (ist eingegangen|wurde erstellt)|nous avons (bien )?reçu votre|"
    r"hemos recibido su|abbiamo ricevuto la (sua|tua))"
)
_BULK_BODY = (
    r"(\bunsubscribe\b|\bopt[- ]out\b|manage (your )?(email )?preferences|"
    r"view (this email |it )?in (your )?browser|abmelden|newsletter abbestellen|"
    r"se désabonner|désinscri|darse de baja|cancelar (la )?suscripción|annulla l'iscrizione|"
    r"uitschrijven|cancelar inscrição)"
)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Signal:
    """One row of the table (see the module docstring for how rows combine)."""

    id: str
    intent: str
    group: str
    test: Test
    system: str
    meaning: str
    source: str
    needs: frozenset[str] = frozenset()
    vetoed_by: frozenset[str] = frozenset()


_ACK_SUPPORT = frozenset({"ack-subject", "ack-body", "auto-replied", "responder"})
_HELPDESKS: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    # (id, system, header prefixes, X-Mailer/User-Agent pattern, Message-ID host pattern)
    ("zendesk", "Zendesk", ("x-zendesk-",), "zendesk", r"@zendesk\.com$"),
    (
        "freshdesk",
        "Freshdesk / Freshservice",
        ("x-freshdesk-", "x-freshservice-", "x-fc-machinegenerated"),
        "freshdesk|freshservice",
        r"@freshdesk\.com$",
    ),
    ("helpscout", "Help Scout", ("x-helpscout-",), "help ?scout", r"@helpscout\.net$"),
    ("intercom", "Intercom", ("x-intercom-",), "intercom", r"@intercom-mail\.com$"),
    ("jira", "Jira Service Management", ("x-jira-fingerprint", "x-atlassian-mail-"), "jira", ""),
    ("servicenow", "ServiceNow", ("x-servicenow-",), "servicenow", r"@service-now\.com$"),
    ("salesforce", "Salesforce Service Cloud", ("x-sfdc-",), "salesforce", r"@sfdc\.net$"),
    ("hubspot", "HubSpot", ("x-hubspot-", "x-hs-"), "hubspot", ""),
    ("zohodesk", "Zoho Desk", ("x-zohodesk-",), "zoho ?desk", ""),
    ("kayako", "Kayako", ("x-kayako-",), "kayako", ""),
    ("front", "Front", ("x-front-",), "frontapp", r"@frontapp\.com$"),
    ("gorgias", "Gorgias", ("x-gorgias-",), "gorgias", ""),
    ("otrs", "OTRS / Znuny", ("x-otrs-", "x-znuny-"), "otrs|znuny", ""),
    ("osticket", "osTicket", ("x-osticket-",), "osticket", ""),
    ("rt", "Request Tracker", ("x-rt-", "rt-ticket", "rt-originator"), "request tracker", ""),
    ("spiceworks", "Spiceworks", ("x-spiceworks-",), "spiceworks", ""),
    ("zammad", "Zammad", ("x-zammad-",), "zammad", ""),
    (
        "others",
        "Desk.com, Groove, HappyFox, FreeScout",
        ("x-desk-", "x-groove-", "x-happyfox-", "x-freescout-"),
        "groove|happyfox|freescout",
        "",
    ),
)
HELPDESK_GROUP = "helpdesk"

SIGNALS: tuple[Signal, ...] = (
    # --- our own mail coming back (loops)
    Signal(
        "mailgate-loop",
        "own-notification",
        "own",
        _loop_ours,
        "mailgate",
        f"{LOOP_HEADER} naming one of our domains: a reply we sent came back",
        "mailgate (reply/compose.py puts it on every reply)",
    ),
    Signal(
        "mailgate-loop-foreign",
        "ticket-system-ack",
        "loop-foreign",
        _loop_theirs,
        "mailgate",
        f"{LOOP_HEADER} of another mailgate: its acknowledgement of our mail",
        "mailgate",
    ),
    Signal(
        "x-loop-ours",
        "own-notification",
        "own",
        _x_loop_ours,
        "any MTA / list manager",
        "X-Loop names one of our addresses",
        "practice (procmail, Sympa, RT)",
    ),
    Signal(
        "from-reply-address",
        "own-notification",
        "own",
        _from_reply_address,
        "mailgate",
        "From is our reply address (or its per-ticket alias local+T-n@) of any tenant",
        "mailgate [reply] from / tenant_from",
    ),
    Signal(
        "own-domain-automated",
        "own-notification",
        "own-domain",
        _own_domain_sender,
        "mailgate",
        "sender in one of our domains, with an automation signal",
        "mailgate [[domains]]",
        needs=AUTOMATION,
    ),
    # --- bounces
    Signal(
        "dsn-parsed",
        "bounce",
        "dsn",
        _parsed_bounce,
        "any MTA",
        "the parser read a delivery status report",
        "RFC 3464 / mime.bounce",
    ),
    Signal(
        "dsn-report",
        "bounce",
        "dsn",
        Report("delivery-status"),
        "any MTA",
        "multipart/report; report-type=delivery-status",
        "RFC 3462/6522, RFC 3464",
    ),
    Signal(
        "exchange-ndr",
        "bounce",
        "dsn",
        Present(
            (
                "x-ms-exchange-message-is-ndr",
                "x-failed-recipients",
            )
        ),
        "Exchange / Exim",
        "non-delivery report header (X-MS-Exchange-Message-Is-Ndr, X-Failed-Recipients)",
        "Microsoft Exchange; Exim spec ch. 50",
    ),
    Signal(
        "daemon-sender",
        "bounce",
        "daemon",
        Sender(r"^(mailer-?daemon|mail-daemon|postmaster)@"),
        "any MTA",
        "MAILER-DAEMON or postmaster sender",
        "RFC 5321 4.5.1 / practice",
        needs=frozenset({"dsn-subject", "dsn-body", "null-sender"}),
    ),
    Signal(
        "dsn-subject",
        "bounce",
        "dsn-subject",
        Subject(_DSN_SUBJECT),
        "any MTA",
        "delivery-failure wording in the subject (en, de, fr, es, it, nl)",
        "Postfix, Exim, Exchange, Gmail texts",
        needs=frozenset({"daemon", "dsn-body", "null-sender"}),
    ),
    Signal(
        "dsn-body",
        "bounce",
        "dsn-body",
        Body(_DSN_BODY),
        "any MTA",
        "delivery-failure wording in the body",
        "Postfix bounce(5) template, Exim, Gmail, Exchange",
        needs=frozenset({"daemon", "dsn-subject", "null-sender"}),
    ),
    # --- calendar replies
    Signal(
        "calendar-reply",
        "calendar",
        "calendar",
        _calendar,
        "any calendar client",
        "an iCalendar REPLY, CANCEL, COUNTER or DECLINECOUNTER: a machine's answer, not a question",
        "RFC 5546 (iTIP) section 3.2",
    ),
    # --- helpdesk and CRM acknowledgements
    *(
        Signal(
            f"helpdesk-{key}",
            "ticket-system-ack",
            HELPDESK_GROUP,
            Vendor(prefixes, mailer, msgid),
            name,
            "sent by this helpdesk; an acknowledgement only with ack wording or an auto-reply mark"
            " (an agent's reply carries the same headers)",
            "headers as the vendor sends them; Zendesk's own suspension list",
            needs=_ACK_SUPPORT,
        )
        for key, name, prefixes, mailer, msgid in _HELPDESKS
    ),
    Signal(
        "ack-subject",
        "ticket-system-ack",
        "ack-subject",
        Subject(_ACK_SUBJECT),
        "any helpdesk",
        "acknowledgement wording in the subject (request received, ticket #n created…)",
        "helpdesk default templates",
        needs=AUTOMATION | frozenset({"ack-body", HELPDESK_GROUP}),
    ),
    Signal(
        "ack-body",
        "ticket-system-ack",
        "ack-body",
        Body(_ACK_BODY),
        "any helpdesk",
        "acknowledgement wording in the body (we have received your request…)",
        "helpdesk default templates",
        needs=AUTOMATION | frozenset({"ack-subject", HELPDESK_GROUP}),
    ),
    # --- out of office
    Signal(
        "ooo-subject",
        "out-of-office",
        "ooo-subject",
        Subject(_OOO_PREFIX),
        "mail clients, panels",
        "vacation prefix on the subject (Outlook 'Automatic reply:', 'Auto:', 'Abwesenheitsnotiz:'…)",
        "Outlook, Exchange, Gmail, Sieve vacation (RFC 5230 default 'Auto:'), cPanel/Plesk/DirectAdmin",
    ),
    Signal(
        "ooo-auto-prefix",
        "out-of-office",
        "ooo-wording",
        Subject(r"^\s*auto:"),
        "Sieve vacation, Roundcube, Dovecot",
        "'Auto:' subject prefix with an automation signal ('Auto:' alone may be a car)",
        "RFC 5230 section 5.3 (default subject)",
        needs=AUTOMATION,
    ),
    Signal(
        "ooo-wording",
        "out-of-office",
        "ooo-wording",
        Either(
            (
                Subject(_OOO_WORDING),
                Body(_OOO_WORDING, 1000),
            )
        ),
        "any responder",
        "vacation wording with an automation signal",
        "practice",
        needs=AUTOMATION | frozenset({"rules-loop"}),
    ),
    # --- auto-replies
    Signal(
        "auto-replied",
        "auto-reply",
        "auto-replied",
        Value("auto-submitted", r"^auto-replied"),
        "any responder",
        "Auto-Submitted: auto-replied",
        "RFC 3834 section 5.2",
    ),
    Signal(
        "responder-header",
        "auto-reply",
        "responder",
        Either(
            (
                Present(
                    (
                        "x-autoreply",
                        "x-autorespond",
                        "x-autoresponder",
                        "x-autoreply-from",
                        "x-mail-autoreply",
                        "x-vacation",
                    )
                ),
                Value("x-autogenerated", r"^reply"),
            )
        ),
        "cPanel/Exim, Plesk, qmail, Yahoo, Lotus, osTicket",
        "a responder's marker header (X-Autoreply, X-Autorespond, X-Autogenerated: Reply…)",
        "vendor practice; Zendesk's suspension list",
    ),
    Signal(
        "precedence-auto-reply",
        "auto-reply",
        "responder",
        Value("precedence", r"^auto[_-]reply"),
        "vacation(1), Exim",
        "Precedence: auto_reply",
        "RFC 3834 section 3.1.8 (legacy practice)",
    ),
    Signal(
        "rules-loop",
        "auto-reply",
        "rules-loop",
        Present(("x-ms-exchange-inbox-rules-loop",)),
        "Outlook / Exchange rules",
        "a mailbox rule replied (reply-with-template); a rule that only "
        "forwarded is vetoed by the forward",
        "Microsoft Exchange transport headers",
        vetoed_by=frozenset({"forwarder"}),
    ),
    Signal(
        "read-receipt",
        "auto-reply",
        "receipt",
        Report("disposition-notification"),
        "any client",
        "a read receipt",
        "RFC 8098",
    ),
    Signal(
        "null-sender",
        "auto-reply",
        "null-sender",
        _null_sender,
        "any MTA",
        "empty return path: no answer expected",
        "RFC 5321 section 4.5.5",
    ),
    # --- lists and bulk
    Signal(
        "list-header",
        "list",
        "list",
        Present(
            (
                "list-id",
                "list-unsubscribe",
                "list-post",
                "list-unsubscribe-post",
                "list-help",
                "list-subscribe",
                "list-owner",
                "list-archive",
            )
        ),
        "mailing lists, ESPs",
        "List-* header",
        "RFC 2369, RFC 2919, RFC 8058",
    ),
    Signal(
        "precedence-bulk",
        "list",
        "precedence",
        Value("precedence", r"^(bulk|list|junk)"),
        "list managers, bulk senders",
        "Precedence: bulk|list|junk (not when a forwarder added it)",
        "RFC 2076 / RFC 3834 3.1.8 practice",
        vetoed_by=frozenset({"forwarder", "helpdesk-agent"}),
    ),
    Signal(
        "esp-header",
        "list",
        "esp",
        Vendor(
            (
                "x-mailgun-",
                "x-ses-",
                "x-sg-eid",
                "x-sg-id",
                "x-mc-user",
                "x-mandrill-",
                "x-mailjet-",
                "x-mj-",
                "x-campaign",
                "x-mailchimp-",
                "x-sib-",
                "x-mailin-",
                "x-msfbl",
                "x-sfmc-",
                "x-cmail-",
                "x-mailerlite-",
                "x-klaviyo-",
                "x-pm-message-id",
                "x-marketo-",
                "x-mktmailid",
                "x-ems-",
                "x-rpcampaign",
            )
        ),
        "Mailgun, Amazon SES, SendGrid, Mailchimp/Mandrill, Mailjet, Brevo, SparkPost, Klaviyo…",
        "sent through an email service provider; bulk only with bulk wording, a robot sender or CSA",
        "vendor headers (X-Mailgun-Sid, X-SES-Outgoing, X-SG-EID, X-MC-User…)",
        needs=frozenset({"bulk-wording", "robot-sender", "csa", "feedback-id"}),
    ),
    Signal(
        "feedback-id",
        "list",
        "feedback-id",
        Present(("feedback-id",)),
        "Gmail FBL senders",
        "Feedback-ID: a bulk sender's campaign id",
        "Gmail bulk sender guidelines",
        needs=frozenset({"bulk-wording", "robot-sender", "esp", "csa"}),
    ),
    Signal(
        "csa",
        "list",
        "csa",
        Present(("x-csa-complaints",)),
        "CSA-certified senders",
        "X-CSA-Complaints: a certified bulk sender",
        "Certified Senders Alliance",
        needs=frozenset({"bulk-wording", "robot-sender", "esp", "feedback-id"}),
    ),
    Signal(
        "bulk-wording",
        "list",
        "bulk-wording",
        Body(_BULK_BODY, 100_000),
        "newsletters",
        "unsubscribe or view-in-browser wording",
        "CAN-SPAM / GDPR unsubscribe practice",
        needs=frozenset({"esp", "robot-sender", "csa", "feedback-id", "precedence"}),
    ),
    Signal(
        "robot-sender",
        "list",
        "robot-sender",
        _role_sender,
        "notification robots",
        "noreply/newsletter/notifications sender (only with bulk evidence)",
        "RFC 3834 section 2 practice",
        needs=frozenset({"bulk-wording", "esp", "csa", "feedback-id"}),
    ),
    # --- generic automation, last
    Signal(
        "auto-generated",
        "auto-reply",
        "auto-generated",
        Value("auto-submitted", r"^(?!no\b)[a-z]"),
        "any program",
        "Auto-Submitted other than no (auto-generated, auto-notified)",
        "RFC 3834 section 5; RFC 5436",
        vetoed_by=frozenset({"helpdesk-agent"}),
    ),
    Signal(
        "suppress",
        "auto-reply",
        "suppress",
        Value("x-auto-response-suppress", r"\b(all|oof|autoreply)\b"),
        "Microsoft Exchange / Outlook",
        "X-Auto-Response-Suppress asking for no auto-replies (All, OOF, AutoReply; DR/RN alone don't count)",
        "Microsoft [MS-OXCMAIL] 2.2.3.2.14",
        vetoed_by=frozenset({"helpdesk-agent"}),
    ),
    Signal(
        "cron",
        "auto-reply",
        "auto-generated",
        Present(("x-cron-env",)),
        "cron",
        "output of a cron job",
        "Vixie cron",
    ),
    # --- human counter-evidence (never decides; explains vetoes)
    Signal(
        "forwarder",
        "human",
        "forwarder",
        _forwarder,
        "forwarders, Exchange auto-forward",
        "forwarded by a person or a forwarder: Precedence and rule headers are the forwarder's",
        "RFC 5322 3.6.6 Resent-*; Exchange/Gmail forwarding headers",
    ),
)


def _helpdesk_agent(f: Facts) -> str | None:
    """Helpdesk headers from a person's address: an agent's reply unless ack wording says not."""
    if f.null_sender or _role_sender(f) is not None:
        return None
    for s in SIGNALS:
        if s.group != HELPDESK_GROUP:
            continue
        evidence = f.results[s.id] if s.id in f.results else s.test(f)
        if evidence is not None:
            return f"{s.system} headers from a person (an agent's reply)"
    return None


SIGNALS = (
    *SIGNALS,
    Signal(
        "helpdesk-agent",
        "human",
        "helpdesk-agent",
        _helpdesk_agent,
        "any helpdesk",
        "helpdesk headers from a person's address: Auto-Submitted/X-Auto-Response-Suppress are the "
        "helpdesk's request not to be answered, not a machine's text",
        "Zendesk, Freshdesk, Help Scout agent replies",
    ),
)

BY_ID = {s.id: s for s in SIGNALS}
assert len(BY_ID) == len(SIGNALS), "signal ids must be unique"


def markdown_table() -> str:
    """The table of ``docs/intent.md`` (a test keeps the doc equal to this)."""
    rows = ["| signal | intent | system | meaning | needs | source |", "|---|---|---|---|---|---|"]
    for s in SIGNALS:
        needs = ", ".join(sorted(s.needs)) or "—"
        if s.vetoed_by:
            needs += f"; not with {', '.join(sorted(s.vetoed_by))}"
        cells = (f"`{s.id}`", s.intent, s.system, s.meaning, needs, s.source)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
