"""Respond: decide whether to acknowledge a message, render the reply and queue it.

Runs last, after ``quarantine`` (a held message is never acknowledged). With ``[reply]
enabled`` it acknowledges human mail with the rules' template (``then.reply = "name"``), or
``default_template`` when no rule chose one; ``then.reply = false`` silences it. Every decision
is recorded in ``env["reply"]``:

- ``{"queued": true, "template", "outboxId", "to", "messageId"}`` when a reply was queued;
- ``{"queued": false, "sent": false, "reason", "detail"}`` when not, ``reason`` being a
  loop-protection token (``reply.guard``), ``rule``, a rate limit (``thread-limit``,
  ``sender-limit``, ``domain-limit``, ``global-cap``), ``already-acknowledged`` (a replayed
  message), ``no-tenant-address`` or a template problem (``template-missing``,
  ``template-refused``). The store re-checks the limits when it stores the reply and, if it
  suppresses it, rewrites this field (``outboxId`` kept), so the stored envelope tells the
  truth.

The From of an acknowledgement is always an address of the message's tenant (see
``reply.settings.from_for``): its Reply-To alias then brings the customer's answer back to
the same tenant and ticket.

The stage decides and renders; it never sends. The reply leaves as a ``ReplyIntent`` stored in
the transaction of the envelope (the store re-checks the limits there), plus a ``ThreadIntent``
for the reply's Message-ID, so the customer's answer to the acknowledgement threads by
In-Reply-To. The SMTP outbox worker (``delivery/smtp_out.py``) signs and sends it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from mailgate.config import Config
from mailgate.envelope import Envelope
from mailgate.envelope_view import EnvView, names, parse_time
from mailgate.per_object import PerObject
from mailgate.pipeline.base import Context, Verdict
from mailgate.recipients import RecipientPolicy
from mailgate.reply.compose import (
    MAX_NAME,
    ReplyDraft,
    ReplyHeaders,
    alias_address,
    clean,
    msg_ids,
    needs_smtputf8,
    references_for,
    reply_message_id,
    reply_subject,
)
from mailgate.reply.guard import Guard, OwnDomains
from mailgate.reply.settings import (
    from_for,
    kb_links,
    own_addresses,
    sla_text,
    templates_for,
)
from mailgate.reply.templates import TemplateProblem
from mailgate.store.pipeline import ThreadIntent
from mailgate.store.replies import ReplyIntent, ReplyPorts, reply_id_for

log = logging.getLogger("mailgate.reply")

HOUR = 3600.0


class RespondStage:
    name = "respond"
    description = "acknowledge human mail (RFC 3834): loop protection, rate limits, template"

    def __init__(self) -> None:
        self._guards: PerObject[Config, Guard] = PerObject(limit=8)
        self._policies: PerObject[Config, RecipientPolicy] = PerObject(limit=8)
        self._ports_ok: dict[type, bool] = {}

    def _reply_ports(self, ports: object) -> ReplyPorts | None:
        """The ports as `ReplyPorts` when they offer the reply look-ups, else None.

        A runtime Protocol check costs tens of microseconds, so it is made once per ports class
        (the check looks at methods, which the class defines).
        """
        kind = type(ports)
        known = self._ports_ok.get(kind)
        if known is None:
            known = isinstance(ports, ReplyPorts)
            self._ports_ok[kind] = known
        return cast(ReplyPorts, ports) if known else None

    def _guard(self, ctx: Context) -> Guard:
        def make(root: Config) -> Guard:
            return Guard(
                OwnDomains(root.domains, own_addresses(root.reply)),
                skip_dmarc_fail=root.reply.skip_dmarc_fail,
            )

        return self._guards.get(ctx.root, make)

    def _policy(self, ctx: Context) -> RecipientPolicy:
        return self._policies.get(ctx.root, lambda root: RecipientPolicy(root.domains))

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        reply = ctx.root.reply
        if not reply.enabled:
            return None
        view = EnvView(env)

        def skip(reason: str, detail: str = "") -> None:
            env["reply"] = {"queued": False, "sent": False, "reason": reason, "detail": detail}
            ctx.note(f"no reply: {reason}" + (f" ({detail})" if detail else ""))

        if ctx.reply is False:
            skip("rule", "a rule set reply = false")
            return None
        found = self._guard(ctx).check(env, view)
        if found is not None:
            skip(found.reason, found.detail)
            return None

        tenant = view.tenant
        # RFC 3834 section 4: the return path, never From/Reply-To. Its case is kept: local
        # parts may be case-sensitive (SRS and VERP addresses carry base64 hashes).
        recipient = return_path(env)
        raw_thread = env.get("thread")
        thread: dict[str, Any] = raw_thread if isinstance(raw_thread, dict) else {}
        thread_id = thread.get("id") if isinstance(thread.get("id"), str) else None
        ticket = thread.get("ticket") if isinstance(thread.get("ticket"), str) else None
        queue = env.get("queue") if isinstance(env.get("queue"), str) else None
        now = time.time()

        ports = self._reply_ports(ctx.ports)
        banners: list[str] = []
        if ports is not None:
            usage = await ports.reply_usage(
                ctx.msg_id,
                tenant,
                recipient,
                thread_id,
                sender_since=now - reply.per_sender_window,
                hour_since=now - HOUR,
            )
            if usage.existing is not None:
                skip("already-acknowledged", f"this message's reply is {usage.existing}")
                return None
            if reply.per_thread_limit and thread_id and usage.thread >= reply.per_thread_limit:
                skip("thread-limit", f"{usage.thread} acknowledgement(s) already in {thread_id}")
                return None
            if reply.per_sender_limit and usage.sender >= reply.per_sender_limit:
                skip(
                    "sender-limit",
                    f"{usage.sender} acknowledgement(s) to this return path in the window,"
                    " all tenants",
                )
                return None
            if reply.per_domain_limit and usage.domain >= reply.per_domain_limit:
                skip(
                    "domain-limit",
                    f"{usage.domain} acknowledgement(s) to this recipient domain in the window,"
                    " all tenants",
                )
                return None
            if reply.global_hourly_cap and usage.hour >= reply.global_hourly_cap:
                skip("global-cap", f"{usage.hour} acknowledgements in the last hour")
                return None
            banners = [b.text for b in await ports.reply_banners(queue)]
        else:
            ctx.note("rate limits not checked here (no reply ports); the store enforces them")

        template = ctx.reply if isinstance(ctx.reply, str) else reply.default_template
        sender = from_for(reply, self._policy(ctx), tenant, view.rcpt_to)
        if sender is None:
            skip("no-tenant-address", f"no reply From for tenant {tenant} (set tenant_from)")
            return None
        from_name, from_address = sender
        customer_name = clean(next(iter(names(env.get("from"))), ""), MAX_NAME)
        context: dict[str, Any] = {
            "name": customer_name,
            "email": recipient,
            "customer": {"name": customer_name, "email": recipient},
            "ticket": ticket,
            "queue": queue,
            "tenant": tenant,
            "priority": env.get("priority") if isinstance(env.get("priority"), str) else "normal",
            "sla": sla_text(reply, queue),
            "subject": clean(env.get("subject"), 200),
            "entities": _entities(env.get("entities")),
            "kb_links": kb_links(reply, queue),
        }
        try:
            rendered = templates_for(ctx.root).render(
                template, context, tenant=tenant, banners=banners, footer=reply.footer
            )
        except TemplateProblem as exc:
            log.warning(
                "reply template refused",
                extra={
                    "msg_id": ctx.msg_id,
                    "trace_id": env.get("traceId"),
                    "fields": {"error": f"{type(exc).__name__}: {exc}"},
                },
            )
            skip(exc.reason, exc.detail)
            return None

        domain = from_address.rpartition("@")[2]
        message_id = reply_message_id(ctx.msg_id, domain)
        original_mid = next(iter(msg_ids(env.get("messageId"))), None)
        headers = ReplyHeaders(
            from_name=from_name,
            from_address=from_address,
            to=recipient,
            subject=reply_subject(env.get("subject"), ticket, ctx.config.ticket_prefix),
            message_id=message_id,
            reply_to=alias_address(from_address, ticket),
            in_reply_to=original_mid,
            references=references_for(
                env.get("messageId"), env.get("references"), env.get("inReplyTo")
            ),
            ticket=ticket,
        )
        draft = ReplyDraft(headers, rendered.text, rendered.html)
        reply_id = reply_id_for(ctx.msg_id)
        if ctx.mode == "dry-run":
            env["reply"] = {
                "queued": False,
                "sent": False,
                "reason": "dry-run",
                "detail": f"would queue template {template} to {recipient}",
                "template": template,
            }
            ctx.note(f"dry run: would acknowledge with {template}")
            return None
        ctx.intents.append(
            ReplyIntent(
                reply_id=reply_id,
                tenant=tenant,
                recipient=recipient,
                mail_from="" if reply.null_sender else from_address,
                draft=draft.to_json(),
                message_id=message_id,
                template=template,
                subject=headers.subject,
                thread_id=thread_id,
                ticket=ticket,
                queue=queue,
                per_thread_limit=reply.per_thread_limit,
                per_sender_limit=reply.per_sender_limit,
                per_sender_window=reply.per_sender_window,
                per_domain_limit=reply.per_domain_limit,
                global_hourly_cap=reply.global_hourly_cap,
                smtputf8=needs_smtputf8(recipient, from_address),
                at=now,
            )
        )
        if thread_id:
            ctx.intents.append(
                ThreadIntent(
                    tenant=tenant,
                    thread_id=thread_id,
                    ticket=ticket,
                    is_new=False,
                    message_id=message_id,
                    sender=from_address.lower(),
                    at=parse_time(env.get("timestamp")) or now,
                )
            )
        env["reply"] = {
            "queued": True,
            "template": template,
            "outboxId": reply_id,
            "to": recipient,
            "messageId": message_id,
        }
        ctx.note(f"acknowledgement queued ({template}) to the return path")
        return None


def return_path(env: Envelope) -> str:
    smtp = env.get("envelope")
    value = smtp.get("mailFrom") if isinstance(smtp, dict) else None
    return value.strip().strip("<>").strip() if isinstance(value, str) else ""


def _entities(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, list[str]] = {}
    for key, items in value.items():
        if isinstance(items, list):
            out[str(key)] = [clean(i, 200) for i in items if isinstance(i, str)]
        elif isinstance(items, str):
            out[str(key)] = [clean(items, 200)]
    return out


STAGE = RespondStage()
