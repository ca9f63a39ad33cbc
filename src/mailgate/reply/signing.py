"""DKIM signing of outgoing replies (RFC 6376 with dkimpy; Ed25519 per RFC 8463).

The key file is PEM: an RSA key (``rsa-sha256``) or an Ed25519 key (``ed25519-sha256``; dkimpy
wants its raw 32-byte seed in base64, which `load_signer` derives), or a bare base64 Ed25519
seed as dkimpy's ``dknewkey`` writes it. The signer covers the headers a reader sees and the
threading and RFC 3834 headers, so none can be altered in transit without breaking the
signature; relaxed/relaxed canonicalization survives the folding relays do.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"In-Reply-To",
    b"References",
    b"Reply-To",
    b"Auto-Submitted",
    b"X-Auto-Response-Suppress",
    b"MIME-Version",
    b"Content-Type",
    b"Content-Transfer-Encoding",
)


class SigningError(Exception):
    """The key cannot be read, or dkimpy refused to sign."""


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    private: bytes
    algorithm: bytes

    def sign(self, message: bytes) -> bytes:
        """``message`` with a ``DKIM-Signature`` header prepended."""
        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line and line[:1] not in (b" ", b"\t")
        }
        include = [h for h in SIGNED_HEADERS if h.lower() in present]
        try:
            sig = dkim.sign(
                message,
                self.selector.encode(),
                self.domain.encode(),
                self.private,
                signature_algorithm=self.algorithm,
                include_headers=include,
                canonicalize=(b"relaxed", b"relaxed"),
            )
        except Exception as exc:  # dkimpy raises several types (DKIMException, ValueError…)
            raise SigningError(f"DKIM signing failed: {type(exc).__name__}: {exc}") from None
        return bytes(sig) + message


def load_signer(domain: str, selector: str, key_file: str) -> DkimSigner | None:
    """The signer for ``[reply] dkim_*``; None when not configured; `SigningError` on a bad key."""
    if not (domain and selector and key_file):
        return None
    try:
        data = Path(key_file).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read DKIM key {key_file}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        try:
            seed = base64.b64decode(data.strip(), validate=True)
        except ValueError:
            raise SigningError(f"{key_file}: expected a PEM key or a base64 Ed25519 seed") from None
        if len(seed) != 32:
            raise SigningError(f"{key_file}: expected a PEM key or a base64 Ed25519 seed")
        return DkimSigner(domain, selector, base64.b64encode(seed), b"ed25519-sha256")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{key_file}: not a usable PEM private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise SigningError(f"{key_file}: RSA key of {key.key_size} bits (RFC 8301: >= 1024)")
        return DkimSigner(domain, selector, data, b"rsa-sha256")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return DkimSigner(domain, selector, base64.b64encode(raw), b"ed25519-sha256")
    raise SigningError(f"{key_file}: DKIM keys are RSA or Ed25519, not {type(key).__name__}")
