"""Dedup: the same message arriving twice within the window is recorded, not delivered twice.

The key is the Message-ID (RFC 5322 section 3.6.4: unique per message), per tenant; a message
without one is keyed by a hash of sender, normalized subject and normalized body.

A Message-ID alone proves nothing: anyone can send one first. So a message is a duplicate by
Message-ID only when its *content fingerprint* (From address, normalized body, attachment
hashes) matches the earlier message's as well: then it gets ``duplicateOf`` = that message's
id, a copy of its route and thread, and the run stops (no event, no reply). A message that
reuses a known Message-ID with other content is processed normally and flagged
``messageIdReused: true`` with ``messageIdReusedOf`` = the first message with that Message-ID
(a squatter cannot suppress later mail). A resend of the very same message (the sender's MTA
retrying after a lost 250, or splitting recipients over transactions: the multi-inbox CC
case) has the same fingerprint and stays a duplicate.

Two index entries make this work with the store's one-key lookups: ``mid:<id>`` names the
first message with the Message-ID, ``mid:<id>#<fingerprint>`` the first with that content.
Entries written before fingerprints existed only have the first kind: a later message with
that Message-ID is then delivered and flagged rather than suppressed (a possible double
delivery, never a lost message).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

from mailgate.envelope import Envelope
from mailgate.envelope_view import EnvView, parse_time
from mailgate.pipeline.base import Context, Stop, Verdict
from mailgate.store.base import NotFound
from mailgate.store.pipeline import DedupHit, DedupIntent

_SUBJECT_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|vs|antw)\s*(\[\d+\])?\s*:\s*)+", re.I)
COPIED = ("queue", "tags", "priority", "route", "thread", "entities", "intent")


def squash(text: str) -> str:
    """Whitespace runs as one space, none at the ends: ``re.sub(r"\\s+", " ", t).strip()``
    (``str.split`` and ``\\s`` agree on what whitespace is), four times faster on a big body;
    the stored dedup keys depend on this exact result."""
    return " ".join(text.split())


CHUNK = 64 * 1024
"""Characters of body squashed and hashed at a time (see `squashed_pieces`)."""


def squashed_pieces(text: str, chunk: int | None = None) -> Iterator[str]:
    """Pieces whose concatenation is ``squash(text)``, each from about ``chunk`` characters.

    ``squash`` of a whole body builds one string per word and then the joined copy: on a 1 MB
    body of prose ~170 000 small strings, and a cost per KB that grows with the size (cache
    misses, allocation). Cut only at a space or a newline (both whitespace to ``str.split``),
    no word straddles two pieces, and one space joins non-empty pieces.
    """
    chunk = CHUNK if chunk is None else chunk
    if len(text) <= chunk:
        yield squash(text)
        return
    start = 0
    wrote = False
    n = len(text)
    while start < n:
        cut = n
        if start + chunk < n:
            found = [
                i for i in (text.find(" ", start + chunk), text.find("\n", start + chunk)) if i >= 0
            ]
            cut = min(found) if found else n
        piece = squash(text[start:cut])
        if piece:
            yield (" " + piece) if wrote else piece
            wrote = True
        start = cut


def _hash_text(digest: Any, text: str) -> None:
    digest.update(text.encode("utf-8", "surrogatepass"))


def dedup_key(env: Envelope, view: EnvView | None = None) -> str:
    """``mid:<message-id>`` or, without one, ``hash:<sha256 of sender, subject, body>``."""
    view = view or EnvView(env)
    mid = env.get("messageId")
    if isinstance(mid, str) and mid.strip().strip("<>").strip():
        return "mid:" + mid.strip().strip("<>").strip()
    subject = _SUBJECT_PREFIX.sub("", view.text("subject"))
    body = view.text("text") or view.text("html")
    # sha256 of "\n".join([sender, squash(subject).lower(), squash(body).lower()]), streamed
    # (lower-casing maps whitespace to whitespace and a space ends a final-sigma context)
    digest = hashlib.sha256()
    _hash_text(digest, view.sender + "\n" + squash(subject).lower() + "\n")
    for piece in squashed_pieces(body):
        _hash_text(digest, piece.lower())
    return "hash:" + digest.hexdigest()


def content_fingerprint(env: Envelope, view: EnvView | None = None) -> str:
    """Hash of the From address, the normalized body and the attachment hashes (hex, 32 chars).

    Headers that differ between copies of one message (To, Received, the SMTP envelope) are
    left out, so two copies of the same message agree.
    """
    view = view or EnvView(env)
    blobs = sorted(str(a.get("sha256") or "") for a in view.attachments)
    # sha256 of "\n".join([sender, squash(body), *blobs]), the body streamed in pieces
    digest = hashlib.sha256()
    _hash_text(digest, view.sender + "\n")
    for piece in squashed_pieces(view.text("text") or view.text("html")):
        _hash_text(digest, piece)
    for blob in blobs:
        _hash_text(digest, "\n" + blob)
    return digest.hexdigest()[:32]


def received_at(env: Envelope) -> float:
    return parse_time(env.get("timestamp")) or time.time()


class DedupStage:
    name = "dedup"
    description = "same Message-ID and content (or content hash) in the window: duplicateOf"

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        view = ctx.view(env)
        key = dedup_key(env, view)
        tenant = view.tenant
        at = received_at(env)
        window = ctx.config.dedup_window
        since = at - window
        kind = key.split(":", 1)[0]
        keys = [key]
        first: DedupHit | None = None  # the first message with this Message-ID
        if kind == "mid":
            content_key = f"{key}#{content_fingerprint(env, view)}"
            first = self._usable(await ctx.ports.find_duplicate(tenant, key, since), at, ctx)
            hit = self._usable(await ctx.ports.find_duplicate(tenant, content_key, since), at, ctx)
            keys = [content_key] if first is not None else [key, content_key]
        else:
            hit = self._usable(await ctx.ports.find_duplicate(tenant, key, since), at, ctx)
        if hit is not None:
            ctx.duplicate = hit
            env["duplicateOf"] = hit.msg_id
            try:
                original = await ctx.ports.get_envelope(hit.msg_id)
            except NotFound:  # purged under [retention]: its dedup key is a tombstone
                original = {}
            for field in COPIED:
                if field in original:
                    env[field] = original[field]
            what = "Message-ID and content" if kind == "mid" else "content hash"
            reason = f"same {what} as {hit.msg_id}"
            ctx.note(reason)
            return Stop("duplicate", reason)
        if first is not None:
            env["messageIdReused"] = True
            env["messageIdReusedOf"] = first.msg_id
            ctx.note(f"Message-ID of {first.msg_id} reused with other content: processed, flagged")
        if not ctx.stored and ctx.mode != "dry-run":
            ctx.intents.extend(
                DedupIntent(tenant=tenant, key=k, seen_at=at, window=window) for k in keys
            )
        if first is None:
            ctx.note(f"first with this {'Message-ID' if kind == 'mid' else 'content hash'}")
        return None

    @staticmethod
    def _usable(hit: DedupHit | None, at: float, ctx: Context) -> DedupHit | None:
        """The hit, unless it is this message itself or a later one seen by a replay."""
        if hit is None or hit.msg_id == ctx.msg_id:
            return None
        if ctx.stored and hit.seen_at > at:
            # Replaying an old message whose key a later message took over after the window
            # expired: that later message is not what this one duplicated.
            return None
        return hit


STAGE = DedupStage()
