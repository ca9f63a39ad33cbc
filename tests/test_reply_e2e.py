"""Auto-replies through a real ``mailgate serve``: to a real SMTP sink, and between two mailgates."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.reply_harness import message
from tests.support.reply_serve import outbox, reply_toml
from tests.support.server import MailgateServer, wait_for
from tests.support.smtp_sink import SmtpSink, smtp_sink

__all__ = ["smtp_sink"]

RETURN_PATH = "alice.return@example.org"


def test_serve_acknowledges_through_the_smarthost(
    mailgate_server: Callable[..., MailgateServer], smtp_sink: SmtpSink
) -> None:
    srv = mailgate_server(extra_toml=reply_toml(smtp_sink.address))
    srv.send(
        message("Printer on fire", message_id="<fire@mail.example.org>"), mail_from=RETURN_PATH
    )
    [got] = smtp_sink.wait_for(1, timeout=30)
    env = srv.envelopes()[0]
    assert env["reply"]["queued"] is True
    ticket = env["thread"]["ticket"]
    assert got.mail_from == "" and got.rcpt_tos == [RETURN_PATH]
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert msg["Subject"] == f"Re: Printer on fire [Ticket {ticket}]"
    assert msg["In-Reply-To"] == "<fire@mail.example.org>"
    assert msg["Auto-Submitted"] == "auto-replied"
    wait_for(lambda: [r["state"] for r in outbox(srv)] == ["sent"], "the outbox row to be sent")
    listed = json.loads(srv.cli("outbox", "list", "--json").stdout)
    assert listed[0]["state"] == "sent" and listed[0]["ticket"] == ticket


def test_smarthost_down_then_up_through_serve(
    mailgate_server: Callable[..., MailgateServer], smtp_sink: SmtpSink
) -> None:
    srv = mailgate_server(extra_toml=reply_toml(smtp_sink.address))
    smtp_sink.stop()
    for i in range(3):
        srv.send(message(f"Outage question {i}"), mail_from=f"user{i}@example.org")
    wait_for(
        lambda: len(rows := outbox(srv)) == 3 and all(r["attempts"] >= 1 for r in rows),
        "every reply to fail once",
    )
    assert {r["state"] for r in outbox(srv)} == {"pending"}
    smtp_sink.start()
    got = smtp_sink.wait_for(3, timeout=30)
    wait_for(lambda: {r["state"] for r in outbox(srv)} == {"sent"}, "all replies sent")
    assert sorted(m.rcpt_tos[0] for m in got) == [f"user{i}@example.org" for i in range(3)]
    time.sleep(0.5)
    assert len(smtp_sink.received()) == 3  # nothing sent twice


# ---------------------------------------------------------------------------- two mailgates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PEER_TOML = """\
[smtp]
listen = "127.0.0.1:{port}"
hostname = "mx.{domain}"

[store]
data_dir = "{data_dir}"

[[domains]]
name = "{domain}"
mailboxes = ["support"]
tenant = "default"

[auth]
enabled = false

[api]
enabled = false

[ingest]
workers = 1
poll_interval = "100ms"

[reply]
enabled = true
smarthost = "127.0.0.1:{peer_port}"
from = "support@{domain}"
null_sender = {null_sender}
retry_schedule = "0s, 100ms*100"
timeout = "5s"
"""


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Callable[[bool], tuple[MailgateServer, MailgateServer]]]:
    """Two mailgates, a.test and b.test, each using the other as its smarthost."""
    started: list[MailgateServer] = []

    def make(null_sender: bool) -> tuple[MailgateServer, MailgateServer]:
        ports = {"a": free_port(), "b": free_port()}
        servers = []
        for name, peer in (("a", "b"), ("b", "a")):
            folder = tmp_path / name
            folder.mkdir()
            text = PEER_TOML.format(
                port=ports[name],
                peer_port=ports[peer],
                domain=f"{name}.test",
                data_dir=folder / "data",
                null_sender="true" if null_sender else "false",
            )
            srv = MailgateServer(folder, config_text=text)
            started.append(srv)
            servers.append(srv.start())
        return servers[0], servers[1]

    try:
        yield make
    finally:
        for srv in started:
            if srv.proc is not None:
                srv.stop()


def processed(srv: MailgateServer) -> list[dict[str, Any]]:
    return [json.loads(r["envelope"]) for r in srv.rows() if r["envelope"]]


@pytest.mark.parametrize("null_sender", [True, False], ids=["null-sender", "own-return-path"])
def test_two_mailgates_acknowledging_each_other_stop(
    peers: Callable[[bool], tuple[MailgateServer, MailgateServer]], null_sender: bool
) -> None:
    """A's customer address is B's support address and the reverse: one ack each, then quiet."""
    a, b = peers(null_sender)
    a.send(
        message("Hello A", sender="support@b.test", to="support@a.test"),
        mail_from="support@b.test",
        rcpt_to=["support@a.test"],
    )
    b.send(
        message("Hello B", sender="support@a.test", to="support@b.test"),
        mail_from="support@a.test",
        rcpt_to=["support@b.test"],
    )
    # each customer message is acknowledged, and each acknowledgement arrives at the peer
    wait_for(lambda: len(processed(a)) == 2 and len(processed(b)) == 2, "both acks to arrive")
    wait_for(
        lambda: (
            [r["state"] for r in outbox(a)] == ["sent"]
            and [r["state"] for r in outbox(b)] == ["sent"]
        ),
        "both acks to be sent",
    )
    time.sleep(1.0)  # give a loop the chance to start: it must not
    for srv, peer_domain in ((a, "b.test"), (b, "a.test")):
        envs = processed(srv)
        assert len(envs) == 2
        assert len(outbox(srv)) == 1
        first, ack = envs
        assert first["reply"]["queued"] is True
        assert ack["from"]["email"] == f"support@{peer_domain}"
        assert ack["reply"]["queued"] is False
        expected = "null-sender" if null_sender else "auto-submitted"
        assert ack["reply"]["reason"] == expected
        assert ack["intent"] != "human"
