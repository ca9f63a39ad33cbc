"""``mailgate outbox`` and ``mailgate banner`` (CliRunner over a real store), and the [reply]
config validator that ``check-config``/``serve`` run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailgate.app import load_config
from mailgate.cli.banner import banner_group
from mailgate.cli.outbox import outbox_group
from mailgate.config import ConfigError
from mailgate.delivery.smtp_out import ReplySender
from mailgate.store.sqlite import SqliteStore
from tests.support.reply_harness import ReplyHarness, message
from tests.support.smtp_sink import SmtpSink, smtp_sink

__all__ = ["smtp_sink"]


def write_config(tmp_path: Path, reply: str = "", extra: str = "") -> Path:
    path = tmp_path / "mailgate.toml"
    path.write_text(
        f"""
[store]
data_dir = "{tmp_path / "data"}"

[[domains]]
name = "example.test"
mailboxes = ["support"]

[reply]
enabled = true
{reply}

{extra}
"""
    )
    return path


def cli(group: object, *args: str) -> str:
    result = CliRunner().invoke(group, list(args), catch_exceptions=False)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    return result.output


def test_outbox_list_show_and_retry(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    conf = str(write_config(tmp_path, f'smarthost = "{smtp_sink.address}"'))

    async def populate() -> None:
        async with ReplyHarness(tmp_path, smarthost=smtp_sink.address) as h:
            await h.deliver(message("First"), mail_from="a@example.org")
            await h.deliver(message("Second"), mail_from="b@example.org")
            smtp_sink.rcpt_reply = "550 5.1.1 mailbox unavailable"
            await ReplySender(h.store, h.cfg.reply).run_once()

    asyncio.run(populate())
    rows = json.loads(cli(outbox_group, "list", "--json", "-c", conf))
    assert [r["state"] for r in rows] == ["dead", "dead"]
    assert {r["recipient"] for r in rows} == {"a@example.org", "b@example.org"}
    assert rows[0]["lastCode"] == 550 and rows[0]["mailFrom"] == ""
    text = cli(outbox_group, "list", "--state", "dead", "-c", conf)
    assert "mailbox unavailable" in text and "dead" in text
    assert "no sent replies" in cli(outbox_group, "list", "--state", "sent", "-c", conf)

    one = rows[0]["id"]
    shown = json.loads(cli(outbox_group, "show", one, "--json", "-c", conf))
    assert shown["history"][0]["outcome"] == "dead" and shown["history"][0]["code"] == 550
    human = cli(outbox_group, "show", shown["msgId"], "-c", conf)  # by message id too
    assert "<> (null sender)" in human and one in human
    raw = cli(outbox_group, "show", one, "--raw", "-c", conf)
    assert "Auto-Submitted: auto-replied" in raw

    assert "requeued 1 reply" in cli(outbox_group, "retry", one, "-c", conf)
    assert "requeued 1 reply" in cli(outbox_group, "retry", "--all", "-c", conf)
    bad = CliRunner().invoke(outbox_group, ["retry", "rpl_nope", "-c", conf])
    assert bad.exit_code == 1 and "not dead replies" in bad.output
    missing = CliRunner().invoke(outbox_group, ["show", "rpl_nope", "-c", conf])
    assert missing.exit_code == 1 and "not found" in missing.output

    smtp_sink.rcpt_reply = None

    async def send() -> None:
        async with ReplyHarness(tmp_path, smarthost=smtp_sink.address) as h:
            await ReplySender(h.store, h.cfg.reply).run_once()

    asyncio.run(send())
    rows = json.loads(cli(outbox_group, "list", "--json", "-c", conf))
    assert [r["state"] for r in rows] == ["sent", "sent"]
    assert len(smtp_sink.wait_for(2)) == 2


async def _create_store(data_dir: Path) -> None:
    """What ``serve`` does on first start: the CLI never creates a store (issue 11)."""
    store = SqliteStore(data_dir)
    await store.open()
    await store.close()


def test_banner_set_show_clear_and_used_in_replies(tmp_path: Path) -> None:
    conf = str(write_config(tmp_path))
    asyncio.run(_create_store(tmp_path / "data"))
    assert "banner set for queue status" in cli(
        banner_group, "set", "Login outage:\nwe are on it.", "--queue", "status", "-c", conf
    )
    assert "every queue" in cli(banner_group, "set", "Holiday hours", "-c", conf)
    shown = json.loads(cli(banner_group, "show", "--json", "-c", conf))
    assert [(b["queue"], b["text"]) for b in shown] == [
        (None, "Holiday hours"),
        ("status", "Login outage: we are on it."),
    ]

    rules = [{"name": "status", "if": {"subject": "/login/i"}, "then": {"queue": "status"}}]

    async def deliver() -> tuple[str, str]:
        async with ReplyHarness(tmp_path, rules=rules) as h:
            a = await h.deliver(message("Cannot login"), mail_from="a@example.org")
            b = await h.deliver(message("Other"), mail_from="b@example.org")
            return (
                (await h.reply_bytes(a["reply"]["outboxId"])).decode(),
                (await h.reply_bytes(b["reply"]["outboxId"])).decode(),
            )

    status_reply, other_reply = asyncio.run(deliver())
    assert "Login outage: we are on it." in status_reply and "Holiday hours" in status_reply
    assert "Login outage" not in other_reply and "Holiday hours" in other_reply

    assert "banner cleared for queue status" in cli(
        banner_group, "clear", "--queue", "status", "-c", conf
    )
    assert "no banner was set" in cli(banner_group, "clear", "--queue", "status", "-c", conf)
    assert "(every queue): Holiday hours" in cli(banner_group, "show", "-c", conf)
    empty = CliRunner().invoke(banner_group, ["set", "  ", "-c", conf])
    assert empty.exit_code != 0


# ---------------------------------------------------------------------------- config


def test_enabled_alone_uses_the_builtin_template(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path), env={})
    assert cfg.reply.enabled and cfg.reply.default_template == "ack"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ x|attr('__class__') }}",
        "{{ x['__globals__'] }}",
        "{% include some_variable %}",
        "{{ self.__init__.__globals__ }}",
        "{{ range(99999)|join(',') }}",
        "{% for i in x %}",
    ],
)
def test_hostile_or_broken_template_is_refused_at_config_load(tmp_path: Path, source: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ack.txt").write_text(source)
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path), env={})
    assert "reply template 'ack'" in str(err.value)
    assert "mailgate.toml" in str(err.value)


def test_hostile_template_in_a_tenant_dir_or_included_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    (folder / "acme").mkdir(parents=True)
    (folder / "acme" / "ack.txt").write_text("{% include 'part.txt' %}")
    (folder / "part.txt").write_text("{{ cycler.__init__.__globals__.os }}")
    with pytest.raises(ConfigError, match="private attribute"):
        load_config(write_config(tmp_path), env={})


def test_template_named_by_a_rule_must_exist(tmp_path: Path) -> None:
    rules = '[[rules]]\nname = "b"\nif = { subject = "x" }\nthen = { reply = "billing" }\n'
    with pytest.raises(ConfigError, match="billing"):
        load_config(write_config(tmp_path, extra=rules), env={})
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "billing.txt").write_text("Billing: {{ ticket }}")
    assert load_config(write_config(tmp_path, extra=rules), env={}).reply.enabled


@pytest.mark.parametrize(
    ("reply", "key"),
    [
        ('from = "not an address"', "reply.from"),
        ('dkim_domain = "example.test"', "reply.dkim_selector"),
        ('retry_schedule = "soon"', "reply.retry_schedule"),
        ("per_sender_limit = -1", "reply.per_sender_limit"),
        ('tenant_from = { acme = "nope" }', "reply.tenant_from.acme"),
    ],
)
def test_bad_reply_settings_are_refused(tmp_path: Path, reply: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, reply), env={})
    assert key in str(err.value)


def test_unusable_dkim_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "bad.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    reply = f'dkim_domain = "example.test"\ndkim_selector = "s"\ndkim_key_file = "{key}"'
    with pytest.raises(ConfigError, match="dkim_key_file"):
        load_config(write_config(tmp_path, reply), env={})


def test_disabled_replies_are_not_validated(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ack.txt").write_text("{{ ''.__class__ }}")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("enabled = true", "enabled = false"))
    assert load_config(path, env={}).reply.enabled is False
