"""Reply templates: loading, refusing unsafe ones, rendering in Jinja2's sandbox.

Templates are operator input, so they are rendered with Jinja2's
``ImmutableSandboxedEnvironment`` (no Python internals, no mutation of the values we pass) and
checked before first use:

- statically, on the parsed template: any ``_``-prefixed attribute, item or name
  (``{{ ''.__class__.__mro__ }}``), an ``attr`` filter with such or a computed name, a
  ``str.format`` field reaching one (``'{0.__class__}'``), and
  dynamic ``include``/``extends``/``import`` targets are refused, recursively through the
  templates a template includes;
- dynamically, by a trial render with sample values: a ``SecurityError`` or any other error
  refuses the template, and so does output over ``MAX_OUTPUT`` characters.

A refused template is never rendered. With ``[reply] enabled = true`` the config validator
(`reply.settings.validate`) runs the same checks when the config loads, so ``check-config`` and
``serve`` refuse it with the file name and the reason; at run time the ``respond`` stage
records ``template-refused`` and sends nothing.

Files: ``<templates_dir>/<name>.txt`` (plain text, required) and ``<name>.html`` (optional
HTML alternative), with per-tenant overrides in ``<templates_dir>/<tenant>/``. The built-in
``ack`` (package data, ``mailgate/templates/ack.txt``) is used when no file overrides it.

Variables: ``name`` (the customer's display name), ``email``, ``customer`` (``{name, email}``),
``ticket``, ``queue``, ``tenant``, ``priority``, ``sla`` (``[reply] sla`` text for the queue),
``subject`` (the original subject), ``entities`` (extracted entities, name -> values) and
``kb_links`` (``[reply] kb_links`` for the queue, a list of ``{title, url}``). The incident
banners and the legal footer are added around the rendered text by `ReplyTemplates.render`,
so no template can forget them.
"""

from __future__ import annotations

import html as htmlmod
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import (
    ChainableUndefined,
    ChoiceLoader,
    FileSystemLoader,
    FunctionLoader,
    TemplateNotFound,
    nodes,
)
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailgate.per_object import PerObject

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_OUTPUT = 64 * 1024
REVALIDATE = 2.0
BUILTIN = ("ack",)
# str.format fields reaching a private attribute or item: "{0.__class__}", "{x[_y]}"
_FORMAT_PRIVATE = re.compile(r"\{[^{}]*[.\[]\s*_")
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)

SAMPLE_CONTEXT: dict[str, Any] = {
    "name": "Alice Example",
    "email": "alice@example.org",
    "customer": {"name": "Alice Example", "email": "alice@example.org"},
    "ticket": "T-1042",
    "queue": "billing",
    "tenant": "default",
    "priority": "normal",
    "sla": "one business day",
    "subject": "Invoice question",
    "entities": {"orderId": ["472100"]},
    "kb_links": [{"title": "Billing FAQ", "url": "https://help.example.test/billing"}],
}


class TemplateProblem(Exception):
    """A reply template cannot be used; ``reason`` is the ``env.reply.reason`` token."""

    reason = "template-error"

    def __init__(self, template: str, detail: str) -> None:
        super().__init__(f"reply template {template!r}: {detail}")
        self.template = template
        self.detail = detail


class TemplateMissing(TemplateProblem):
    reason = "template-missing"


class TemplateRefused(TemplateProblem):
    """Unsafe (sandbox escape attempt) or unusable: refused, never rendered."""

    reason = "template-refused"


@dataclass(frozen=True)
class Rendered:
    template: str
    text: str
    html: str | None = None


def _builtin_source(name: str) -> str | None:
    stem = name.rsplit(".", 1)[0]
    if stem not in BUILTIN:
        return None
    try:
        return resources.files("mailgate").joinpath("templates", name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None


class ReplyTemplates:
    """The templates of one ``templates_dir`` (None: only the built-ins), checked and cached."""

    def __init__(self, templates_dir: Path | None, *, max_output: int = MAX_OUTPUT) -> None:
        self.dir = templates_dir
        self.max_output = max_output
        loaders: list[Any] = []
        if templates_dir is not None:
            loaders.append(FileSystemLoader(str(templates_dir)))
        loaders.append(FunctionLoader(_builtin_source))
        loader = ChoiceLoader(loaders)
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": ChainableUndefined,
            "keep_trailing_newline": True,
            "auto_reload": True,
        }
        self.text_env = ImmutableSandboxedEnvironment(autoescape=False, **common)
        self.html_env = ImmutableSandboxedEnvironment(autoescape=True, **common)
        self._checked: PerObject[JinjaTemplate, str | None] = PerObject(limit=256)
        self._loaded: dict[
            tuple[str, str | None], tuple[float, tuple[JinjaTemplate, JinjaTemplate | None]]
        ] = {}

    # ------------------------------------------------------------------ lookup

    def _find(
        self, env: ImmutableSandboxedEnvironment, name: str, tenant: str | None, ext: str
    ) -> JinjaTemplate | None:
        candidates = []
        if tenant and NAME_RE.match(tenant):
            candidates.append(f"{tenant}/{name}.{ext}")
        candidates.append(f"{name}.{ext}")
        for candidate in candidates:
            try:
                return env.get_template(candidate)
            except TemplateNotFound:
                continue
            except SecurityError as exc:
                raise TemplateRefused(name, str(exc)) from None
            except Exception as exc:  # a syntax error in an operator's file
                raise TemplateRefused(name, f"{candidate}: {type(exc).__name__}: {exc}") from None
        return None

    def _vetted(
        self, template: JinjaTemplate, name: str, env: ImmutableSandboxedEnvironment
    ) -> JinjaTemplate:
        """Static and trial-render checks, once per compiled template object."""

        def check(template: JinjaTemplate) -> str | None:
            problem = self._static_problem(env, template.name or name, set())
            if problem is None:
                try:
                    self._generate(template, SAMPLE_CONTEXT, name)
                except TemplateProblem as exc:
                    problem = exc.detail
            return problem

        problem = self._checked.get(template, check)
        if problem is not None:
            raise TemplateRefused(name, problem)
        return template

    def load(
        self, name: str, tenant: str | None = None
    ) -> tuple[JinjaTemplate, JinjaTemplate | None]:
        """The checked text template and optional HTML template; raises `TemplateProblem`.

        Look-ups are remembered for ``REVALIDATE`` seconds, so a template changed on disk is
        used (and checked) within seconds without a file system probe for every reply.
        """
        key = (name, tenant)
        now = time.monotonic()
        hit = self._loaded.get(key)
        if hit is not None and now - hit[0] < REVALIDATE:
            return hit[1]
        found = self._load(name, tenant)
        if len(self._loaded) > 1024:
            self._loaded.clear()
        self._loaded[key] = (now, found)
        return found

    def _load(self, name: str, tenant: str | None) -> tuple[JinjaTemplate, JinjaTemplate | None]:
        if not NAME_RE.match(name):
            raise TemplateMissing(name, "not a template name (letters, digits, . _ -)")
        text = self._find(self.text_env, name, tenant, "txt")
        if text is None:
            where = f" in {self.dir}" if self.dir is not None else ""
            raise TemplateMissing(name, f"no {name}.txt{where} and no built-in of that name")
        html = self._find(self.html_env, name, tenant, "html")
        return (
            self._vetted(text, name, self.text_env),
            self._vetted(html, name, self.html_env) if html is not None else None,
        )

    # ------------------------------------------------------------------ checks

    def _static_problem(
        self, env: ImmutableSandboxedEnvironment, name: str, seen: set[str]
    ) -> str | None:
        if name in seen:
            return None
        seen.add(name)
        try:
            source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            tree = env.parse(source, name=name)
        except TemplateNotFound:
            return f"{name}: not found"
        except Exception as exc:
            return f"{name}: {type(exc).__name__}: {exc}"
        for node in tree.find_all(
            (
                nodes.Getattr,
                nodes.Getitem,
                nodes.Const,
                nodes.Name,
                nodes.Filter,
                nodes.Include,
                nodes.Extends,
                nodes.Import,
                nodes.FromImport,
            )
        ):
            if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
                return f"{name}: access to the private attribute {node.attr!r} is refused"
            if isinstance(node, nodes.Getitem):
                arg = node.arg
                if (
                    isinstance(arg, nodes.Const)
                    and isinstance(arg.value, str)
                    and arg.value.startswith("_")
                ):
                    return f"{name}: access to the private item {arg.value!r} is refused"
            if (
                isinstance(node, nodes.Const)
                and isinstance(node.value, str)
                and _FORMAT_PRIVATE.search(node.value)
            ):
                return f"{name}: a format string reaching a private attribute is refused"
            if isinstance(node, nodes.Name) and node.name.startswith("_"):
                return f"{name}: the private name {node.name!r} is refused"
            if isinstance(node, nodes.Filter) and node.name == "attr":
                args = node.args
                if (
                    not args
                    or not isinstance(args[0], nodes.Const)
                    or not isinstance(args[0].value, str)
                    or args[0].value.startswith("_")
                ):
                    return f"{name}: the attr filter with a private or computed name is refused"
            if isinstance(node, (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
                target = node.template
                if not isinstance(target, nodes.Const) or not isinstance(target.value, str):
                    return f"{name}: include/extends/import of a computed template is refused"
                problem = self._static_problem(env, target.value, seen)
                if problem is not None:
                    return problem
        return None

    def check(self, name: str, tenant: str | None = None) -> None:
        """Load and vet one template (text and HTML); raises `TemplateProblem`."""
        self.load(name, tenant)

    def names(self) -> Iterator[tuple[str, str | None]]:
        """(name, tenant) of every ``.txt``/``.html`` file in the directory and its tenant dirs."""
        yield from ((b, None) for b in BUILTIN)
        if self.dir is None or not self.dir.is_dir():
            return
        for path in sorted(self.dir.iterdir()):
            if path.is_file() and path.suffix in (".txt", ".html") and NAME_RE.match(path.stem):
                yield path.stem, None
            elif path.is_dir() and NAME_RE.match(path.name):
                for sub in sorted(path.iterdir()):
                    if (
                        sub.is_file()
                        and sub.suffix in (".txt", ".html")
                        and NAME_RE.match(sub.stem)
                    ):
                        yield sub.stem, path.name

    def check_all(self) -> None:
        """Vet every template file; raises the first `TemplateProblem`."""
        for name, tenant in dict.fromkeys(self.names()):
            if (
                tenant is not None
                and self.dir is not None
                and not (self.dir / tenant / f"{name}.txt").is_file()
                and not (self.dir / f"{name}.txt").is_file()
                and name not in BUILTIN
            ):
                raise TemplateMissing(name, f"{tenant}/{name}.html has no plain-text {name}.txt")
            if (
                tenant is None
                and self.dir is not None
                and not (self.dir / f"{name}.txt").is_file()
                and name not in BUILTIN
            ):
                raise TemplateMissing(name, f"{name}.html has no plain-text {name}.txt")
            self.check(name, tenant)

    # ------------------------------------------------------------------ rendering

    def _generate(self, template: JinjaTemplate, context: dict[str, Any], name: str) -> str:
        out: list[str] = []
        size = 0
        try:
            for chunk in template.generate(context):
                size += len(chunk)
                if size > self.max_output:
                    raise TemplateRefused(name, f"output over {self.max_output} characters")
                out.append(chunk)
        except TemplateProblem:
            raise
        except SecurityError as exc:
            raise TemplateRefused(name, f"sandbox: {exc}") from None
        except Exception as exc:
            raise TemplateRefused(name, f"render failed: {type(exc).__name__}: {exc}") from None
        return "".join(out)

    def render(
        self,
        name: str,
        context: dict[str, Any],
        *,
        tenant: str | None = None,
        banners: list[str] | tuple[str, ...] = (),
        footer: str = "",
    ) -> Rendered:
        """Render the plain text (and HTML, if there is one) with banners and footer added."""
        text_t, html_t = self.load(name, tenant)
        text = self._generate(text_t, context, name)
        html = self._generate(html_t, context, name) if html_t is not None else None
        return Rendered(
            template=name,
            text=decorate_text(text, banners, footer),
            html=decorate_html(html, banners, footer) if html is not None else None,
        )


def decorate_text(body: str, banners: list[str] | tuple[str, ...], footer: str) -> str:
    """Banners first (each its own paragraph), then the body, then ``-- `` and the footer."""
    parts = [b.strip() for b in banners if b.strip()]
    parts.append(body.strip("\n"))
    text = "\n\n".join(parts)
    if footer.strip():
        text += "\n\n-- \n" + footer.strip("\n")  # RFC 3676 section 4.3 signature separator
    return text + "\n"


def decorate_html(body: str, banners: list[str] | tuple[str, ...], footer: str) -> str:
    top = "".join(
        f'<p style="padding:8px;border:1px solid #c90;background:#fff8e1">'
        f"{htmlmod.escape(b.strip())}</p>\n"
        for b in banners
        if b.strip()
    )
    bottom = ""
    if footer.strip():
        lines = "<br>\n".join(htmlmod.escape(line) for line in footer.strip("\n").splitlines())
        bottom = f'\n<hr>\n<p style="font-size:smaller;color:#555">{lines}</p>\n'
    m = _BODY_OPEN.search(body)
    body = body[: m.end()] + "\n" + top + body[m.end() :] if m else top + body
    closes = list(_BODY_CLOSE.finditer(body))
    if closes:
        at = closes[-1].start()
        return body[:at] + bottom + body[at:]
    return body + bottom
