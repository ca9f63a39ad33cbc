"""Signed, expiring attachment URLs: ``{public_url}/v1/attachments/{id}?expires=…&sig=…``.

The signature is HMAC-SHA256 over ``"{id}.{expires}"`` (base64url, unpadded) with a key from
``[api] url_signing_key``, or else a random key generated once in
``<data_dir>/keys/url-signing.key``. Whoever holds the URL may fetch the attachment until it
expires; the API checks it with a constant-time compare and answers 403 when it is expired or
altered. The same signer fills ``attachments[].url`` in webhook payloads and API responses.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mailgate.api.keys import keys_dir, read_or_create
from mailgate.config import ApiConfig

KEY_FILE = "url-signing.key"


class AttachmentUrlSigner:
    def __init__(self, cfg: ApiConfig, data_dir: Path, *, now: Any = time.time) -> None:
        self.base = cfg.public_url.rstrip("/")
        self.ttl = cfg.attachment_url_ttl
        if cfg.url_signing_key:
            self._key = cfg.url_signing_key.encode("utf-8")
        else:
            value, _ = read_or_create(keys_dir(Path(data_dir)) / KEY_FILE)
            self._key = value.encode("ascii")
        self._now = now

    def _sig(self, att_id: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{att_id}.{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def url(self, att_id: str, *, expires: int | None = None) -> str:
        exp = int(self._now() + self.ttl) if expires is None else expires
        return (
            f"{self.base}/v1/attachments/{quote(att_id, safe='')}"
            f"?expires={exp}&sig={self._sig(att_id, exp)}"
        )

    def verify(self, att_id: str, expires: str | None, sig: str | None) -> bool:
        """True when ``sig`` is ours for this id and expiry and the expiry has not passed."""
        if not expires or not sig or not expires.isdigit():
            return False
        good = hmac.compare_digest(self._sig(att_id, int(expires)).encode(), sig.encode())
        return good and int(expires) > self._now()

    def sign_envelope(self, env: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``env`` with every ``attachments[].url`` set to a fresh signed URL."""
        out = dict(env)
        atts = env.get("attachments")
        if isinstance(atts, list):
            signed = []
            for att in atts:
                if isinstance(att, dict) and att.get("id"):
                    att = copy.copy(att)
                    att["url"] = self.url(str(att["id"]))
                signed.append(att)
            out["attachments"] = signed
        return out
