"""DKIM test keys (RSA 2048 and Ed25519) generated at test time, and signing helpers.

Keys are generated once per test process (RSA generation is the slow part) and published into
a :class:`tests.support.dns_server.DnsTestServer` with :meth:`DkimKey.publish`. Signing uses
dkimpy, the same library mailgate verifies with::

    key = rsa_key()
    key.publish(dns, "sel1", "example.com")
    signed = key.sign(message, "sel1", "example.com")
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from functools import lru_cache

import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import CanonicalizationPolicy

from tests.support.dns_server import DnsTestServer

__all__ = ["DkimKey", "ed25519_key", "rsa_key", "sign_with_expiry"]


@dataclass(frozen=True)
class DkimKey:
    algorithm: bytes  # b"rsa-sha256" | b"ed25519-sha256"
    private: bytes  # what dkimpy's sign() takes: PEM (RSA) or base64 seed (Ed25519)
    record: str  # the DNS TXT record value (RFC 6376 3.6.1 / RFC 8463)

    def publish(self, dns: DnsTestServer, selector: str, domain: str) -> None:
        dns.add_dkim_key(selector, domain, self.record)

    def sign(
        self,
        message: bytes,
        selector: str,
        domain: str,
        *,
        include_headers: list[bytes] | None = None,
        length: bool = False,
        canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed"),
    ) -> bytes:
        """``message`` with a DKIM-Signature prepended."""
        sig = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            self.private,
            signature_algorithm=self.algorithm,
            include_headers=include_headers,
            length=length,
            canonicalize=canonicalize,
        )
        return bytes(sig) + message


def _rsa(bits: int) -> DkimKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    return DkimKey(b"rsa-sha256", pem, record)


@lru_cache(maxsize=8)
def rsa_key(bits: int = 2048, n: int = 0) -> DkimKey:
    """An RSA key of ``bits`` (``n`` picks a distinct key: ``rsa_key(n=1)`` != ``rsa_key()``)."""
    return _rsa(bits)


@lru_cache(maxsize=8)
def ed25519_key(n: int = 0) -> DkimKey:
    sk = nacl.signing.SigningKey.generate()
    seed = sk.encode(encoder=nacl.encoding.Base64Encoder)
    pub = sk.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
    return DkimKey(b"ed25519-sha256", seed, f"v=DKIM1; k=ed25519; p={pub}")


def sign_with_expiry(
    key: DkimKey, message: bytes, selector: str, domain: str, *, signed_at: int, expires: int
) -> bytes:
    """Sign with ``t=`` and ``x=`` tags (dkimpy's sign() has no x= option, so the header is
    built with dkimpy's own gen_header, exactly as sign() does, plus ``x=``)."""
    d = dkim.DKIM(message, signature_algorithm=key.algorithm)
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    body = policy.canonicalize_body(d.body)
    hasher = dkim.HASH_ALGORITHMS[key.algorithm]
    bodyhash = base64.b64encode(hasher(body).digest())
    include = tuple(h.lower() for h in d.default_sign_headers())
    pk = (
        dkim.parse_pem_private_key(key.private)
        if key.algorithm.startswith(b"rsa")
        else nacl.signing.SigningKey(key.private, encoder=nacl.encoding.Base64Encoder)
    )
    fields = [
        (b"v", b"1"),
        (b"a", key.algorithm),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain.encode()),
        (b"s", selector.encode()),
        (b"t", str(signed_at).encode()),
        (b"x", str(expires).encode()),
        (b"h", b" : ".join(include)),
        (b"bh", bodyhash),
        (b"b", b"0" * 60),
    ]
    d.hasher = hasher
    header = d.gen_header(fields, include, policy, b"DKIM-Signature", pk)
    return b"DKIM-Signature: " + header + message


def now() -> int:
    return int(time.time())
