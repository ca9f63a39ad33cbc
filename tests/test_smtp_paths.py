"""The MAIL FROM/RCPT TO path parser (``smtp/paths.py``) against aiosmtpd's ``_getaddr`` (what
the listener used before its own protocol): wherever the fast shape answers, both give the same
address and rest; for every input ``parse_path`` agrees with aiosmtpd, except that a path
crashing the stdlib parser is malformed (553 5.1.3) instead of an exception."""

from __future__ import annotations

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailgate.smtp.paths import parse_path, simple_path


class _Handler:
    async def handle_EHLO(
        self, server: object, session: object, envelope: object, hostname: str, responses: list[str]
    ) -> list[str]:
        return responses


STOCK = SMTP(_Handler(), hostname="mx.test")

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
atoms = st.text(alphabet=ATEXT, min_size=1, max_size=8)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
rests = st.sampled_from(["", " SIZE=4096", " BODY=8BITMIME SMTPUTF8", "  SIZE=1", "x", " "])
noise = st.text(alphabet='<>@."() \\[]:;,a-Zé\t', max_size=30)


@st.composite
def paths(draw: st.DrawFn) -> str:
    local = ".".join(draw(st.lists(atoms, min_size=1, max_size=3)))
    domain = ".".join(draw(st.lists(labels, min_size=1, max_size=4)))
    return f"<{local}@{domain}>{draw(rests)}"


@settings(max_examples=400, deadline=None)
@given(arg=paths())
@example(arg="<pat@example.org> SIZE=4096")
@example(arg="<a.b+tag@sub.example.org>")
def test_simple_paths_parse_like_aiosmtpd(arg: str) -> None:
    fast = simple_path(arg)
    assert fast is not None
    local, domain, rest = fast
    assert STOCK._getaddr(arg) == (f"{local}@{domain}", rest)
    assert parse_path(arg) == STOCK._getaddr(arg)


@settings(max_examples=600, deadline=None)
@given(arg=st.one_of(paths(), noise, st.builds(lambda a, b: a + b, paths(), noise)))
@example(arg="<>")
@example(arg='<"quoted local"@example.org>')
@example(arg="<pat@[192.0.2.1]>")
@example(arg="<@relay.example:pat@example.org>")
@example(arg="pat@example.org")
@example(arg=" <pat@example.org>")
@example(arg="<pat@example.org.>")
@example(arg="<pat..x@example.org>")
@example(arg="<pat@exa..mple.org>")
@example(arg="<pät@example.org>")
@example(arg="<pat@example.org(comment)>")
def test_every_path_answers_like_aiosmtpd(arg: str) -> None:
    stock = outcome(STOCK, arg)
    # where the stdlib parser crashes (IndexError: aiosmtpd would answer "500 Error:
    # (IndexError) …"), the path is malformed instead (553 5.1.3)
    assert parse_path(arg) == ((None, None) if stock is IndexError else stock)


@given(arg=st.sampled_from(["<", "<a@", "<@", "<pat@"]))
def test_paths_that_crash_the_stdlib_parser_are_malformed(arg: str) -> None:
    assert outcome(STOCK, arg) is IndexError
    assert parse_path(arg) == (None, None)


def outcome(proto: SMTP, arg: str) -> object:
    """What ``_getaddr`` answers, or the exception it raises (the stdlib parser raises
    IndexError on some broken paths; the fast path must not change that either)."""
    try:
        return proto._getaddr(arg)
    except Exception as exc:  # compared, not swallowed
        return type(exc)


def test_local_part_limit_still_applies() -> None:
    long_local = "a" * 65
    arg = f"<{long_local}@example.org>"
    assert parse_path(arg, STOCK.local_part_limit) == STOCK._getaddr(arg)
    assert parse_path(arg, 64) == (None, None)
    assert parse_path(f'<"{long_local}"@example.org>', 64) == (None, None)
    assert parse_path(f"<{long_local[:64]}@example.org>", 64)[0] == f"{long_local[:64]}@example.org"
