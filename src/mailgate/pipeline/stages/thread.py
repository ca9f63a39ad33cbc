"""Threading: which conversation a message continues, and its ticket number.

A message joins an existing thread, tried in this order (``thread.matchedBy``):
  ``in-reply-to``   its In-Reply-To names a stored message (RFC 5322 section 3.6.4);
  ``references``    a References entry does (newest first);
  ``alias``         it was sent to a reply alias carrying a ticket, ``support+T-1042@…``;
  ``subject-token`` its subject carries a ticket token, ``[Ticket T-1042]`` / ``[T-1042]``;
  ``awaited``       a reply stored before it named its Message-ID and started a thread (the
                    reply arrived first, or at another node): see ``ThreadIntent.awaits``.
Every match is scoped to the tenant and to the thread's contacts: the sender must be one of
the thread's participants (its first sender and the people it was addressed to or copied to),
so a stranger's reply to a newsletter, or a guessed ticket number, is not glued onto someone
else's conversation; such a refusal is noted in the stage's reasons. Otherwise the message
starts a new thread (``new``): its id derives from the message id, and its ticket number is
``pipeline.ticket_prefix`` + the message's number in its tenant's own sequence (one counter
per tenant, so a ticket number says nothing about other tenants' volume), both stable when a
run is repeated. Ticket lookups (alias, subject token) are scoped to the tenant the reply came
back to.
"""

from __future__ import annotations

import re
from typing import Any

from mailgate.envelope import Envelope, new_id
from mailgate.envelope_view import emails
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.stages.dedup import received_at
from mailgate.store.pipeline import ThreadIntent, ThreadRef

_MID = re.compile(r"<([^<>\s]+)>")


def message_ids(value: object) -> list[str]:
    """Message-IDs of an In-Reply-To/References value (string or list), in order."""
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            continue
        found = _MID.findall(item)
        if not found and item.strip() and " " not in item.strip():
            found = [item.strip().strip("<>")]
        out.extend(f for f in found if f not in out)
    return out


def ticket_patterns(prefix: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    p = re.escape(prefix)
    subject = re.compile(
        rf"\[\s*(?:(?:ticket|case|request)\s*)?#?\s*({p}\d{{1,12}})\s*\]", re.IGNORECASE
    )
    alias = re.compile(rf"^[^@+]+\+({p}\d{{1,12}})@", re.IGNORECASE)
    return subject, alias


def thread_id_for(msg_id: str) -> str:
    """A new thread's id: ``thr_`` + the ULID of its first message (stable across runs)."""
    return "thr_" + msg_id.split("_", 1)[1] if "_" in msg_id else new_id("thr")


class ThreadStage:
    name = "thread"
    description = "In-Reply-To/References, reply alias or subject ticket token, scoped to contacts"

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        view = ctx.view(env)
        tenant = view.tenant
        sender = view.sender
        ours = set(view.rcpt_to)
        participants = {
            e
            for key in ("from", "replyTo", "to", "cc")
            for e in emails(env.get(key))
            if e not in ours
        }
        prefix = ctx.config.ticket_prefix
        subject_re, alias_re = ticket_patterns(prefix)

        def allowed(ref: ThreadRef) -> bool:
            return ref.admits(sender)

        found: ThreadRef | None = None
        matched_by = "new"
        irt = message_ids(env.get("inReplyTo"))
        refs = message_ids(env.get("references"))
        wanted = [*irt, *reversed(refs)]
        by_mid: dict[str | None, ThreadRef] = {}
        if wanted:
            by_mid = {r.message_id: r for r in await ctx.ports.find_threads(tenant, wanted)}
            for mid in wanted:
                ref = by_mid.get(mid)
                if ref is None:
                    continue
                how = "in-reply-to" if mid in irt else "references"
                if allowed(ref):
                    found, matched_by = ref, how
                    break
                ctx.note(
                    f"{how} <{mid}> is in {ref.thread_id}, but {sender or 'the sender'} is not a participant"
                )
        if found is None:
            tokens: list[tuple[str, str]] = []
            for addr in [*view.rcpt_to, *emails(env.get("to")), *emails(env.get("cc"))]:
                m = alias_re.match(addr)
                if m:
                    tokens.append(("alias", m.group(1).upper()))
            for m in subject_re.finditer(view.text("subject")):
                tokens.append(("subject-token", m.group(1).upper()))
            for how, token in tokens:
                ref = await ctx.ports.find_thread_by_ticket(tenant, token)
                if ref is None:
                    ctx.note(f"{how} {token}: no such token")
                    continue
                if allowed(ref):
                    found, matched_by = ref, how
                    break
                ctx.note(
                    f"{how} {token} is {ref.thread_id}, but {sender or 'the sender'} is not a participant"
                )

        own = message_ids(env.get("messageId"))
        refused: str | None = None
        if found is None and own:
            # A reply stored before this message (it arrived first, or at another node) named
            # our Message-ID and started a thread for us: join it.
            for ref in await ctx.ports.find_threads(tenant, own[:1]):
                if not ref.awaited:
                    continue
                if allowed(ref):
                    found, matched_by = ref, "awaited"
                else:
                    refused = ref.thread_id  # this message takes its Message-ID back
                    ctx.note(
                        f"a reply in {ref.thread_id} named this message, but"
                        f" {sender or 'the sender'} is not a participant"
                    )

        is_new = found is None
        ticket: str | None
        if found is not None:
            thread_id, ticket = found.thread_id, found.ticket
            ctx.note(f"{matched_by}: {thread_id} ({ticket})")
        else:
            thread_id = thread_id_for(ctx.msg_id)
            seq = await ctx.ports.message_seq(ctx.msg_id)
            ticket = f"{prefix}{seq}" if seq is not None else None
            ctx.note(f"new thread {thread_id} ({ticket or 'ticket assigned when stored'})")
        ctx.thread = found
        env["thread"] = {
            "id": thread_id,
            "ticket": ticket,
            "isReply": not is_new,
            "matchedBy": matched_by,
        }
        if not ctx.stored and ctx.mode != "dry-run":
            message_id: Any = env.get("messageId")
            ctx.intents.append(
                ThreadIntent(
                    tenant=tenant,
                    thread_id=thread_id,
                    ticket=ticket,
                    is_new=is_new,
                    message_id=message_id
                    if isinstance(message_id, str) and message_id.strip()
                    else None,
                    sender=sender,
                    participants=tuple(sorted(participants)),
                    subject=view.text("subject")[:500] or None,
                    at=received_at(env),
                    # a new thread of a reply whose original is not stored (yet)
                    awaits=irt[0] if is_new and irt and irt[0] not in by_mid else None,
                    refused=refused,
                )
            )
        return None


STAGE = ThreadStage()
