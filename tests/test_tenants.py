"""Wildcard tenants: only configured labels, never another domain's tenant; per-tenant tickets.

RCPT decisions go through the real SMTP listener on 127.0.0.1; the mapping itself is also
checked on `RecipientPolicy` directly, case by case (the guard is safety code: these cases
are what mutation testing of it is measured against). Config errors and warnings go through
``load_config`` on real TOML text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
import sqlite3
from pathlib import Path

import pytest

from mailgate.config import (
    Config,
    ConfigError,
    DomainConfig,
    ReplyConfig,
    SmtpConfig,
    config_warnings,
    load_config,
)
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.policy import Accepted, RecipientPolicy, Refused
from mailgate.smtp.server import SmtpServer
from mailgate.store.sqlite import SqliteStore
from mailgate.store.sqlite_base import _statements, migrate, migrations
from tests.support.pipeline import ingest, make_config, make_env, store

__all__ = ["store"]

DOMAINS = [
    DomainConfig(name="example.test", mailboxes=["support"], tenant="default"),
    DomainConfig(name="acme.example", catch_all=True, tenant="acme-corp"),
    DomainConfig(name="*.support.example.test", catch_all=True, tenants=["acme", "Globex"]),
    DomainConfig(name="*.help.example.test", mailboxes=["help"], tenants=["initech"]),
    DomainConfig(name="*.open.example.test", catch_all=True, open_tenants=True),
    DomainConfig(name="*.one.example.test", catch_all=True, tenant="onetenant"),
    DomainConfig(name="*.deep.support.example.test", catch_all=True, tenants=["team"]),
    DomainConfig(name="notenant.example", catch_all=True),
    DomainConfig(name="Post.Box.", mailboxes=["a"], tenant="box"),
    DomainConfig(name="*.Kids.Box.", catch_all=True, tenants=["kid"]),
]


def reply_warnings(cfg: Config) -> list[str]:
    """The reply From warnings (others, such as encryption being off, are tested elsewhere)."""
    return [w for w in config_warnings(cfg) if w.startswith("reply.")]


def tenant_of(policy: RecipientPolicy, address: str) -> str:
    verdict = policy.check(address)
    return verdict.tenant if isinstance(verdict, Accepted) else f"refused:{verdict.reason}"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("support@example.test", "default"),
        ("x@acme.example", "acme-corp"),
        ("help@acme.support.example.test", "acme"),
        ("help@ACME.Support.Example.Test.", "acme"),
        ("help@globex.support.example.test", "globex"),  # listed as "Globex"
        ("help@initech.help.example.test", "initech"),
        ("other@initech.help.example.test", "refused:unknown-mailbox"),
        # labels nobody configured: ours, so "unknown mailbox", never a new tenant
        ("help@minted.support.example.test", "refused:unknown-mailbox"),
        ("help@acme.help.example.test", "refused:unknown-mailbox"),
        ("postmaster@minted.support.example.test", "refused:unknown-mailbox"),
        # deeper than one label, or the bare parent: not ours at all
        ("help@x.acme.support.example.test", "refused:relay-denied"),
        ("help@support.example.test", "refused:relay-denied"),
        ("help@.support.example.test", "refused:relay-denied"),
        ("help@elsewhere.test", "refused:relay-denied"),
        # open tenants: any label, except a tenant another entry defines
        ("a@anything.open.example.test", "anything"),
        ("a@default.open.example.test", "refused:unknown-mailbox"),
        ("a@acme-corp.open.example.test", "refused:unknown-mailbox"),
        ("a@acme.open.example.test", "refused:unknown-mailbox"),
        ("a@initech.open.example.test", "refused:unknown-mailbox"),
        ("a@onetenant.open.example.test", "refused:unknown-mailbox"),
        # one tenant for every label
        ("a@whatever.one.example.test", "onetenant"),
        ("a@default.one.example.test", "onetenant"),
        # a dotted label under one wildcard can still be a label of a deeper one
        ("a@team.deep.support.example.test", "team"),
        ("a@x.team.deep.support.example.test", "refused:relay-denied"),
        # an exact domain without a tenant is the default tenant's
        ("a@notenant.example", "default"),
        # names in the config may carry capitals and a final dot
        ("a@POST.BOX", "box"),
        ("a@post.box.", "box"),
        ("b@post.box", "refused:unknown-mailbox"),
        ("a@KID.kids.box", "kid"),
        # not an address of ours: no domain, no local part, an address literal, a leading dot
        ("support@.example.test", "refused:relay-denied"),
        ("@example.test", "refused:syntax"),
        ("support@", "refused:syntax"),
        ("support@[127.0.0.1]", "refused:syntax"),
        # the last @ separates the domain: the rest is a (refused) local part of ours
        ("support@evil.test@example.test", "refused:unknown-mailbox"),
    ],
)
def test_tenant_mapping(address: str, expected: str) -> None:
    assert tenant_of(RecipientPolicy(DOMAINS), address) == expected


def test_a_listed_label_that_is_another_domains_tenant_is_refused_at_run_time() -> None:
    """A config built in code skips validation: the policy still never merges two tenants."""
    domains = [
        DomainConfig(name="example.test", catch_all=True, tenant="acme"),
        DomainConfig(name="*.support.example.test", catch_all=True, tenants=["acme", "default"]),
        DomainConfig(name="*.other.example.test", catch_all=True, tenants=["globex"]),
    ]
    policy = RecipientPolicy(domains)
    assert tenant_of(policy, "x@acme.support.example.test") == "refused:unknown-mailbox"
    assert tenant_of(policy, "x@default.support.example.test") == "refused:unknown-mailbox"
    assert tenant_of(policy, "x@globex.other.example.test") == "globex"
    assert tenant_of(policy, "x@globex.support.example.test") == "refused:unknown-mailbox"


def test_accepted_fields_and_syntax() -> None:
    policy = RecipientPolicy(DOMAINS)
    got = policy.check("Help+T-7@acme.support.example.test")
    assert got == Accepted(
        address="Help+T-7@acme.support.example.test",
        mailbox="help",
        tag="T-7",
        domain="acme.support.example.test",
        tenant="acme",
    )
    untagged = policy.check("help@acme.support.example.test")
    assert isinstance(untagged, Accepted) and untagged.tag is None
    assert policy.check("no-at-sign") == Refused("syntax")
    assert policy.is_local_domain("acme.support.example.test")
    assert policy.is_local_domain("ACME.Support.Example.Test.")
    assert not policy.is_local_domain("x.acme.support.example.test")


@pytest.mark.parametrize("spelling", ["Postmaster", " postmaster ", "POSTMASTER"])
def test_bare_postmaster_is_accepted_for_the_first_exact_domain(spelling: str) -> None:
    """RFC 5321 4.5.1: ``RCPT TO:<Postmaster>`` without a domain."""
    domains = [
        DomainConfig(name="*.support.example.test", catch_all=True, tenants=["acme"]),
        DomainConfig(name="Mail.Example.Test", mailboxes=["support"], tenant="ops"),
        DomainConfig(name="other.example.test", mailboxes=["support"], tenant="other"),
    ]
    assert RecipientPolicy(domains).check(spelling) == Accepted(
        address="postmaster",
        mailbox="postmaster",
        tag=None,
        domain="mail.example.test",
        tenant="ops",
    )
    no_tenant = [DomainConfig(name="mail.example.test", mailboxes=["support"])]
    got = RecipientPolicy(no_tenant).check(spelling)
    assert isinstance(got, Accepted) and got.tenant == "default"
    only_wildcards = RecipientPolicy(domains[:1]).check(spelling)
    assert only_wildcards == Accepted(
        address="postmaster", mailbox="postmaster", tag=None, domain="localhost", tenant="default"
    )


async def test_unconfigured_label_is_550_511_at_rcpt(tmp_path: Path) -> None:
    cfg = Config(
        smtp=SmtpConfig(listen="127.0.0.1:0", hostname="mx.test", greet_delay=0.0),
        domains=DOMAINS,
    )
    st = SqliteStore(tmp_path / "data")
    await st.open()
    server = SmtpServer(cfg.smtp, SmtpHandler(cfg.smtp, policy=RecipientPolicy(DOMAINS), spool=st))
    host, port = await server.start()

    def rcpts() -> list[tuple[int, bytes]]:
        with smtplib.SMTP(host, port, timeout=10) as c:
            c.ehlo()
            c.mail("mallory@example.org")
            return [
                c.rcpt(a)
                for a in (
                    "help@acme.support.example.test",
                    "help@minted.support.example.test",
                    "help@default.open.example.test",
                    "help@x.acme.support.example.test",
                )
            ]

    try:
        got = await asyncio.to_thread(rcpts)
    finally:
        await server.stop(grace=1.0)
        await st.close()
    assert got[0][0] == 250
    assert got[1][0] == 550 and got[1][1].startswith(b"5.1.1"), got[1]
    assert got[2][0] == 550 and got[2][1].startswith(b"5.1.1"), got[2]
    assert got[3][0] == 554 and got[3][1].startswith(b"5.7.1"), got[3]


# --------------------------------------------------------------------------- config

BASE = """
[[domains]]
name = "example.test"
mailboxes = ["support"]
tenant = "default"

[[domains]]
name = "acme.example"
catch_all = true
tenant = "acme"
"""


def config_errors(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mailgate.toml"
    path.write_text(BASE + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_wildcard_without_tenants_is_a_config_error(tmp_path: Path) -> None:
    text = '[[domains]]\nname = "*.support.example.test"\ncatch_all = true\n'
    message = config_errors(tmp_path, text)
    assert "domains[2].tenants" in message and "open_tenants = true" in message


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('tenants = ["acme"]', "domains[1] already uses tenant 'acme'"),
        ('tenants = ["default"]', "every domain without a tenant already uses tenant 'default'"),
        ('tenants = ["Bad_Label"]', "DNS labels"),
        ('tenants = ["x"]\ntenant = "y"', "either tenant"),
    ],
)
def test_tenant_collisions_are_config_errors(tmp_path: Path, entry: str, expected: str) -> None:
    text = f'[[domains]]\nname = "*.support.example.test"\ncatch_all = true\n{entry}\n'
    assert expected in config_errors(tmp_path, text)


def test_a_label_listed_under_two_wildcards_is_a_config_error(tmp_path: Path) -> None:
    text = (
        '[[domains]]\nname = "*.a.example.test"\ncatch_all = true\ntenants = ["globex"]\n'
        '[[domains]]\nname = "*.b.example.test"\ncatch_all = true\ntenants = ["globex"]\n'
    )
    assert "domains[3].tenants = 'globex'" in config_errors(tmp_path, text)


def test_tenants_only_on_wildcards(tmp_path: Path) -> None:
    text = '[[domains]]\nname = "b.example.test"\ncatch_all = true\nopen_tenants = true\n'
    assert "domains[2].open_tenants" in config_errors(tmp_path, text)


def test_valid_wildcards_load(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.toml"
    path.write_text(
        BASE + '[[domains]]\nname = "*.s.example.test"\ncatch_all = true\ntenants = ["globex"]\n'
        '[[domains]]\nname = "*.o.example.test"\ncatch_all = true\nopen_tenants = true\n'
    )
    cfg = load_config(path)
    assert cfg.domains[2].tenants == ["globex"] and cfg.domains[3].open_tenants


def test_config_warns_about_tenants_without_a_reply_from() -> None:
    domains = [
        DomainConfig(name="example.test", catch_all=True, tenant="default"),
        DomainConfig(name="*.support.example.test", catch_all=True, tenants=["acme", "globex"]),
        DomainConfig(name="*.open.example.test", catch_all=True, open_tenants=True),
    ]
    off = Config(domains=domains)
    assert reply_warnings(off) == []  # replies off: nothing to warn about
    on = Config(
        domains=domains,
        reply=ReplyConfig(
            enabled=True,
            from_="Support <support@example.test>",
            tenant_from={"acme": "help@acme.support.example.test"},
        ),
    )
    [warning] = reply_warnings(on)
    assert "globex" in warning and "<any label of *.open.example.test>" in warning
    assert "acme" not in warning.split(";")[0].replace("<any label", "")
    assert "default" not in warning  # [reply] from is in the default tenant's domain
    covered = dataclasses.replace(
        on,
        domains=domains[:2],
        reply=dataclasses.replace(
            on.reply, tenant_from={"acme": "a@acme.example", "globex": "g@globex.example"}
        ),
    )
    assert reply_warnings(covered) == []


def test_check_config_prints_the_reply_from_warning(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from mailgate.cli import main

    path = tmp_path / "mailgate.toml"
    path.write_text(
        BASE
        + '[[domains]]\nname = "*.s.example.test"\ncatch_all = true\ntenants = ["globex"]\n'
        + f'[store]\ndata_dir = "{tmp_path / "data"}"\n'
        + '[reply]\nenabled = true\nfrom = "support@example.test"\n'
        + 'tenant_from = { acme = "help@acme.example" }\n'
    )
    result = CliRunner().invoke(main, ["check-config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    [warning] = [w for w in warnings if w.startswith("reply.tenant_from")]
    assert "tenant(s) globex;" in warning


# --------------------------------------------------------------------------- ticket sequence


async def test_each_tenant_has_its_own_ticket_sequence(store: SqliteStore) -> None:
    from mailgate.pipeline.runner import PipelineRunner

    runner = PipelineRunner(make_config(), store)
    tickets: dict[str, list[str]] = {"default": [], "acme": [], "globex": []}
    for tenant in ["default", "default", "acme", "default", "globex", "acme"]:
        env = make_env(tenant=tenant)
        await ingest(store, runner, env)
        tickets[tenant].append(env["thread"]["ticket"])
    # the first message of each tenant opens its own T-1; nothing leaks the others' volume
    assert tickets == {
        "default": ["T-1", "T-2", "T-3"],
        "acme": ["T-1", "T-2"],
        "globex": ["T-1"],
    }
    # a ticket token resolves within the tenant it came back to
    reply = make_env(tenant="acme", subject="Re: [Ticket T-2] thanks")
    await ingest(store, runner, reply)
    assert reply["thread"]["matchedBy"] == "subject-token"
    assert reply["thread"]["ticket"] == "T-2"
    rows = await store._read("SELECT tenant FROM threads WHERE id = ?", (reply["thread"]["id"],))
    assert rows[0]["tenant"] == "acme"


def test_migration_keeps_old_tickets_and_starts_above_them(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.sqlite", isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL)"
    )
    for version, name, sql in migrations():
        if version < 5:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (version, name))

    def add(msg_id: str, tenant: str) -> None:
        conn.execute(
            "INSERT INTO messages (id, received_at, tenant, mail_from, rcpt_to, size)"
            " VALUES (?, 0, ?, '', '[]', 1)",
            (msg_id, tenant),
        )

    for i, tenant in enumerate(["default", "acme", "default", "acme", "default"]):
        add(f"old{i}", tenant)  # global seq 1..5: their tickets were T-1..T-5
    assert "005_tenant_tickets.sql" in migrate(conn)
    old = dict(conn.execute("SELECT id, tenant_seq FROM messages").fetchall())
    assert old == {f"old{i}": i + 1 for i in range(5)}
    add("new-default", "default")
    add("new-acme", "acme")
    add("new-globex", "globex")
    got = dict(conn.execute("SELECT id, tenant_seq FROM messages WHERE id LIKE 'new%'"))
    assert got == {"new-default": 6, "new-acme": 6, "new-globex": 1}
