"""Comparison of mailgate envelopes with the fixture corpus oracles (nodemailer mailparser).

Used by ``test_mime_differential.py``; kept separate so it can also be run by hand:
``python -m tests.support.mime_oracle`` prints every disagreement in allowlist format.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from mailgate.mime.attachments import sanitize_filename
from mailgate.mime.parse import parse_message

# Part of the repository (see fixtures/corpus/SOURCES.md); a missing file is a failure, not a skip.
CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "corpus"
ALLOWLIST = Path(__file__).resolve().parents[1] / "mime_allowlist.txt"
FIELDS = ("subject", "from", "to", "cc", "messageId", "inReplyTo", "attachments", "text")
_WS = re.compile(r"\s+")


def manifest() -> list[str]:
    lines = (CORPUS / "MANIFEST.txt").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def norm_text(text: str | None) -> str:
    text = unicodedata.normalize("NFC", text or "")
    # The oracle collapsed white space and kept the first 2000 characters.
    return _WS.sub(" ", text).strip()[:2000].rstrip()


def _addrs(items: list[dict[str, Any]]) -> list[str]:
    return sorted(str(a.get("address") or a.get("email") or "").lower() for a in items)


def compare(env: dict[str, Any], oracle: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Field -> (mailgate, oracle) for every compared field that differs."""
    diffs: dict[str, tuple[Any, Any]] = {}
    subject = env.get("subject") or ""
    if _WS.sub(" ", subject).strip() != _WS.sub(" ", oracle.get("subject") or "").strip():
        diffs["subject"] = (subject, oracle.get("subject"))
    mine_from = [env["from"]] if env.get("from") else []
    for field, mine in (("from", mine_from), ("to", env["to"]), ("cc", env["cc"])):
        if _addrs(mine) != _addrs(oracle.get(field) or []):
            diffs[field] = (_addrs(mine), _addrs(oracle.get(field) or []))
    for field in ("messageId", "inReplyTo"):
        if (env.get(field) or None) != (oracle.get(field) or None):
            diffs[field] = (env.get(field), oracle.get(field))
    mine_att = sorted((a["size"], a["sha256"], a["filename"]) for a in env["attachments"])
    theirs_att = sorted(
        (a["size"], a["sha256"], a.get("filename") or "") for a in oracle.get("attachments", [])
    )
    if [m[:2] for m in mine_att] != [t[:2] for t in theirs_att]:
        diffs["attachments"] = (mine_att, theirs_att)
    else:
        # mailgate sanitizes names on purpose (basename, no ':' etc.): compare like with like.
        names = [(m[2], t[2]) for m, t in zip(mine_att, theirs_att, strict=True) if t[2]]
        if any(m != sanitize_filename(t, "", 0) for m, t in names):
            diffs["attachments"] = (mine_att, theirs_att)
    if norm_text(env.get("text")) != norm_text(oracle.get("text")):
        diffs["text"] = (norm_text(env.get("text"))[:200], norm_text(oracle.get("text"))[:200])
    return diffs


def load_allowlist() -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    if not ALLOWLIST.exists():
        return out
    for line in ALLOWLIST.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, field, reason = line.split(None, 2)
        out[(path, field)] = reason
    return out


def run() -> tuple[int, int, list[tuple[str, str, Any]]]:
    """(messages, field comparisons agreeing, [(path, field, (mine, theirs))])."""
    paths = manifest()
    disagreements: list[tuple[str, str, Any]] = []
    agree = 0
    for path in paths:
        raw = (CORPUS / path).read_bytes()
        oracle = json.loads((CORPUS / (path + ".oracle.json")).read_text(encoding="utf-8"))
        diffs = compare(parse_message(raw), oracle)
        agree += len(FIELDS) - len(diffs)
        disagreements.extend((path, f, d) for f, d in diffs.items())
    return len(paths), agree, disagreements


if __name__ == "__main__":
    n, agree, dis = run()
    for path, field, (mine, theirs) in dis:
        print(f"{path} {field}\n   mine:   {mine!r}\n   oracle: {theirs!r}")
    print(f"{n} messages, {agree}/{n * len(FIELDS)} field comparisons agree, {len(dis)} differ")
