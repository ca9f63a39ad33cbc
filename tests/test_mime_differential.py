"""Differential test: mailgate envelopes against the shared corpus oracles (nodemailer).

For every message in ``fixtures/corpus/MANIFEST.txt`` it compares subject, from/to/cc addresses,
messageId, inReplyTo, attachments (size, sha256, sanitized filename) and normalized text. Every
disagreement must be listed in ``tests/mime_allowlist.txt`` with the reason mailgate is right, and
every listed line must still disagree. The agreement figure is printed.
"""

from __future__ import annotations

import pytest

from tests.support.mime_oracle import FIELDS, load_allowlist, run


def test_corpus_agrees_with_oracle_or_is_allowlisted(capsys: pytest.CaptureFixture[str]) -> None:
    messages, agree, disagreements = run()
    total = messages * len(FIELDS)
    allow = load_allowlist()
    found = {(path, field) for path, field, _ in disagreements}
    unexplained = [
        f"{path} {field}: mailgate={mine!r:.150} oracle={theirs!r:.150}"
        for path, field, (mine, theirs) in disagreements
        if (path, field) not in allow
    ]
    stale = sorted(f"{p} {f}" for p, f in set(allow) - found)
    with capsys.disabled():
        print(
            f"\nmime differential: {messages} messages, {agree}/{total} field comparisons agree "
            f"({100 * agree / total:.1f}%), {len(disagreements)} allowlisted disagreements"
        )
    assert messages >= 200
    assert not unexplained, "\n".join(unexplained[:20])
    assert not stale, f"allowlist lines that now agree (remove them): {stale}"
    assert all(reason.strip() for reason in allow.values())
