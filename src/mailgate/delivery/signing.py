"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec "Signature scheme").

``webhook-signature`` is a space-separated list of ``v1,<base64 HMAC-SHA256>`` over
``"{webhook-id}.{webhook-timestamp}.{body}"``, one per active secret, so a receiver can rotate
secrets: mailgate signs with every configured secret and the receiver accepts any one it knows.
Secrets look like ``whsec_<base64>``; the key is the decoded base64. A secret without that
prefix is used as its raw UTF-8 bytes. The ``standardwebhooks`` libraries verify these
signatures as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a configured secret (see the module docstring)."""
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            # tolerate missing padding, as the reference libraries do
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
        if not key:
            raise ValueError("empty webhook secret")
        return key
    if not secret:
        raise ValueError("empty webhook secret")
    return secret.encode("utf-8")


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<sig>`` per key, space-separated."""
    prefix = f"{msg_id}.{timestamp}.".encode()
    sigs = []
    for key in keys:
        mac = hmac.new(key, prefix, hashlib.sha256)
        mac.update(body)  # not prefix + body: that copies a 200 KB body once more per message
        sigs.append("v1," + base64.b64encode(mac.digest()).decode("ascii"))
    return " ".join(sigs)


class Signer:
    """Signs payloads for one target with all its active secrets (newest first)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("a webhook target needs at least one secret")
        self.keys = [secret_key(s) for s in secrets]

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.keys, msg_id, timestamp, body),
        }
