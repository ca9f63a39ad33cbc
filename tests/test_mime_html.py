"""HTML sanitizing (bleach allowlist + the plain-markup fast path), HTML to text, reply text."""

from __future__ import annotations

import html
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


# -- CSS values (issue 12): expression(), behaviors, bindings, script URLs ---------------------

from mailgate.mime.html import SafeCSS, css_text, css_value_safe  # noqa: E402


def _style(value: str, remote_images: str = "keep") -> str:
    """The style attribute sanitize_html keeps for ``<p style="…">``."""
    attr = html.escape(value, quote=True)
    out = sanitize_html(f'<p style="{attr}">x</p>', remote_images)  # type: ignore[arg-type]
    assert out is not None
    m = re.search(r'style="([^"]*)"', out)
    return html.unescape(m.group(1)) if m else ""


def _css_escape(m: re.Match[str]) -> str:
    """A hex escape as CSS reads it: zero, a surrogate or a value past U+10FFFF is U+FFFD
    (CSS Syntax 3, 4.3.7)."""
    v = int(m.group(1), 16)
    return chr(v) if 0 < v <= 0x10FFFF and not 0xD800 <= v <= 0xDFFF else "\ufffd"


def _css_reads(style: str) -> str:
    """What a lenient (old IE) CSS reader sees: escapes decoded, comments gone, lower case."""
    unescaped = re.sub(r"\\([0-9a-fA-F]{1,6})\s?", _css_escape, style)
    unescaped = re.sub(r"\\(.)", r"\1", unescaped)
    return re.sub(r"/\*.*?\*/|\s|['\"]", "", unescaped).lower()


CSS_DANGER = (
    "expression(",
    "behavior",
    "-moz-binding",
    "javascript:",
    "vbscript:",
    "data:text/html",
)

CSS_VECTORS = [
    "width: expression(alert(1))",
    "width: EXPRESSION(alert(1))",
    "width: ExPrEsSiOn(alert(1))",
    r"width: e\xpression(alert(1))",
    r"width: e\78pression(alert(1))",
    r"width: e\000078pression(alert(1))",
    "width: exp/**/ression(alert(1))",
    "width: exp/* x */ression(alert(1))",
    "width: 1px expression (alert(1))",
    "color: red; behavior: url(evil.htc)",
    r"color: red; b\65havior: url(evil.htc)",
    "-moz-binding: url(http://evil/xbl.xml#x)",
    "border: 1px url(javascript:alert(1))",
    'border: 1px url( "javascript:alert(1)" )',
    "border: 1px url(  'JaVaScRiPt:alert(1)')",
    r'border: 1px url("java\73 cript:alert(1)")',
    "border: 1px url(vbscript:msgbox(1))",
    'border: url("vbscript:x")',
    "border: url(data:text/html;base64,PHNjcmlwdD4=)",
    'border: url("data:text/html,<script>1</script>")',
    "font-family: javascript:alert(1)",
    "border: url(url(javascript:x))",
]


def test_css_vectors_are_dropped_and_safe_declarations_kept() -> None:
    for vector in CSS_VECTORS:
        kept = _style(f"{vector}; color: blue")
        reads = _css_reads(kept)
        for marker in CSS_DANGER:
            assert marker not in reads, (vector, kept)
        assert "color: blue" in kept, (vector, kept)
        assert "url(" not in kept or "http" in kept, (vector, kept)


def test_css_value_check_unit() -> None:
    import tinycss2

    def safe(value: str, strip: bool = False) -> bool:
        (decl,) = [
            t for t in tinycss2.parse_declaration_list(f"x: {value}") if t.type == "declaration"
        ]
        return css_value_safe(decl.value, strip)

    assert safe("10px solid #fff")
    assert safe("url(https://cdn.example.com/bg.png)")
    assert safe("url('cid:logo@x')")
    assert safe("url(data:image/png;base64,AAAA)")
    assert not safe("url(data:image/svg+xml;base64,AAAA)")
    assert not safe("url(ftp://x/y)")
    assert not safe("url(/relative.png)")
    assert not safe("url('https://cdn.example.com/\\9 bg.png')")  # a tab inside the URL
    assert not safe("url('ht\\a tps://cdn.example.com/bg.png')")
    assert not safe("url(https://cdn.example.com/bg.png)", strip=True)
    assert not safe("url(//cdn.example.com/bg.png)", strip=True)
    assert safe("url(cid:logo@x)", strip=True)
    assert not safe("expression(1)")
    assert not safe("rgb(1,2,3) e\\78pression(1)")
    assert safe("rgb(1, 2, 3)")
    assert safe("'Helvetica Neue', Arial")
    tokens = tinycss2.parse_component_value_list("a(" * 3000 + ")" * 3000)
    assert css_text(tokens) is None  # too many tokens: not read, so not kept
    assert css_text(tinycss2.parse_component_value_list("A( B [c] {D} 'E' #F 10PX 5%)")) == (
        "a(b[c]{d}e#f10px5%)"
    )


def test_css_text_reads_like_a_browser() -> None:
    import tinycss2

    def read(value: str) -> str | None:
        return css_text(tinycss2.parse_component_value_list(value))

    assert read(" a\tb\n c ") == "abc"
    assert read(r"(E\78 pression(1)) [C\44] {X\44}") == "(expression(1))[cd]{xd}"
    # comments inside every kind of block are gone too (old IE joined the halves)
    assert read("(exp/**/ression(1)) [exp/**/ression] {exp/**/ression}") == (
        "(expression(1))[expression]{expression}"
    )
    assert read(r"javascript\3a x") == "javascript:x"  # an escaped colon in an identifier
    assert read("'Helvetica Neue', Arial") == "helvetica neue,arial"
    assert read(r"url(java\73 cript:x)") == "url(javascript:x)"
    assert read("url(https://a.test/b)") == "url(https://a.test/b)"
    assert read("url(javascript:alert(1))") is None  # a bad-url token: never kept
    assert read("a," * 1000) is not None  # 2000 tokens: read
    assert read("a," * 1000 + "a") is None  # one more: not read, so not kept


def test_script_urls_with_noise_inside_the_scheme_are_dropped() -> None:
    for src in (
        '<a href="da&#x09;ta:text/html,x">a</a>',
        '<a href="da\nta:text/html,x">a</a>',
        '<img src="data&#x0A;:text/html,x">',
    ):
        out = sanitize_html(src)
        assert out is not None and "href" not in out and "src" not in out, out


def test_safe_css_keeps_order_and_allowlist() -> None:
    css = SafeCSS()
    assert css.sanitize_css("border: url(https://cdn.test/a.png)") == (
        "border: url(https://cdn.test/a.png);"
    )  # kept unless remote images are stripped
    assert (
        css.sanitize_css("color: red; position: fixed; width: 10px") == "color: red; width: 10px;"
    )
    assert css.sanitize_css("color: red;; ;") == "color: red;"
    assert css.sanitize_css("") == ""
    assert css.sanitize_css("@import url(x); color: red") == "color: red;"
    assert css.sanitize_css("behavior: url(x)") == ""
    assert (
        SafeCSS(strip_remote=True).sanitize_css("border: url(http://t.test/p.gif); color: red")
        == "color: red;"
    )


def test_style_elements_never_survive() -> None:
    out = sanitize_html(
        "<style>p { width: expression(alert(1)); behavior: url(x.htc) }</style>"
        "<STYLE type='text/css'>@import 'javascript:alert(1)';</STYLE><p>hi</p>"
    )
    assert out == "<p>hi</p>"


_FRAGMENT = st.sampled_from(
    ["e", "x", "p", "r", "s", "i", "o", "n", "(", "1", ")", "/**/", "\\", "78", " ",
     "javascript", "vbscript", ":", "url(", "'", '"', "behavior", "-moz-binding", "data",
     "text/html", ",", ";", "E", "X", "\\65 ", "\\0078"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prop=st.sampled_from(["width", "color", "border", "font-family", "background-color"]),
    value=st.lists(_FRAGMENT, max_size=25).map("".join),
)
def test_generated_css_never_reads_as_script(prop: str, value: str) -> None:
    kept = _style(f"{prop}: {value}")
    reads = _css_reads(kept)
    for marker in CSS_DANGER:
        assert marker not in reads, (value, kept)


# -- remote images ---------------------------------------------------------------------------------

_IMAGES = (
    '<p>Hi<img src="https://track.example.com/open.gif?u=1" width="1" height="1">'
    '<img src="HTTP://track.example.com/a.gif"><img src="//track.example.com/b.gif">'
    '<img src="cid:logo@acme" alt="logo"><img src="data:image/png;base64,AAAA">'
    '<a href="https://example.com/">link</a></p>'
    '<table background="http://t.example.com/bg.gif"><tr><td background="cid:bg@acme">x</td></tr></table>'
    "<div style=\"border: url('https://t.example.com/c.gif'); color: red\">y</div>"
)


def test_remote_images_kept_by_default() -> None:
    out = sanitize_html(_IMAGES)
    assert out is not None
    assert "https://track.example.com/open.gif?u=1" in out
    assert 'background="http://t.example.com/bg.gif"' in out
    assert "t.example.com/c.gif" in out


def test_remote_images_stripped_keeps_cid_data_and_links() -> None:
    out = sanitize_html(_IMAGES, "strip")
    assert out is not None
    assert "track.example.com" not in out and "t.example.com" not in out
    assert 'src="cid:logo@acme"' in out and 'alt="logo"' in out
    assert 'src="data:image/png;base64,AAAA"' in out
    assert 'background="cid:bg@acme"' in out
    assert 'href="https://example.com/"' in out
    assert "color: red" in out


def test_remote_images_strip_on_the_fast_path_too() -> None:
    src = '<p>a<img src="https://t.example.com/p.gif" alt="x"><img src="cid:c@x"></p>'
    # A dropped attribute sends the markup to bleach, which drops it the same way.
    assert plain_markup(src, "strip") is None
    assert plain_markup(src) is not None
    assert sanitize_html(src, "strip") == '<p>a<img alt="x"><img src="cid:c@x"></p>'
    kept = '<p>a<img src="cid:c@x"></p>'
    assert plain_markup(kept, "strip") == kept


def test_parse_message_strips_remote_images_when_asked() -> None:
    from mailgate.mime.parse import configured_parser, parse_message

    raw = (
        b"From: a@example.com\r\nSubject: news\r\nContent-Type: text/html\r\n\r\n"
        b'<p>News<img src="https://t.example.com/o.gif"></p>\r\n'
    )
    assert "t.example.com" in (parse_message(raw)["html"] or "")
    stripped = configured_parser(remote_images="strip")(raw)
    assert stripped["html"] == "<p>News<img></p>"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markup())
def test_fast_path_matches_bleach_when_stripping(src: str) -> None:
    fast = plain_markup(src, "strip")
    if fast is not None:
        assert fast.strip() == str(_cleaner("strip").clean(src)).strip()
    out = sanitize_html(src, "strip")
    assert out is not None
    assert "http://example.com/i.png" not in out
