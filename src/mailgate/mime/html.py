"""HTML bodies: allowlist sanitizing with bleach, and plain text derived from HTML.

Sanitized output keeps e-mail formatting (tables, fonts, inline CSS filtered by bleach's CSS
sanitizer) but has no script/style/iframe/object/embed/form elements, no ``on*`` handlers, no
``javascript:``/``vbscript:`` URLs and no ``data:`` URLs except raster images in ``<img src>``.
``cid:`` references (RFC 2392) are kept so consumers can resolve inline images.

CSS (issue 12): bleach's CSS sanitizer only allowlists property *names*; values pass as written,
so ``width: expression(alert(1))`` (old IE) survived. ``SafeCSS`` also drops every declaration
whose value, read the way a browser reads it (CSS escapes decoded by tinycss2, comments removed,
case folded, quotes and whitespace ignored), calls ``expression(``, mentions ``behavior``/
``-moz-binding``/``javascript:``/``vbscript:``/``data:text/html``, points ``url()`` at anything
but http(s), ``cid:`` or a raster ``data:image``, or does not tokenize cleanly (a bad ``url(``).
``<style>`` elements are never kept (removed with their content), so only ``style``
attributes carry CSS.

Remote images (``[mime] remote_images``): ``"keep"`` (default) leaves ``<img src=https://…>``
as sent; ``"strip"`` removes remote ``src``/``background`` URLs (``http:``, ``https:``, ``//``)
and CSS ``url(http…)`` declarations, the tracking pixels of marketing mail, and keeps ``cid:``
and ``data:image`` images.
"""

from __future__ import annotations

import html as html_lib
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

import bleach
import tinycss2
from bleach.html5lib_shim import convert_entities

try:  # bleach's CSS sanitizer needs tinycss2 (the bleach[css] extra)
    from bleach.css_sanitizer import ALLOWED_CSS_PROPERTIES, CSSSanitizer
except ImportError:  # pragma: no cover - without it, style attributes are dropped
    CSSSanitizer = None
    ALLOWED_CSS_PROPERTIES = frozenset()

RemoteImages = Literal["keep", "strip"]

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "acronym", "address", "b", "big", "blockquote", "br", "caption", "center",
        "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "font",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol",
        "p", "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup",
        "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var", "wbr",
    }
)  # fmt: skip
_COMMON_ATTRS = frozenset(
    {"style", "class", "dir", "lang", "title", "align", "valign", "width", "height", "bgcolor",
     "color", "border", "cellpadding", "cellspacing", "colspan", "rowspan", "face", "size",
     "nowrap", "start", "type", "span"}
)  # fmt: skip
_TAG_ATTRS = {
    # no "target": a consumer rendering target=_blank links would allow reverse tabnabbing
    "a": frozenset({"href", "name"}),
    "img": frozenset({"src", "alt", "hspace", "vspace"}),
    "td": frozenset({"background"}),
    "table": frozenset({"background", "summary"}),
    "blockquote": frozenset({"cite", "type"}),
    "q": frozenset({"cite"}),
}
# bleach's defaults minus "cursor" (takes url()), plus the box model e-mail layouts rely on.
CSS_PROPERTIES = (ALLOWED_CSS_PROPERTIES - {"cursor"}) | frozenset(
    {"margin", "margin-top", "margin-right", "margin-bottom", "margin-left", "padding",
     "padding-top", "padding-right", "padding-bottom", "padding-left", "border", "border-top",
     "border-right", "border-bottom", "border-left", "border-width", "border-style",
     "border-radius", "max-width", "min-width", "max-height", "min-height", "text-transform",
     "list-style-type", "word-break", "word-wrap", "overflow-wrap", "table-layout"}
)  # fmt: skip
_URI_ATTRS = frozenset({"href", "src", "background", "cite"})
PROTOCOLS = frozenset({"http", "https", "mailto", "tel", "cid", "data", "ftp", "callto", "sms"})
_DATA_IMAGE = re.compile(r"^data:image/(?:png|gif|jpe?g|webp|bmp);")
_URI_NOISE = re.compile(r"[`\000-\040\177-\240\s]+")
# Content that is never shown: removed with its text before bleach (which keeps the text of
# stripped elements); bleach remains the security boundary. Done with str.find, not a lazy
# ".*?" regex, which is quadratic on many unclosed tags.
_HIDDEN_OPEN = re.compile(
    r"<(script|style|head|title|iframe|object|embed|noscript|template|xml|svg|math)\b",
    re.IGNORECASE,
)
_CONDITIONAL_OPEN = re.compile(r"<!--\[if", re.IGNORECASE)


def _drop_hidden(source: str) -> str:
    low = source.lower()
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()
    for m in _HIDDEN_OPEN.finditer(source):
        name = m.group(1).lower()
        if m.start() < pos or name in unclosed:
            continue
        end = low.find("</" + name, m.end())
        close = low.find(">", end) if end >= 0 else -1
        if close < 0:
            unclosed.add(name)  # no later one can be closed either
            continue
        out.append(source[pos : m.start()])
        pos = close + 1
    out.append(source[pos:])
    return "".join(out)


def _drop_conditionals(source: str) -> str:
    """Outlook's <!--[if mso]>...<![endif]--> blocks (VML and layout hacks nobody else reads)."""
    if "<!--[" not in source:
        return source
    low = source.lower()
    out: list[str] = []
    pos = 0
    for m in _CONDITIONAL_OPEN.finditer(source):
        if m.start() < pos:
            continue
        end = low.find("<![endif]-->", m.end())
        if end < 0:
            break
        out.append(source[pos : m.start()])
        pos = end + len("<![endif]-->")
    out.append(source[pos:])
    return "".join(out)


def _is_remote(uri: str) -> bool:
    """An URL the mail client would fetch from the network (normalized, lower-case)."""
    return uri.startswith(("http:", "https:", "//"))


def _allow_attr(tag: str, name: str, value: str, strip_remote: bool = False) -> bool:
    if name.startswith("on") or (name == "style" and CSSSanitizer is None):
        return False
    if name not in _COMMON_ATTRS and name not in _TAG_ATTRS.get(tag, ()):
        return False
    if name in _URI_ATTRS:
        uri = _URI_NOISE.sub("", convert_entities(value)).lower()
        if uri.startswith("data:"):
            return tag == "img" and name == "src" and _DATA_IMAGE.match(uri) is not None
        if strip_remote and name in ("src", "background") and _is_remote(uri):
            return False
    return True


def _allow_attr_strip(tag: str, name: str, value: str) -> bool:
    return _allow_attr(tag, name, value, strip_remote=True)


# -- CSS ------------------------------------------------------------------------------------------

_CSS_MARKERS = (
    "expression(",
    "behavior",
    "behaviour",
    "-moz-binding",
    "javascript:",
    "vbscript:",
    "livescript:",
    "data:text/html",
)
_CSS_URL = re.compile(r"url\(([^()]*)\)")
_CSS_SAFE_URL = re.compile(r"^(?:https?:|//|cid:|data:image/(?:png|gif|jpe?g|webp|bmp);)")
_CSS_MAX_TOKENS = 2000


def css_text(tokens: list[Any]) -> str | None:
    """Declaration tokens as a browser reads them: escapes decoded, comments, whitespace
    tokens and quotes gone, lower-case; None when they contain a tokenizer error (a bad
    ``url(``).

    Iterative (explicit stack) and bounded: nested blocks of a hostile style cannot recurse.
    """
    out: list[str] = []
    stack: list[Any] = list(reversed(tokens))
    seen = 0
    while stack:
        tok = stack.pop()
        seen += 1
        if seen > _CSS_MAX_TOKENS:
            return None
        if isinstance(tok, str):
            out.append(tok)
            continue
        kind = tok.type
        if kind == "error":
            return None
        if kind in ("whitespace", "comment"):
            continue
        if kind == "function":
            out.append(tok.lower_name + "(")
            stack.append(")")
            stack.extend(reversed(tok.arguments))
        elif kind in ("() block", "[] block", "{} block"):
            out.append(kind[0])
            stack.append(kind[1])
            stack.extend(reversed(tok.content))
        elif kind == "url":
            out.append("url(" + tok.value + ")")
        elif kind == "hash":
            out.append("#" + tok.value)
        elif kind in ("ident", "string", "literal", "at-keyword"):
            out.append(str(tok.value))
        else:  # number, percentage, dimension, unicode-range
            out.append(tok.serialize())
    return "".join(out).lower()


def css_value_safe(tokens: list[Any], strip_remote: bool) -> bool:
    """Whether one declaration's value may be kept (see the module docstring)."""
    text = css_text(tokens)
    if text is None:
        return False
    if any(marker in text for marker in _CSS_MARKERS):
        return False
    for m in _CSS_URL.finditer(text):
        target = m.group(1)
        # Browsers drop tabs and newlines inside URLs (WHATWG URL): a URL needing that to be
        # read is not one we keep.
        if _URI_NOISE.search(target) or _CSS_SAFE_URL.match(target) is None:
            return False
        if strip_remote and _is_remote(target):
            return False
    # A url( left unmatched above (nested parentheses) is not one we could check.
    return text.count("url(") == len(_CSS_URL.findall(text))


class SafeCSS(CSSSanitizer):  # type: ignore[misc,valid-type]
    """bleach's property allowlist plus a check of each value (``css_value_safe``)."""

    def __init__(self, strip_remote: bool = False) -> None:
        super().__init__(allowed_css_properties=CSS_PROPERTIES)
        self.strip_remote = strip_remote

    def sanitize_css(self, style: str) -> str:
        kept: list[Any] = []
        for token in tinycss2.parse_declaration_list(style):
            if token.type != "declaration" or token.lower_name not in self.allowed_css_properties:
                continue
            if not css_value_safe(token.value, self.strip_remote):
                continue
            if kept:
                kept.append(
                    tinycss2.ast.WhitespaceToken(token.source_line, token.source_column, " ")
                )
            kept.append(token)
        return str(tinycss2.serialize(kept)).strip() if kept else ""


_local = threading.local()


def _cleaner(remote_images: RemoteImages = "keep") -> bleach.Cleaner:
    # One Cleaner per thread and mode: building one is costly and instances are not
    # thread-safe.
    cleaners: dict[str, bleach.Cleaner] | None = getattr(_local, "cleaners", None)
    if cleaners is None:
        cleaners = _local.cleaners = {}
    cleaner = cleaners.get(remote_images)
    if cleaner is None:
        strip = remote_images == "strip"
        allow: Callable[[str, str, str], bool] = _allow_attr_strip if strip else _allow_attr
        cleaner = bleach.Cleaner(
            tags=ALLOWED_TAGS,
            attributes=allow,
            protocols=PROTOCOLS,
            strip=True,
            strip_comments=True,
            css_sanitizer=SafeCSS(strip_remote=strip) if CSSSanitizer else None,
        )
        cleaners[remote_images] = cleaner
    return cleaner


def sanitize_html(source: str, remote_images: RemoteImages = "keep") -> str | None:
    """Allowlist-sanitized HTML fragment (bleach); None when the markup nests deeper than
    ``MAX_HTML_DEPTH`` (html5lib's tree building is quadratic in depth: a hostile body could
    stall the worker)."""
    fast = plain_markup(source, remote_images)
    if fast is not None:
        return fast.strip()
    source = _drop_hidden(_drop_conditionals(source))
    if html_depth(source) > MAX_HTML_DEPTH:
        return None
    return str(_cleaner(remote_images).clean(source)).strip()


# -- fast path ----------------------------------------------------------------------------------
# bleach (html5lib) costs ~5 ms for a 10 KB body. Markup that is already plain - only allowlisted
# tags, properly nested with no HTML5 tree-building fix-ups, plain double-quoted attributes with
# safe URLs, no entities, comments or styles - comes out of bleach unchanged except for dropped
# <html>/<body> wrappers and <br/> written <br>. For such input the result is built directly;
# anything else goes to bleach. tests/test_mime_html.py checks both paths give identical output.

_FAST_TOKEN = re.compile(
    r"""(?P<text>[^<>&]+)
      | <(?P<close>/)?(?P<name>[a-zA-Z][a-zA-Z0-9]{0,9})
         (?P<attrs>(?:[ ]+[a-zA-Z][a-zA-Z-]{0,20}="[^"<>&]*")*)[ ]*(?P<slash>/)?>""",
    re.VERBOSE,
)
_FAST_ATTR = re.compile(r'([a-zA-Z][a-zA-Z-]*)="([^"]*)"')
_FAST_URL = re.compile(r"^(?:https?://[^\s\x00-\x1f\x7f-\x9f`]*|mailto:[^\s:]+|cid:\S+)$")
_FAST_INLINE = frozenset(
    {"a", "abbr", "b", "big", "br", "cite", "code", "del", "dfn", "em", "font", "i", "img",
     "ins", "kbd", "mark", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup",
     "tt", "u", "var"}
)  # fmt: skip
_FAST_BLOCK = frozenset(
    {"p", "div", "ul", "ol", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "dl",
     "dt", "dd", "center", "address"}
)  # fmt: skip
_FAST_VOID = frozenset({"br", "img"})
_FAST_PHRASING_ONLY = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "dt"} | _FAST_INLINE)
_FAST_MAX_DEPTH = 64


def _fast_attrs(tag: str, attrs: str, strip_remote: bool) -> str | None:
    out: list[str] = []
    seen: set[str] = set()
    for m in _FAST_ATTR.finditer(attrs):
        name, value = m.group(1).lower(), m.group(2)
        if name in seen or name == "style" or not _allow_attr(tag, name, value, strip_remote):
            return None
        if name in _URI_ATTRS and _FAST_URL.match(value) is None:
            return None
        seen.add(name)
        out.append(f' {name}="{value}"')
    return "".join(out)


def plain_markup(source: str, remote_images: RemoteImages = "keep") -> str | None:
    """The sanitized form of already-plain markup, or None when bleach must do the work."""
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    n = len(source)
    wrappers = 0
    while pos < n:
        m = _FAST_TOKEN.match(source, pos)
        if m is None:
            return None
        pos = m.end()
        text = m.group("text")
        if text is not None:
            out.append(text)
            continue
        name = m.group("name").lower()
        attrs = m.group("attrs")
        if name in ("html", "body"):
            # Document wrappers: dropped (bleach cleans a fragment); no attributes allowed.
            if attrs or m.group("slash"):
                return None
            wrappers += 1
            if wrappers > 4:
                return None
            continue
        if name not in _FAST_INLINE and name not in _FAST_BLOCK:
            return None
        if m.group("close"):
            if attrs or m.group("slash") or not stack or stack[-1] != name:
                return None
            stack.pop()
            out.append(f"</{name}>")
            continue
        parent = stack[-1] if stack else None
        if parent is not None and parent in _FAST_PHRASING_ONLY and name not in _FAST_INLINE:
            return None  # a block inside <p>/<span>/...: HTML5 would close or move things
        if (name == "li") != (parent in ("ul", "ol")) and (name == "li" or parent in ("ul", "ol")):
            return None
        if (name in ("dt", "dd")) != (parent == "dl"):
            return None
        if name == "a" and "a" in stack:
            return None
        rendered = _fast_attrs(name, attrs, remote_images == "strip")
        if rendered is None:
            return None
        if name in _FAST_VOID:
            out.append(f"<{name}{rendered}>")
            continue
        if m.group("slash") or len(stack) >= _FAST_MAX_DEPTH:
            return None
        stack.append(name)
        out.append(f"<{name}{rendered}>")
    if stack:
        return None
    return "".join(out)


_BLOCK = frozenset(
    {"p", "div", "tr", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
     "pre", "hr", "dl", "dt", "dd", "address", "center", "section", "article", "header",
     "footer", "form", "fieldset", "title"}
)  # fmt: skip
_SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "xml", "svg"})
_WS = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANKS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


_TAG = re.compile(r"""<(/?)([a-zA-Z][a-zA-Z0-9:-]{0,30})\b(?:[^<>"']|"[^"]*"|'[^']*')*>""")
_VOID = frozenset({"br", "hr", "img", "wbr", "col", "input", "meta", "link", "area", "base",
                   "source", "track", "embed", "param"})  # fmt: skip
MAX_HTML_DEPTH = 400
"""Deeper markup is not sanitized (html5lib is quadratic in depth); its text is still kept."""


def _tokens(source: str) -> Iterator[tuple[str, str, bool]]:
    """Linear HTML scan: ("text", data, _) | ("start"/"end", tag, self_closing).

    Not a conforming HTML parser (bleach is the security boundary); it only needs to find
    text, block structure and depth without the quadratic rescans of html.parser on junk
    like "<a<a<a..." or unclosed comments. Comments and <!...> declarations are skipped.
    """
    pos = 0
    n = len(source)
    while pos < n:
        lt = source.find("<", pos)
        if lt < 0:
            yield "text", source[pos:], False
            return
        if lt > pos:
            yield "text", source[pos:lt], False
        if source.startswith("<!--", lt):
            end = source.find("-->", lt + 4)
            pos = n if end < 0 else end + 3
            continue
        if source.startswith(("<!", "<?"), lt):
            end = source.find(">", lt)
            pos = n if end < 0 else end + 1
            continue
        m = _TAG.match(source, lt)
        if m is None:
            yield "text", "<", False
            pos = lt + 1
            continue
        name = m.group(2).lower()
        if m.group(1):
            yield "end", name, False
        else:
            yield "start", name, m.group().endswith("/>")
            if name in _SKIP:
                # Raw text elements: skip to the matching end tag (or the end).
                end = source.lower().find("</" + name, m.end()) if name in _RAW else -1
                if name in _RAW:
                    pos = n if end < 0 else end
                    continue
        pos = m.end()


_RAW = frozenset({"script", "style", "title", "xml", "template", "noscript"})


def html_depth(source: str, limit: int = MAX_HTML_DEPTH) -> int:
    """Nesting depth of the markup (stops counting past ``limit``)."""
    depth = top = 0
    for kind, name, self_closing in _tokens(source):
        if kind == "start" and name not in _VOID and not self_closing:
            depth += 1
            if depth > top:
                top = depth
                if top > limit:
                    break
        elif kind == "end" and name not in _VOID and depth > 0:
            depth -= 1
    return top


def html_to_text(source: str) -> str:
    """Readable plain text of an HTML body: block structure kept as line breaks."""
    out: list[str] = []
    skip = pre = 0
    for kind, value, self_closing in _tokens(_drop_conditionals(source)):
        if kind == "text":
            if not skip:
                data = html_lib.unescape(value)
                out.append(data if pre else _WS.sub(" ", data.replace("\n", " ")))
            continue
        if value in _SKIP:
            if kind == "start" and not self_closing:
                skip += 1
            elif kind == "end":
                skip = max(0, skip - 1)
            continue
        if value == "br" or (value == "hr" and kind == "start"):
            out.append("\n")
        elif value == "li" and kind == "start":
            out.append("\n- ")
        elif value in ("td", "th") and kind == "start":
            out.append(" ")
        elif value in _BLOCK:
            if value == "pre":
                pre = pre + 1 if kind == "start" else max(0, pre - 1)
            out.append("\n\n" if value in ("p", "blockquote", "table") else "\n")
    lines = [line.strip() for line in "".join(out).split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()
