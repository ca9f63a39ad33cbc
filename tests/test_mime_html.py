"""HTML sanitizing (bleach allowlist + the plain-markup fast path), HTML to text, reply text."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.mime.html import _cleaner, html_to_text, plain_markup, sanitize_html
from mailgate.mime.text import reply_text, strip_signature, unflow

DANGEROUS = re.compile(
    r"<\s*(script|style|iframe|object|embed|form|input|svg|math|meta|link|base)\b"
    r"|\son\w+\s*=|javascript:|vbscript:|data:(?!image/(png|gif|jpe?g|webp|bmp);)",
    re.IGNORECASE,
)


def test_dangerous_constructs_removed() -> None:
    src = (
        '<div onmouseover="x()"><script>evil()</script><a href="JaVaScRiPt:alert(1)">a</a>'
        '<a href="java&#x73;cript:alert(1)">b</a><a href=" javascript:alert(1)">c</a>'
        '<img src="x" onerror="alert(1)"><iframe src="//evil"></iframe>'
        '<object data="x"></object><embed src="y"><form><input></form>'
        '<a href="data:text/html;base64,PHNjcmlwdD4=">d</a>'
        '<p style="background:url(javascript:alert(1));color:blue">e</p>'
        "<svg><script>1</script></svg><math><mi>x</mi></math></div>"
    )
    out = sanitize_html(src)
    assert out is not None
    assert DANGEROUS.search(out) is None, out
    assert "color: blue" in out or "color:blue" in out


def test_cid_and_raster_data_images_kept() -> None:
    out = sanitize_html(
        '<p><img src="cid:part1.abc@x" alt="logo"><img src="data:image/png;base64,AAAA">'
        '<img src="data:image/svg+xml;base64,PHN2Zz4="></p>'
    )
    assert out is not None
    assert 'src="cid:part1.abc@x"' in out
    assert 'src="data:image/png;base64,AAAA"' in out
    assert "svg+xml" not in out


def test_style_blocks_and_head_dropped_with_their_text() -> None:
    out = sanitize_html(
        "<html><head><title>T</title><style>p{color:red}</style></head><body><p>x</p></body>"
    )
    assert out == "<p>x</p>"


# -- the fast path gives exactly what bleach gives ---------------------------------------------

_TAGS = ["p", "div", "span", "b", "i", "a", "ul", "li", "br", "img", "h1", "table", "td",
         "script", "style", "em", "pre", "dl", "dt", "font", "html", "body"]  # fmt: skip
_ATTRS = [
    'href="https://example.com/x?a=1"',
    'href="javascript:alert(1)"',
    'href="cid:abc@x"',
    'src="http://example.com/i.png"',
    'onclick="x()"',
    'title="t"',
    'class="c"',
    'style="color:red"',
    'width="10"',
    'alt="a"',
]
_TEXT = st.text(alphabet="abc xyz<>&;\n\"'é", max_size=12)


@st.composite
def markup(draw: st.DrawFn, depth: int = 0) -> str:
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["text", "tag", "tag", "void"] if depth < 4 else ["text"]))
        if kind == "text":
            parts.append(draw(_TEXT))
            continue
        tag = draw(st.sampled_from(_TAGS))
        attrs = "".join(" " + a for a in draw(st.lists(st.sampled_from(_ATTRS), max_size=2)))
        if kind == "void":
            parts.append(f"<{tag}{attrs}>")
            continue
        inner = draw(markup(depth + 1))
        close = draw(st.sampled_from([f"</{tag}>", f"</{tag}>", ""]))
        parts.append(f"<{tag}{attrs}>{inner}{close}")
    return "".join(parts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markup())
def test_fast_path_matches_bleach(src: str) -> None:
    fast = plain_markup(src)
    if fast is not None:
        assert fast.strip() == str(_cleaner().clean(src)).strip()
    out = sanitize_html(src)
    assert out is not None
    assert DANGEROUS.search(out) is None, out


def test_fast_path_is_taken_for_plain_markup() -> None:
    src = '<html><body><p>Hello <b>there</b><br/><a href="https://x.test/a">link</a></p></body></html>'
    assert plain_markup(src) == '<p>Hello <b>there</b><br><a href="https://x.test/a">link</a></p>'
    assert plain_markup("<p>unclosed") is None
    assert plain_markup("<p><div>block in p</div></p>") is None
    assert plain_markup('<a href="javascript:x">x</a>') is None


# -- text ---------------------------------------------------------------------------------------


def test_html_to_text_structure() -> None:
    text = html_to_text(
        "<style>.x{}</style><h1>Title</h1><p>One&nbsp;two &amp; three</p>"
        "<ul><li>a</li><li>b</li></ul>line<br>break<table><tr><td>c1</td><td>c2</td></tr></table>"
    )
    assert text.startswith("Title\n\nOne two & three")
    assert "- a\n- b" in text
    assert "line\nbreak" in text
    assert "c1 c2" in text
    assert ".x{}" not in text


def test_reply_text_variants() -> None:
    german = "Danke!\n\nAm 23.04.2026 um 10:00 schrieb Support <s@x.test>:\n> alt\n"
    assert reply_text(german) == "Danke!"
    forward = "FYI\n\n---------- Forwarded message ---------\nFrom: a@b\nSubject: x\n\nold\n"
    assert reply_text(forward) == "FYI"
    interleaved = "> question one?\nanswer one\n> question two?\nanswer two\n"
    assert reply_text(interleaved) == "answer one\nanswer two"
    assert reply_text("Just new text, no quote.\n") == "Just new text, no quote."
    long_text = "\n".join(f"line {i}" for i in range(3000))
    assert reply_text(long_text) == long_text  # no silent cut at quotequail's line limit
    assert reply_text("") == ""
    outlook = (
        "Will do.\n\nFrom: Support <s@x.test>\nSent: Thursday, April 23, 2026 10:00 AM\n"
        "To: Ann <a@x.test>\nSubject: RE: Ticket\n\nPlease send the logs.\n"
    )
    assert reply_text(outlook) == "Will do."
    german = "Erledigt.\n\nVon: Support <s@x.test>\nGesendet: Donnerstag, 23. April 2026\n"
    assert reply_text(german) == "Erledigt."


def test_signature_and_taglines() -> None:
    assert strip_signature("Hi\n-- \nJane\nACME") == "Hi"
    assert strip_signature("Hi there\n\nSent from my iPhone") == "Hi there"
    assert strip_signature("Hi\n\nGet Outlook for Android") == "Hi"
    assert strip_signature("a -- b stays") == "a -- b stays"


def test_unflow() -> None:
    assert unflow("a \nb\n>q \n>r\nc", delsp=False) == "a b\n> q r\nc"
    assert unflow("ab \ncd", delsp=True) == "abcd"
    assert unflow("-- \nsig", delsp=False) == "-- \nsig"
