"""Shared fixtures: the real ``mailgate serve`` subprocess factory (``mailgate_server``)."""

pytest_plugins = [
    "tests.support.server",
    "tests.support.clamd",
    "tests.support.rspamd",
    "tests.support.postgres",
]
