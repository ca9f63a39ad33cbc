"""DKIM (RFC 6376, RFC 8463 Ed25519) verification of every signature, through dkimpy.

Owns: running dkimpy's ``DKIM.verify(idx, dnsfunc=...)`` for each ``DKIM-Signature`` (dkimpy
does the canonicalization, hashing, RSA/Ed25519 and ``l=``/``x=`` handling) and turning its
bool-or-exception answer into a per-signature verdict *with a reason* (RFC 8601 section 2.7.1):

- ``pass``      the signature verifies;
- ``fail``      it does not (bad signature, body hash mismatch, expired ``x=``);
- ``permerror`` it cannot ever verify (no key, revoked or malformed key, key < 1024 bits
  (RFC 8301), malformed signature);
- ``temperror`` the key lookup failed transiently.

The message's result is ``pass`` when one signature passes; its ``domain`` is a passing ``d=``,
preferring one aligned with the From domain. Runs in a worker thread: DNS goes through the
:class:`~mailgate.auth.dns.SyncBridge` (``dnsfunc``), never a resolver of dkimpy's own.

Performance: dkimpy's pure-Python RSA verification is swapped for OpenSSL's through
:func:`install_rsa_accelerator` (same primitive, same answers; see the comment there).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import dkim as dkimpy
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import InvalidTagValueList, parse_tag_value

from mailgate.auth.dns import DnsTempError, KeySource
from mailgate.auth.orgdomain import aligned, normalize_domain
from mailgate.envelope import AuthResult

log = logging.getLogger("mailgate.auth")

# --------------------------------------------------------------------------- RSA primitive
# dkimpy verifies RSASSA-PKCS1-v1_5 (RFC 8017 section 8.2.2) in pure Python (dkim.crypto):
# about 0.3 ms per signature, over half the cost of a warm-cache message check. The primitive
# below gives the same answer for the same inputs through OpenSSL (the ``cryptography``
# package). Everything DKIM-specific (tags, canonicalization, hashing, key policy) stays
# dkimpy's; inputs it does not cover (non-SHA-256, keys under 1024 bits) go to dkimpy's own.
# tests/test_auth_dkim.py checks both agree.
_DKIMPY_RSA_VERIFY = dkimpy.RSASSA_PKCS1_v1_5_verify


@lru_cache(maxsize=256)
def _public_key(exponent: int, modulus: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def openssl_rsa_verify(digest: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """``dkim.crypto.RSASSA_PKCS1_v1_5_verify`` (same signature and result), via OpenSSL."""
    modulus = public_key.get("modulus", 0)
    exponent = public_key.get("publicExponent", 0)
    if str(getattr(digest, "name", "")).lower() != "sha256" or modulus.bit_length() < 1024:
        return bool(_DKIMPY_RSA_VERIFY(digest, signature, public_key))
    try:
        key = _public_key(exponent, modulus)
        key.verify(
            bytes(signature), digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
        )
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return bool(_DKIMPY_RSA_VERIFY(digest, signature, public_key))
    return True


def install_rsa_accelerator() -> None:
    """Route dkimpy's RSA verification through :func:`openssl_rsa_verify` (idempotent)."""
    if dkimpy.RSASSA_PKCS1_v1_5_verify is _DKIMPY_RSA_VERIFY:
        dkimpy.RSASSA_PKCS1_v1_5_verify = openssl_rsa_verify


install_rsa_accelerator()

MIN_KEY_BITS = 1024  # RFC 8301 section 3.2: smaller RSA keys MUST NOT be considered valid
_RANK = {"pass": 0, "temperror": 1, "fail": 2, "permerror": 3, "neutral": 4}


_DKIM_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _header_end(raw: bytes) -> int:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return len(raw) if end < 0 else end


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class _KeyProbe:
    """A dnsfunc that remembers what the key lookup returned, to explain a False verify."""

    def __init__(self, bridge: KeySource) -> None:
        self.bridge = bridge
        self.record: bytes | None = None
        self.looked_up = False

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        self.looked_up = True
        self.record = self.bridge.dkim_txt(name, timeout)
        return self.record


def _key_problem(record: bytes | None) -> str | None:
    """Why a retrieved key record cannot verify anything, or None if it looks usable."""
    if record is None:
        return "no key for signature"
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList as exc:
        return f"key record syntax error: {exc}"
    if b"p" in tags and not tags[b"p"].strip():
        return "key revoked"  # RFC 6376 section 3.6.1: an empty p= means revoked
    try:
        dkimpy.evaluate_pk(b"key", record)
    except dkimpy.DKIMException as exc:
        return f"bad key: {exc}"
    return None


def _classify_exception(exc: Exception) -> tuple[str, str]:
    msg = str(exc)
    if "body hash mismatch" in msg:
        return "fail", "body hash did not verify"
    if "x= value is past" in msg:
        return "fail", "signature expired"
    if "public key too small" in msg:
        return "permerror", "key too small (RFC 8301 requires at least 1024 bits)"
    if isinstance(exc, dkimpy.KeyFormatError):
        return "permerror", f"bad key: {msg}"
    return "permerror", f"signature error: {msg}"


def _body_coverage(d: Any, tags: dict[bytes, bytes]) -> tuple[int, int] | None:
    """(signed, total) canonical body bytes when ``l=`` limits the signed body."""
    if b"l" not in tags:
        return None
    try:
        signed = int(tags[b"l"])
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
        total = len(policy.canonicalize_body(d.body))
    except Exception:  # malformed tags: verify() already reports them
        return None
    return signed, total


def verify_one(d: Any, idx: int, header_value: bytes, bridge: KeySource) -> dict[str, Any]:
    """Verify signature ``idx`` of the parsed message ``d``; never raises (but DnsTempError)."""
    sig: dict[str, Any] = {"domain": None, "selector": None, "algorithm": None}
    try:
        tags = parse_tag_value(header_value)
    except InvalidTagValueList as exc:
        sig.update(result="permerror", reason=f"signature syntax error: {exc}")
        return sig
    sig["domain"] = normalize_domain(tags.get(b"d")) or None
    sig["selector"] = _text(tags.get(b"s")) or None
    sig["algorithm"] = _text(tags.get(b"a")) or None
    if b"i" in tags:
        sig["identity"] = _text(tags[b"i"])
    if b"b" in tags:
        sig["b"] = _text(b"".join(tags[b"b"].split()))[:8]  # RFC 6008 header.b
    probe = _KeyProbe(bridge)
    try:
        ok = bool(d.verify(idx=idx, dnsfunc=probe))
    except DnsTempError as exc:
        sig.update(result="temperror", reason=f"key lookup failed: {exc}")
        return sig
    except dkimpy.DKIMException as exc:
        result, reason = _classify_exception(exc)
        sig.update(result=result, reason=reason)
        return sig
    except Exception as exc:  # dkimpy raises bare errors on some malformed input
        sig.update(result="permerror", reason=f"signature error: {type(exc).__name__}: {exc}")
        return sig
    if ok:
        sig.update(result="pass", reason="signature verified")
        coverage = _body_coverage(d, tags)
        if coverage is not None:
            signed, total = coverage
            sig["bodyLength"] = signed
            if total > signed:
                # RFC 6376 section 8.2: content past l= is unsigned and may be attacker-added.
                sig["unsignedBodyBytes"] = total - signed
                sig["reason"] = (
                    f"signature verified; l= leaves {total - signed} body bytes unsigned"
                )
        return sig
    problem = _key_problem(probe.record) if probe.looked_up else "no key for signature"
    if problem is not None:
        sig.update(result="permerror", reason=problem)
    else:
        sig.update(result="fail", reason="signature did not verify")
    return sig


def verify_dkim_sync(
    raw: bytes, bridge: KeySource, from_domain: str | None = None, *, minkey: int = MIN_KEY_BITS
) -> AuthResult:
    """Verify every DKIM-Signature of ``raw`` (in a worker thread). Never raises."""
    try:
        d = dkimpy.DKIM(raw, minkey=minkey)
    except dkimpy.DKIMException as exc:
        if not _DKIM_FIELD.search(raw[: _header_end(raw)]):
            return AuthResult("none", None, "message not signed", {"signatures": []})
        return AuthResult(
            "permerror", None, f"message not parseable for DKIM: {exc}", {"signatures": []}
        )
    sig_headers = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    if not sig_headers:
        return AuthResult("none", None, "message not signed", {"signatures": []})
    signatures = [verify_one(d, i, v, bridge) for i, v in enumerate(sig_headers)]
    passing = [s for s in signatures if s["result"] == "pass"]
    if passing:
        best = next((s for s in passing if aligned(s["domain"], from_domain)), passing[0])
        result, domain = "pass", best["domain"]
        reason = f"{len(passing)} of {len(signatures)} signatures verified (d={domain})"
    else:
        worst = min(signatures, key=lambda s: _RANK.get(s["result"], 9))
        result, domain = worst["result"], worst["domain"]
        if len(signatures) == 1:
            reason = str(worst["reason"])
        else:
            each = "; ".join(f"d={s['domain']}: {s['reason']}" for s in signatures)
            reason = f"no signature verified: {each}"
    extra: dict[str, Any] = {"signatures": signatures}
    if from_domain:
        extra["aligned"] = any(aligned(s["domain"], from_domain) for s in passing)
    return AuthResult(result, domain, reason, extra)
