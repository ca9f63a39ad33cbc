"""Intent: why a message was sent — by a person, or by a machine that must not be answered.

Every envelope gets ``intent`` in ``human``, ``auto-reply``, ``out-of-office``, ``bounce``,
``list``, ``ticket-system-ack`` or ``own-notification``. Auto-reply and bounce loops are the most
reported pain of helpdesks that ingest mail; the auto-reply stage never answers anything but
``human``, and rules can route on it.

Signals, strongest first:
  own-notification  our loop header (`LOOP_HEADER`), or From = our reply address, or an
                    automated message from one of our own domains;
  bounce            a delivery report (``multipart/report; report-type=delivery-status``,
                    RFC 3464, which the parser exposes as ``bounce``), or a null reverse-path
                    (RFC 5321 section 4.5.5) from MAILER-DAEMON/postmaster or with DSN wording;
  ticket-system-ack another helpdesk acknowledging (its headers, or acknowledgement wording
                    together with an automation signal);
  out-of-office     vacation wording in the subject (Outlook's "Automatic reply:"), with an
                    automation signal;
  auto-reply        RFC 3834 ``Auto-Submitted: auto-replied``, ``X-Autoreply``,
                    ``X-Autorespond``, ``Precedence: auto_reply``, ``X-Auto-Response-Suppress``,
                    read receipts (RFC 8098), a null sender;
  list              ``List-Id``/``List-Unsubscribe``/``List-Post`` (RFC 2369/2919),
                    ``Precedence: list|bulk|junk``;
  auto-reply        any other ``Auto-Submitted`` value but ``no`` (auto-generated notices).
"""

from __future__ import annotations

import re

from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.fastre import lower_pattern
from mailgate.pipeline.view import EnvView, domain_of

LOOP_HEADER = "X-Mailgate-Loop"
"""Put on every message mailgate sends (auto-replies); seeing it inbound means a loop."""


def _ci(pattern: str) -> re.Pattern[str]:
    """Compiled to search *lower-cased* text without IGNORECASE (much faster; see fastre)."""
    low = lower_pattern(pattern)
    return re.compile(low) if low is not None else re.compile(pattern)


SUBJECT_LIMIT = 1000
BODY_LIMIT = 3000

INTENTS = (
    "human",
    "auto-reply",
    "out-of-office",
    "bounce",
    "list",
    "ticket-system-ack",
    "own-notification",
)

_OOO_STRONG = _ci(
    r"^\s*(automatic reply|automatische antwort|réponse automatique|respuesta automática|"
    r"risposta automatica|resposta automática|automatisch antwoord|autosvar|"
    r"out of (the )?office( auto ?reply)?|abwesenheitsnotiz|abwesend|absence|fuera de la oficina|"
    r"auto(matic)?[- ]?reply|autoreply|vacation( reply)?)\s*[:\-]",
)
_OOO = _ci(
    r"\b(out of (the )?office|ooo|on (vacation|holiday|leave|annual leave)|away from (the )?office|"
    r"auto(matic)?[- ]?(reply|response|antwort)|abwesenheit|abwesend|urlaub|"
    r"absent|absence|en vacances|cong[ée]s|fuera de la oficina|vacaciones|ferie|vacation reply|"
    r"afwezig|i am (currently )?(out|away)|i'?m (currently )?(out|away))\b",
)
_DSN_SUBJECT = _ci(
    r"(undeliver(ed|able)|delivery (status notification|failure|has failed|incomplete)|"
    r"returned mail|mail delivery (failed|subsystem)|failure notice|non[- ]?delivery|"
    r"unzustellbar|nicht zustellbar|delivery failure|message not delivered|"
    r"could not be delivered|rejected:|mail system error)",
)
_DAEMON = _ci(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@")
_ACK_SUBJECT = _ci(
    r"(\b(request|ticket|case|incident|inquiry|support request|anfrage)\b[^\n]{0,60}?"
    r"\b(received|created|opened|logged|submitted|registered|eingegangen|erstellt)\b|"
    r"\[(request|ticket|case)\s*(received|#\s*\d+)|"
    r"^\s*(re:\s*)?\[?#?\s*[A-Z]{0,6}-?\d{3,}\]?\s*(received|created|opened)|"
    r"we(\s*'ve|\s+have)\s+received\s+your|thank(s| you) for (contacting|reaching out|your (email|message|request)))",
)
_ACK_BODY = _ci(
    r"(this is an automated (response|reply|message|notification)|"
    r"we(\s*'ve|\s+have) received your (request|email|e-mail|message|inquiry|enquiry)|"
    r"your (request|ticket|case) (\(#?\w+\) )?has been (received|created|opened|logged)|"
    r"a (support )?(ticket|case) has been (created|opened)|"
    r"your (ticket|case|request) (number|id|#) is|"
    r"##-? ?please type your reply above this line ?-?##|"
    r"please do not (reply|respond) to this (email|e-mail|message)|do not reply to this (email|message))",
)
_HELPDESK_HEADERS = (
    "x-zendesk-",
    "x-freshdesk-",
    "x-otrs-",
    "x-rt-loop-prevention",
    "rt-ticket",
    "rt-originator",
    "x-helpscout-",
    "x-kayako-",
    "x-zammad-",
    "x-servicenow-",
    "x-jira-fingerprint",
    "x-desk-",
    "x-gorgias-",
    "x-groove-",
    "x-hs-",
    "x-freshservice-",
    "x-osticket-",
)
_HELPDESK_MAILERS = _ci(
    r"(zendesk|freshdesk|freshservice|otrs|znuny|request tracker|help ?scout|kayako|zammad|"
    r"servicenow|osticket|jira service|gorgias|groove|happyfox|spiceworks)",
)


def _own(ctx: Context | None) -> tuple[frozenset[str], tuple[str, ...], str]:
    """(our exact domains, our wildcard suffixes, our reply address), once per run."""
    if ctx is None:
        return frozenset(), (), ""
    cached = ctx.memo.get("own")
    if cached is None:
        domains = ctx.root.domains
        cached = (
            frozenset(d.name.lower() for d in domains if not d.is_wildcard),
            tuple(d.name[1:].lower() for d in domains if d.is_wildcard),
            (ctx.root.reply.from_ or "").lower(),
        )
        ctx.memo["own"] = cached
    result: tuple[frozenset[str], tuple[str, ...], str] = cached
    return result


def classify_intent(env: Envelope, ctx: Context | None = None) -> tuple[str, list[str]]:
    """(intent, the signals that decided it)."""
    view = ctx.view(env) if ctx is not None else EnvView(env)
    h = view.headers
    reasons: list[str] = []

    def first(name: str) -> str:
        values = h.get(name)
        return values[0].strip().lower() if values else ""

    subject = view.text("subject")[:SUBJECT_LIMIT].lower()
    sender = view.sender
    smtp = view.section("envelope")
    raw_from = smtp.get("mailFrom")
    # RFC 5321 4.5.5: MAIL FROM:<> (an unknown sender, None, is not a null one)
    null_sender = isinstance(raw_from, str) and raw_from.strip() in ("", "<>")

    # own-notification
    own_domains, own_suffixes, reply_from = _own(ctx)

    auto_submitted = first("auto-submitted")
    precedence = first("precedence")
    auto_replied = auto_submitted.startswith("auto-replied")
    auto_generated = bool(auto_submitted) and not auto_submitted.startswith("no")
    explicit_auto = (
        auto_replied
        or "x-autoreply" in h
        or "x-autorespond" in h
        or first("x-autogenerated") == "reply"
        or precedence == "auto_reply"
    )
    suppress = "x-auto-response-suppress" in h
    content_type = first("content-type")
    report = "multipart/report" in content_type
    report_type = ""
    m = re.search(r'report-type\s*=\s*"?([\w-]+)', content_type)
    if m:
        report_type = m.group(1).lower()

    def ours(domain: str) -> bool:
        d = domain.strip().strip("<>").rpartition("@")[2].lower()
        return bool(d) and (d in own_domains or bool(own_suffixes and d.endswith(own_suffixes)))

    loop = first(LOOP_HEADER.lower())
    if LOOP_HEADER.lower() in h:
        if ctx is None or ours(loop):
            return "own-notification", [f"{LOOP_HEADER}: {loop[:60]}"]
        # another mailgate (or similar helpdesk) acknowledging what we sent it
        return "ticket-system-ack", [f"{LOOP_HEADER} of another system: {loop[:60]}"]
    x_loop = first("x-loop")
    if x_loop and ours(x_loop):
        return "own-notification", [f"X-Loop names our domain: {x_loop[:60]}"]
    if reply_from and sender == reply_from:
        return "own-notification", [f"From is our reply address {reply_from}"]
    sender_domain = domain_of(sender) if sender else ""
    if (
        sender_domain
        and (
            sender_domain in own_domains or (own_suffixes and sender_domain.endswith(own_suffixes))
        )
        and (auto_generated or explicit_auto)
    ):
        return "own-notification", [f"automated message from our domain {sender_domain}"]

    # bounce
    if env.get("bounce"):
        return "bounce", ["delivery status report (bounce)"]
    if report and report_type == "delivery-status":
        return "bounce", ["multipart/report; report-type=delivery-status"]
    if null_sender and (_DAEMON.match(sender) or _DSN_SUBJECT.search(subject)):
        return "bounce", ["null sender with delivery-failure wording"]
    if _DAEMON.match(sender) and _DSN_SUBJECT.search(subject):
        return "bounce", [f"{sender} with delivery-failure wording"]

    # ticket-system-ack
    helpdesk = [k for k in h if k.startswith(_HELPDESK_HEADERS)]
    mailer = first("x-mailer") or first("user-agent")  # first() lower-cases
    if mailer and _HELPDESK_MAILERS.search(mailer):
        helpdesk.append(f"x-mailer {mailer[:40]}")
    automated = (
        auto_generated
        or explicit_auto
        or null_sender
        or suppress
        or precedence
        in (
            "bulk",
            "junk",
            "list",
        )
    )
    ack_subject = bool(_ACK_SUBJECT.search(subject))
    body = view.text("text")[:BODY_LIMIT].lower()
    if helpdesk and (automated or ack_subject or _ACK_BODY.search(body)):
        return "ticket-system-ack", [f"helpdesk header {helpdesk[0]}"] + (
            ["acknowledgement wording"] if ack_subject or _ACK_BODY.search(body) else []
        )
    if ack_subject and (automated or _ACK_BODY.search(body)):
        return "ticket-system-ack", [
            "acknowledgement wording",
            "automation signal" if automated else "acknowledgement body",
        ]

    # out-of-office
    if _OOO_STRONG.search(subject):
        return "out-of-office", ["vacation subject prefix"]
    if (automated or explicit_auto) and (_OOO.search(subject) or _OOO.search(body[:1000])):
        return "out-of-office", ["automation signal with vacation wording"]

    # auto-reply (explicit)
    if explicit_auto:
        reasons.append("RFC 3834 auto-reply header")
        return "auto-reply", reasons
    if report and report_type == "disposition-notification":
        return "auto-reply", ["read receipt (RFC 8098 disposition-notification)"]
    if null_sender:
        return "auto-reply", ["null sender (RFC 5321 4.5.5)"]

    # list
    for name in ("list-id", "list-unsubscribe", "list-post"):
        if name in h:
            return "list", [f"{name} header (RFC 2369/2919)"]
    if precedence in ("list", "bulk", "junk"):
        return "list", [f"Precedence: {precedence}"]

    if auto_generated:
        return "auto-reply", [f"Auto-Submitted: {auto_submitted}"]
    if suppress:
        return "auto-reply", ["X-Auto-Response-Suppress header"]
    return "human", ["no automation signal"]


class IntentStage:
    name = "intent"
    description = (
        "human, auto-reply, out-of-office, bounce, list, ticket-system-ack, own-notification"
    )

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        intent, reasons = classify_intent(env, ctx)
        env["intent"] = intent
        ctx.note(f"{intent}: {', '.join(reasons)}")
        return None


STAGE = IntentStage()
