"""ARC (RFC 8617) chain validation through dkimpy, with its DNS via mailgate's resolver.

Owns: calling ``dkim.ARC(...).verify(dnsfunc=...)`` (dkimpy validates every ARC-Seal and the
newest ARC-Message-Signature, RFC 8617 section 5.2) and describing the chain so a message
forwarded by a mailing list is distinguishable: which intermediaries sealed it (``sealers``),
each instance's validity, and what the first hop recorded about the original authentication
(``originalAuthenticationResults``, the ARC-Authentication-Results of instance 1).

Result: ``none`` (no ARC sets), ``pass`` (chain valid), ``fail`` (invalid, or an intermediary
sealed ``cv=fail``), ``temperror`` (key lookup failed transiently). Runs in a worker thread.
"""

from __future__ import annotations

import re
from typing import Any

import dkim as dkimpy

from mailgate.auth.dns import DnsTempError, KeySource
from mailgate.auth.orgdomain import normalize_domain
from mailgate.envelope import AuthResult

_INSTANCE_PREFIX = re.compile(rb"^\s*i\s*=\s*\d+\s*;\s*", re.IGNORECASE)
_ARC_FIELD = re.compile(
    rb"^arc-(?:seal|message-signature|authentication-results)[ \t]*:", re.IGNORECASE | re.MULTILINE
)


def has_arc_headers(raw: bytes) -> bool:
    """Whether the header section has any ARC field (cheap; avoids a second full parse)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return _ARC_FIELD.search(raw if end < 0 else raw[:end]) is not None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _aar_text(value: bytes | None) -> str:
    if not value:
        return ""
    return _text(_INSTANCE_PREFIX.sub(b"", value.strip())).strip()


def verify_arc_sync(raw: bytes, bridge: KeySource, *, minkey: int = 1024) -> AuthResult:
    """Validate the ARC chain of ``raw``. Never raises."""
    if not has_arc_headers(raw):
        return AuthResult("none", None, "message not ARC sealed", {"chain": [], "instances": 0})
    try:
        arc = dkimpy.ARC(raw, minkey=minkey)
        cv, instances, reason = arc.verify(dnsfunc=bridge.dkim_txt)
    except DnsTempError as exc:
        return AuthResult("temperror", None, f"ARC key lookup failed: {exc}", {"chain": []})
    except dkimpy.DKIMException as exc:
        return AuthResult("fail", None, f"ARC chain invalid: {exc}", {"chain": []})
    except Exception as exc:  # malformed input dkimpy does not anticipate
        return AuthResult(
            "fail", None, f"ARC chain invalid: {type(exc).__name__}: {exc}", {"chain": []}
        )
    chain: list[dict[str, Any]] = sorted(
        (
            {
                "instance": int(i.get("instance", 0)),
                "cv": _text(i.get("cv")),
                "asDomain": normalize_domain(i.get("as-domain")) or None,
                "asSelector": _text(i.get("as-selector")) or None,
                "asValid": bool(i.get("as-valid")),
                "amsDomain": normalize_domain(i.get("ams-domain")) or None,
                "amsSelector": _text(i.get("ams-selector")) or None,
                "amsValid": bool(i.get("ams-valid")),
            }
            for i in instances
        ),
        key=lambda c: int(c["instance"]),
    )
    extra: dict[str, Any] = {"chain": chain, "instances": len(chain)}
    if cv == dkimpy.CV_None and not chain:
        return AuthResult("none", None, "message not ARC sealed", extra)
    first = next((i for i in instances if int(i.get("instance", 0)) == 1), None)
    if first is not None:
        extra["originalAuthenticationResults"] = _aar_text(first.get("aar-value"))
    newest_set = max(instances, key=lambda i: int(i.get("instance", 0)), default=None)
    if newest_set is not None:
        extra["newestAuthenticationResults"] = _aar_text(newest_set.get("aar-value"))
    extra["sealers"] = [c["asDomain"] for c in chain]
    newest = chain[-1]["asDomain"] if chain else None
    if cv == dkimpy.CV_Pass:
        extra["forwarded"] = True
        return AuthResult("pass", newest, f"ARC chain of {len(chain)} valid", extra)
    return AuthResult("fail", newest, _text(reason) or "ARC chain invalid", extra)
