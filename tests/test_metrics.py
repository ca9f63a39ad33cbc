"""Metrics that are there: quarantines counted (in the worker, visible on serve's /metrics),
the reply outbox depth, and ``[api] metrics_token`` guarding /metrics while /healthz stays open.
"""

from __future__ import annotations

import secrets
import socket
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailgate.app import load_config
from mailgate.config import ConfigError
from tests.support.server import MailgateServer

METRICS_TOKEN = secrets.token_urlsafe(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def mail(subject: str, attach: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Customer <customer@example.org>"
    msg["To"] = "support@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{secrets.token_hex(6)}@example.org>"
    msg.set_content("Hello, my order has not arrived.\n")
    if attach:
        msg.add_attachment(
            b"MZ\x90\x00" + b"\0" * 64,
            maintype="application",
            subtype="octet-stream",
            filename=attach,
        )
    return msg.as_bytes()


@pytest.fixture
def server(tmp_path: Path) -> MailgateServer:
    dead_smarthost = f"127.0.0.1:{free_port()}"  # nothing listens: replies stay pending
    srv = MailgateServer(
        tmp_path,
        workers=1,
        extra_toml=(
            f'[reply]\nenabled = true\nsmarthost = "{dead_smarthost}"\n'
            'from = "Example Support <support@example.test>"\n'
            'retry_schedule = "0s, 1h"\ntimeout = "2s"\n'
        ),
    )
    text = srv.config_path.read_text()
    assert text.count("\n[api]\n") == 1
    srv.config_path.write_text(
        text.replace("\n[api]\n", f'\n[api]\nmetrics_token = "{METRICS_TOKEN}"\n')
    )
    return srv


@pytest.mark.slow
def test_worker_metrics_and_token_on_serve(server: MailgateServer) -> None:
    with server as srv:
        metrics_url = f"{srv.api_base}/metrics"
        # /metrics wants the bearer token; /healthz and /readyz do not
        assert get(metrics_url)[0] == 401
        assert get(metrics_url, "wrong-" + METRICS_TOKEN)[0] == 401
        status, body = get(metrics_url, METRICS_TOKEN)
        assert status == 200 and "mailgate_smtp_sessions_total" in body
        assert get(f"{srv.api_base}/healthz")[0] == 200
        assert get(f"{srv.api_base}/readyz")[0] in (200, 503)  # open; its verdict is not ours

        srv.send(mail("Statement", attach="statement.pdf.exe"))  # scan: quarantined
        srv.send(mail("Where is my order?"))  # acknowledged: a reply for the dead smarthost
        rows = srv.wait_processed(2)
        assert sorted(r["state"] for r in rows) == ["processed", "quarantined"]

        # the quarantine happened in the worker process; its count reaches the front's /metrics
        want_q = ("mailgate_quarantined_total", (("reason", "executable"),))
        want_r = ("mailgate_reply_outbox_pending", ())
        got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = samples(get(metrics_url, METRICS_TOKEN)[1])
            if got.get(want_q) == 1.0 and got.get(want_r) == 1.0:
                break
            time.sleep(0.2)
        assert got.get(want_q) == 1.0, {k: v for k, v in got.items() if "quarant" in k[0]}
        assert got.get(want_r) == 1.0, {k: v for k, v in got.items() if "reply" in k[0]}
        assert got.get(("mailgate_reply_outbox_dead", ())) == 0.0


def test_metrics_token_is_open_by_default_and_refuses_short_tokens(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("")
    assert load_config(path, env={}).api.metrics_token == ""
    path.write_text('[api]\nmetrics_token = "short"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "api.metrics_token" in str(err.value)
    assert "<5 characters>" in str(err.value) and "'short'" not in str(err.value)  # secret
    path.write_text(f'[api]\nmetrics_token = "{METRICS_TOKEN}"\n')
    assert load_config(path, env={}).api.metrics_token == METRICS_TOKEN
