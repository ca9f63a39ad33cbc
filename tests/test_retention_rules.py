"""[retention] rules: the most specific rule wins, 0 keeps forever, and the config refuses an
audit log that would not outlive what it describes (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config import ConfigError, RetentionConfig, RetentionRule, load_config
from mailgate.store.retention import duration_for, enabled, shortest

DAY = 86400.0


def cfg() -> RetentionConfig:
    return RetentionConfig(
        raw=30 * DAY,
        envelopes=90 * DAY,
        rules=[
            RetentionRule(tenant="acme", raw=7 * DAY),
            RetentionRule(queue="billing", raw=365 * DAY, envelopes=0.0),
            RetentionRule(tenant="acme", queue="billing", raw=60 * DAY),
        ],
    )


@pytest.mark.parametrize(
    ("kind", "tenant", "queue", "days"),
    [
        ("raw", "default", None, 30),  # [retention]
        ("raw", "acme", "support", 7),  # tenant rule
        ("raw", "default", "billing", 365),  # queue rule
        ("raw", "acme", "billing", 60),  # tenant and queue: the most specific
        ("envelopes", "acme", "billing", 0),  # inherited from the queue rule: forever
        ("envelopes", "acme", None, 90),  # the tenant rule says nothing about envelopes
        ("attachments", "acme", "billing", 0),  # nothing configured: forever
    ],
)
def test_most_specific_rule_wins(kind: str, tenant: str, queue: str | None, days: int) -> None:
    assert duration_for(cfg(), kind, tenant, queue) == days * DAY


def test_shortest_and_enabled() -> None:
    assert shortest(cfg(), "raw") == 7 * DAY
    assert shortest(cfg(), "envelopes") == 90 * DAY  # the 0 (forever) of a rule is not a limit
    assert shortest(cfg(), "attachments") == 0
    assert enabled(cfg()) and not enabled(RetentionConfig())


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mailgate.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[retention]\nenvelopes = "90d"\naudit = "30d"\n', r"retention\.audit"),
        ('[retention]\naudit = "30d"\n', r"retention\.audit"),
        ('[[retention.rules]]\nraw = "7d"\n', r"retention\.rules\[0\].*a tenant, a queue"),
        ("[retention]\nbatch_size = 0\n", r"retention\.batch_size"),
        ('[retention]\nraw = "soon"\n', r"retention\.raw"),
    ],
)
def test_config_refuses(tmp_path: Path, toml: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_config(write(tmp_path, toml), env={})


def test_config_loads_rules(tmp_path: Path) -> None:
    loaded = load_config(
        write(
            tmp_path,
            '[retention]\nraw = "30d"\nenvelopes = "365d"\naudit = "730d"\n'
            '[[retention.rules]]\nqueue = "billing"\nraw = "0s"\n',
        ),
        env={},
    ).retention
    assert loaded.raw == 30 * DAY and loaded.rules[0].queue == "billing"
    assert duration_for(loaded, "raw", "x", "billing") == 0


def test_vacuum_switches_an_old_database_to_incremental(tmp_path: Path) -> None:
    import sqlite3

    from mailgate.store.sqlite_retention import RetentionMixin

    db = tmp_path / "mailgate.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x BLOB)")  # made before auto_vacuum existed: NONE
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 3000,) for _ in range(300)])
    conn.commit()
    conn.execute("DELETE FROM t")
    conn.commit()
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()

    class Store(RetentionMixin):
        path = db
        synchronous = "NORMAL"

    store = Store()
    assert store.incremental_vacuum() == 0  # nothing to give back without auto_vacuum
    store.full_vacuum()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    conn.close()
    assert db.stat().st_size < 100_000  # the 900 KB of freed pages went back to the filesystem
