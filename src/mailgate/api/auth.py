"""Bearer tokens of the polling API: stored and compared hashed, each scoped to one tenant.

Tokens come from ``[[api.tokens]]`` (``token`` or ``token_sha256``). When the config names
none, the API accepts exactly one token generated on first start into
``<data_dir>/keys/api-token`` (0600) for tenant ``default``, so the quick start works without
editing config; its path is logged, the token itself never is. Only SHA-256 digests are kept
in memory and every configured digest is compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

from mailgate.api.keys import keys_dir, read_or_create
from mailgate.config import ApiToken

log = logging.getLogger("mailgate.api")

TOKEN_FILE = "api-token"


@dataclass(frozen=True)
class Principal:
    tenant: str
    name: str
    admin: bool = False  # ``[[api.tokens]] admin``: may erase data subjects in any tenant


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenAuth:
    """The accepted tokens; ``replace`` swaps the whole set at once (config reload, SIGHUP)."""

    def __init__(self, tokens: list[ApiToken], data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.generated_path: Path | None = None
        self._entries: list[tuple[bytes, Principal]] = []
        self.replace(tokens)

    def replace(self, tokens: list[ApiToken]) -> None:
        """Accept exactly ``tokens`` from now on (requests in progress are already through).

        The new list is built aside and bound in one assignment, so a request never sees a
        half-updated set.
        """
        entries: list[tuple[bytes, Principal]] = []
        for i, t in enumerate(tokens):
            d = bytes.fromhex(t.token_sha256) if t.token_sha256 else digest(t.token)
            entries.append((d, Principal(t.tenant, t.name or f"token{i}", t.admin)))
        generated: Path | None = None
        if not tokens:
            generated = keys_dir(self.data_dir) / TOKEN_FILE
            value, created = read_or_create(generated)
            entries.append((digest(value), Principal("default", "generated")))
            log.info(
                "no [[api.tokens]] configured: "
                + ("generated" if created else "using")
                + " an API token for tenant default",
                extra={"fields": {"path": str(generated)}},
            )
        self._entries = entries
        self.generated_path = generated

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer <token>`` header (RFC 6750), or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        presented = digest(token)
        found: Principal | None = None
        for d, principal in self._entries:  # no early exit: same work for every token
            if hmac.compare_digest(d, presented) and found is None:
                found = principal
        return found
