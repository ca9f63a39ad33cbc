"""Retry schedule, Standard Webhooks signer, circuit breaker and delivery config checks."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
import standardwebhooks
from hypothesis import given, settings
from hypothesis import strategies as st

import mailgate.delivery.settings  # noqa: F401  (registers the validator)
from mailgate.app import load_config
from mailgate.config import ConfigError, DeliveryConfig
from mailgate.delivery.breaker import CircuitBreaker
from mailgate.delivery.signing import Signer, secret_key
from mailgate.retry import MAX_RETRY_AFTER, RetrySchedule, parse_retry_after
from tests.support.delivery import SECRET

# --------------------------------------------------------------------------- schedule


def test_default_schedule_is_the_standard_webhooks_one_spanning_about_three_days() -> None:
    s = RetrySchedule.parse(DeliveryConfig().retry_schedule)
    assert s.delays == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert s.attempts == 10
    assert 3 * 86400 <= s.span <= 3.5 * 86400


def test_schedule_repeat_syntax_and_errors() -> None:
    assert RetrySchedule.parse("1m, 5m*2, 1h").delays == (60, 300, 300, 3600)
    assert RetrySchedule.parse("250ms,").delays == (0.25,)
    for bad in ("", "5x", "5m*0", "5m*x", "soon, 1h"):
        with pytest.raises(ValueError):
            RetrySchedule.parse(bad)


def test_delay_after_and_jitter_bounds() -> None:
    s = RetrySchedule.parse("0s, 10s, 100s", jitter=0.1)
    rng = random.Random(1)
    assert s.delay_after(0, rng) == 0
    for _ in range(200):
        d = s.delay_after(1, rng)
        assert d is not None and 9.0 <= d <= 11.0
    assert s.delay_after(3) is None  # spent: to the DLQ
    assert RetrySchedule.parse("0s, 10s", jitter=0).delay_after(1) == 10


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now=now) == 120
    when = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert parse_retry_after(when, now=now) == pytest.approx(30, abs=1)
    past = format_datetime(datetime.fromtimestamp(now - 30, UTC), usegmt=True)
    assert parse_retry_after(past, now=now) == 0
    assert parse_retry_after("999999999", now=now) == MAX_RETRY_AFTER
    for junk in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(junk, now=now) is None


# --------------------------------------------------------------------------- signing


def test_secret_forms() -> None:
    assert secret_key("whsec_" + base64.b64encode(b"k" * 32).decode()) == b"k" * 32
    unpadded = "whsec_" + base64.b64encode(b"abcd1").decode().rstrip("=")
    assert secret_key(unpadded) == b"abcd1"
    assert secret_key("plain text") == b"plain text"
    for bad in ("", "whsec_", "whsec_***"):
        with pytest.raises(ValueError):
            secret_key(bad)


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=2000).map(lambda b: b.decode("latin-1").encode("utf-8")),
    msg_id=st.from_regex(r"evt_[0-9A-Z]{26}", fullmatch=True),
    key=st.binary(min_size=1, max_size=64),
)
def test_signatures_verify_with_the_reference_library(body: bytes, msg_id: str, key: bytes) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    ts = int(datetime.now(UTC).timestamp())
    headers = Signer([secret, SECRET]).headers(msg_id, ts, body)
    standardwebhooks.Webhook(secret).verify(body, headers, json_parse=False)
    standardwebhooks.Webhook(SECRET).verify(body, headers, json_parse=False)
    # and the reference signer produces exactly our first signature
    ref = standardwebhooks.Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(ts, UTC), body.decode("utf-8")
    )
    assert headers["webhook-signature"].split(" ")[0] == ref


# --------------------------------------------------------------------------- breaker


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(3, 10.0, clock=clock)
    assert b.allowance(8) == 8
    assert not b.failure() and not b.failure()
    assert b.failure()  # third in a row opens it
    assert b.state == "open" and b.allowance(8) == 0
    clock.t = 10.0
    assert b.state == "half-open" and b.allowance(8) == 1
    b.started()
    assert b.allowance(8) == 0  # one probe at a time
    assert b.failure()  # the probe failed: open again
    assert b.allowance(8) == 0 and b.reopens_in() == 10.0
    clock.t = 20.0
    b.started()
    b.success()
    assert b.state == "closed" and b.allowance(8) == 8


def test_breaker_success_resets_the_count() -> None:
    b = CircuitBreaker(2, 1.0, clock=Clock())
    b.failure()
    b.success()
    assert not b.failure()


# --------------------------------------------------------------------------- config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mailgate.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[delivery]\nretry_schedule = "0s, soon"\n', "delivery.retry_schedule"),
        ("[delivery]\njitter = 1.5\n", "delivery.jitter"),
        (
            '[[webhooks]]\nurl = "http://127.0.0.1:9/a"\nsecrets = ["whsec_***"]\n',
            "webhooks[0].secrets[0]",
        ),
        (
            '[[webhooks]]\nname = "x"\nurl = "http://127.0.0.1:9/a"\nsecrets = ["s"]\n'
            '[[webhooks]]\nname = "x"\nurl = "http://127.0.0.1:9/b"\nsecrets = ["s"]\n',
            "webhooks[1].name",
        ),
        (
            '[[webhooks]]\nurl = "http://127.0.0.1:9/a"\nsecrets = ["s"]\nmax_concurrency = 0\n',
            "webhooks[0].max_concurrency",
        ),
    ],
)
def test_bad_delivery_config_is_refused_with_the_key(
    tmp_path: Path, toml: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, toml), env={})
    assert needle in str(exc.value)
    assert "***" not in str(exc.value)  # secrets are never echoed


def test_good_delivery_config_loads(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            f'[delivery]\nretry_schedule = "0s, 1m*3"\n[[webhooks]]\nurl = "http://127.0.0.1:9/a"\n'
            f'secrets = ["{SECRET}", "raw-secret"]\n',
        ),
        env={},
    )
    assert cfg.delivery.retry_schedule == "0s, 1m*3"
