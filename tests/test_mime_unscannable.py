"""Nothing that could hide an attachment passes as clean (issue 12).

An executable is buried under deep and wide MIME structures (multipart/mixed, alternative,
related, message/rfc822 forwards, random boundaries, missing close delimiters) and the message
runs through the real parser and the real pipeline stages: it must come out held, either for
the executable itself or as ``unscannable``. Past ``[mime] max_nesting`` (100) it is always
``unscannable``; at 100 or less the executable is found. Defects that hide nothing (damaged
base64, a missing close delimiter at the end, bad charsets) are still delivered.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import zipfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.mime.errors import MAX_ERRORS, UNSCANNABLE, ErrorLog, unscannable_errors
from mailgate.mime.limits import Limits
from mailgate.mime.parse import configured_parser, parse_message
from mailgate.mime.tnef import TNEF_SIGNATURE
from mailgate.pipeline.offline import MemoryPorts, run_file
from mailgate.pipeline.runner import PipelineRunner
from mailgate.pipeline.stages.scan import MAX_ARCHIVE_DEPTH, scanned_files
from tests.support.mime import assert_valid_envelope, fixture
from tests.support.pipeline import make_config
from tests.support.server import MailgateServer

CRLF = "\r\n"
PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200
EXE_FOUND = {"executable", "blocked-extension", "double-extension", "blocked-type"}
HEAD = "From: attacker@example.org\r\nTo: support@example.test\r\nMIME-Version: 1.0\r\n"


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode().replace("\n", CRLF)


def exe_part(kind: str = "named") -> str:
    """The bottom of every structure: a PE file, named .exe or misnamed as a PDF."""
    if kind == "misnamed":
        ctype, name = "application/pdf", "statement.pdf"
    elif kind == "inline-image":
        ctype, name = "image/png", "logo.png"
    else:
        ctype, name = "application/octet-stream", "setup.exe"
    return (
        f'Content-Type: {ctype}; name="{name}"{CRLF}'
        f"Content-Transfer-Encoding: base64{CRLF}{CRLF}{b64(PE)}"
    )


TEXT = f"Content-Type: text/plain; charset=utf-8{CRLF}{CRLF}see below{CRLF}"
HTML = f"Content-Type: text/html; charset=utf-8{CRLF}{CRLF}<p>see below</p>{CRLF}"


def multipart(
    inner: str,
    *,
    subtype: str = "mixed",
    boundary: str = "b",
    before: int = 0,
    after: int = 0,
    close: bool = True,
) -> str:
    siblings = [HTML if subtype == "alternative" else TEXT]
    parts = siblings * before + [inner] + siblings * after
    body = "".join(f"--{boundary}{CRLF}{p}{CRLF}" for p in parts)
    end = f"--{boundary}--{CRLF}" if close else ""
    return f'Content-Type: multipart/{subtype}; boundary="{boundary}"{CRLF}{CRLF}{body}{end}'


def forward(inner: str, subject: str = "fwd") -> str:
    return (
        f"Content-Type: message/rfc822{CRLF}{CRLF}"
        f"From: someone@example.net{CRLF}Subject: {subject}{CRLF}MIME-Version: 1.0{CRLF}{inner}"
    )


def nested(depth: int, kind: str = "named") -> bytes:
    entity = exe_part(kind)
    for i in range(depth):
        entity = multipart(entity, boundary=f"lvl{i}")
    return (HEAD + f"Subject: deep {depth}{CRLF}" + entity).encode()


def run(raw: bytes, **pipeline: Any) -> dict[str, Any]:
    """Parse and run every pipeline stage (dry run, blobs in memory); the final envelope."""
    env, _ = asyncio.run(run_file(raw, make_config(**pipeline), rcpt=["support@example.test"]))
    # A loose file has no SMTP session; give it the null sender the schema knows.
    env["envelope"]["mailFrom"] = env["envelope"]["mailFrom"] or ""
    assert_valid_envelope(env)
    return dict(env)


def reason(env: dict[str, Any]) -> str | None:
    q = env.get("quarantine")
    return q["reason"] if q else None


# -- generated structures ------------------------------------------------------------------------

_BOUNDARY = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=?", min_size=1, max_size=20
)
_LAYER = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["mixed", "alternative", "related", "rfc822"]),
        "boundary": _BOUNDARY,
        "before": st.integers(0, 2),
        "after": st.integers(0, 2),
        "close": st.booleans(),
    }
)


def _boundary(layer: dict[str, Any], i: int) -> str:
    # The level keeps nested boundaries distinct, except every 7th one, which keeps the drawn
    # text (hypothesis may draw it twice: a reused boundary, as Outlook Express sent).
    return str(layer["boundary"]) + (str(i) if i % 7 else "")


def _boundaries_collide(layers: list[dict[str, Any]]) -> bool:
    """Whether a delimiter of one level could end another ("x" and "x--", "x" and "x")."""
    found = [_boundary(layer, i) for i, layer in enumerate(layers) if layer["kind"] != "rfc822"]
    return any(a.startswith(b) for i, a in enumerate(found) for j, b in enumerate(found) if i != j)


def build(layers: list[dict[str, Any]], leaf: str) -> bytes:
    entity = exe_part(leaf)
    for i, layer in enumerate(layers):
        if layer["kind"] == "rfc822":
            entity = forward(entity, subject=f"fwd {i}")
        else:
            entity = multipart(
                entity,
                subtype=layer["kind"],
                boundary=_boundary(layer, i),
                before=layer["before"],
                after=layer["after"],
                close=layer["close"],
            )
    return (HEAD + "Subject: generated\r\n" + entity).encode()


def _check(layers: list[dict[str, Any]], leaf: str, max_nesting: int) -> None:
    raw = build(layers, leaf)
    env, ports = _envelope(raw, max_nesting)
    outcome_env = _run_env(env, ports)
    got = reason(outcome_env)
    assert got in EXE_FOUND | {"unscannable"}, (got, [e["code"] for e in env["parseErrors"]])
    if len(layers) > max_nesting and not _boundaries_collide(layers):
        # Colliding boundaries flatten the tree (a delimiter ends an outer level early), so
        # the parsed depth may be under the limit: then only the property above holds.
        hidden = unscannable_errors(env["parseErrors"])
        assert hidden, env["parseErrors"]


def _envelope(raw: bytes, max_nesting: int) -> tuple[dict[str, Any], MemoryPorts]:
    from mailgate.pipeline.offline import envelope_from_bytes

    ports = MemoryPorts()
    parsed = configured_parser(max_nesting)(raw, blob_sink=ports.put)
    env, ports = envelope_from_bytes(raw, make_config(), ports=ports)
    env.update(parsed)
    return dict(env), ports


def _run_env(env: dict[str, Any], ports: MemoryPorts) -> dict[str, Any]:
    runner = PipelineRunner(make_config(), ports)
    asyncio.run(runner.process(env, mode="dry-run"))  # type: ignore[arg-type]
    return env


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    layers=st.lists(_LAYER, min_size=0, max_size=14),
    leaf=st.sampled_from(["named", "misnamed", "inline-image"]),
)
def test_generated_structures_never_pass_clean(layers: list[dict[str, Any]], leaf: str) -> None:
    """Wide and nested structures, limit lowered to 10 so that both sides of it are drawn."""
    _check(layers, leaf, max_nesting=10)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.lists(_LAYER, min_size=95, max_size=110),
    leaf=st.sampled_from(["named", "misnamed"]),
)
def test_generated_structures_around_the_default_limit(
    layers: list[dict[str, Any]], leaf: str
) -> None:
    _check(layers, leaf, max_nesting=100)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    depth=st.integers(0, 10),
    kinds=st.lists(
        st.sampled_from(["mixed", "alternative", "related", "rfc822"]), min_size=10, max_size=10
    ),
    leaf=st.sampled_from(["named", "misnamed", "inline-image"]),
)
def test_well_formed_structures_within_the_limit_find_the_executable(
    depth: int, kinds: list[str], leaf: str
) -> None:
    """Closed, distinct boundaries, at most ``max_nesting`` deep: found, never unscannable."""
    layers = [
        {"kind": k, "boundary": f"x{i}y", "before": 1, "after": 1, "close": True}
        for i, k in enumerate(kinds[:depth])
    ]
    env, ports = _envelope(build(layers, leaf), 10)
    assert unscannable_errors(env["parseErrors"]) == []
    assert reason(_run_env(env, ports)) in EXE_FOUND


# -- the explicit cases of the issue ---------------------------------------------------------------


def test_depth_100_is_parsed_and_the_executable_found() -> None:
    env = run(nested(100))
    assert [a["filename"] for a in env["attachments"]] == ["setup.exe"]
    assert unscannable_errors(env["parseErrors"]) == []
    assert env["quarantine"]["reason"] == "executable"
    misnamed = run(nested(100, "misnamed"))
    assert misnamed["quarantine"]["reason"] == "executable"
    assert "statement.pdf" in misnamed["quarantine"]["detail"]


def test_depth_101_and_1200_are_unscannable() -> None:
    deeper = run(nested(101))
    assert deeper["attachments"] == []
    assert deeper["quarantine"]["reason"] == "unscannable"
    assert "limit.depth" in deeper["quarantine"]["detail"]
    very = run(nested(1200))
    assert very["quarantine"]["reason"] == "unscannable"
    assert "parse.structure" in very["quarantine"]["detail"]
    assert "RecursionError" in very["quarantine"]["detail"]


def test_max_nesting_is_configurable() -> None:
    parse = configured_parser(max_nesting=5)
    assert unscannable_errors(parse(nested(5))["parseErrors"]) == []
    assert [e["code"] for e in unscannable_errors(parse(nested(6))["parseErrors"])] == [
        "limit.depth"
    ]


def test_forwards_count_toward_the_depth_and_are_opened() -> None:
    inner = exe_part()
    for i in range(50):
        inner = multipart(inner, boundary=f"m{i}")
        inner = forward(inner, subject=f"level {i}")
    env = run((HEAD + "Subject: forwards\r\n" + inner).encode())
    # 100 levels: every forward opened, the executable listed inside the outermost .eml
    files = scanned_files(env["attachments"])
    assert [name.rsplit("/", 1)[-1] for name, _ in files][-1] == "setup.exe"
    assert files[-1][0].startswith("level 49.eml/")
    assert env["quarantine"]["reason"] == "executable"
    deeper = run((HEAD + "Subject: forwards\r\n" + multipart(inner, boundary="top")).encode())
    assert deeper["quarantine"]["reason"] == "unscannable"


def test_executable_inside_a_forward_is_found_and_the_forward_kept_whole() -> None:
    raw = (
        HEAD
        + "Subject: fwd\r\n"
        + multipart(forward(multipart(exe_part(), boundary="in"), "Invoice"), boundary="out")
    ).encode()
    env = run(raw)
    (eml,) = env["attachments"]
    assert eml["filename"] == "Invoice.eml" and eml["contentType"] == "message/rfc822"
    assert [(c["path"], c["detectedType"]) for c in eml["contains"]] == [
        ("Invoice.eml/setup.exe", "application/x-msdownload")
    ]
    assert env["forwarded"][0]["subject"] == "Invoice"
    assert env["quarantine"] == {
        "reason": "executable",
        "detail": "Invoice.eml/setup.exe: content is application/x-msdownload "
        "(declared application/octet-stream)",
    }


def test_zip_inside_a_forward_is_opened() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", b"hello")
        z.writestr("tool.scr", b"x")
    part = (
        f'Content-Type: application/zip; name="a.zip"{CRLF}Content-Transfer-Encoding: base64'
        f"{CRLF}{CRLF}{b64(buf.getvalue())}"
    )
    env = run(
        (
            HEAD
            + "Subject: z\r\n"
            + multipart(forward(multipart(part, boundary="in"), "Z"), boundary="out")
        ).encode()
    )
    assert env["quarantine"]["reason"] == "blocked-extension"
    assert "Z.eml/a.zip contains tool.scr" in env["quarantine"]["detail"]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _zip_mail(data: bytes) -> bytes:
    part = (
        f'Content-Type: application/zip; name="logs.zip"{CRLF}Content-Transfer-Encoding: base64'
        f"{CRLF}{CRLF}{b64(data)}"
    )
    return (HEAD + "Subject: zip\r\n" + multipart(part)).encode()


def test_archive_nesting_is_bounded_and_deeper_is_unscannable() -> None:
    data = _zip({"setup.exe": PE})
    for _ in range(MAX_ARCHIVE_DEPTH):
        data = _zip({"inner.zip": data})
    found = run(_zip_mail(data))
    assert found["quarantine"]["reason"] == "blocked-extension"
    assert "inner.zip/inner.zip/inner.zip contains setup.exe" in found["quarantine"]["detail"]
    deeper = run(_zip_mail(_zip({"inner.zip": data})))
    assert deeper["quarantine"]["reason"] == "unscannable"
    assert f"nested deeper than {MAX_ARCHIVE_DEPTH}" in deeper["quarantine"]["detail"]


def test_damaged_zip_and_unreadable_inner_archive_are_unscannable() -> None:
    broken = run(_zip_mail(b"PK\x03\x04" + b"\x00" * 200))
    assert broken["quarantine"]["reason"] == "unscannable"
    assert broken["quarantine"]["detail"] == "logs.zip: zip unreadable (BadZipFile)"
    inner = run(_zip_mail(_zip({"inner.zip": b"PK\x03\x04 not really"})))
    assert inner["quarantine"]["reason"] == "unscannable"
    assert inner["quarantine"]["detail"] == "logs.zip/inner.zip: zip unreadable (BadZipFile)"
    clean = run(_zip_mail(_zip({"report.csv": b"a,b\n1,2\n"})))
    assert clean["quarantine"] is None


def test_multipart_that_cannot_be_split_is_unscannable_unless_blank() -> None:
    no_boundary = (
        HEAD
        + "Subject: nb\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n"
        + exe_part()
        + "--x--\r\n"
    )
    env = run(no_boundary.encode())
    assert env["attachments"] == []
    assert env["quarantine"]["reason"] == "unscannable"
    assert "structure.unsplittable" in env["quarantine"]["detail"]
    wrong = no_boundary.replace("multipart/mixed", 'multipart/mixed; boundary="zz"')
    assert run(wrong.encode())["quarantine"]["reason"] == "unscannable"
    # No part headers in the unsplit body (blank, or only text): no split could give a file.
    for body in ("  \r\n", "Hi,\r\n--x\r\nJust text, Content: none.\r\n"):
        raw = HEAD + "Subject: plain\r\nContent-Type: multipart/alternative\r\n\r\n" + body
        env = run(raw.encode())
        assert "structure.multipart-without-parts" in {e["code"] for e in env["parseErrors"]}
        assert env["quarantine"] is None, body
    headers_only = no_boundary.replace(exe_part(), "content-disposition : attachment\r\n\r\nx\r\n")
    assert run(headers_only.encode())["quarantine"]["reason"] == "unscannable"


def test_parts_after_the_close_delimiter_are_unscannable() -> None:
    smuggled = multipart(TEXT, boundary="o") + f"--o{CRLF}{exe_part()}--o--{CRLF}"
    env = run((HEAD + "Subject: epilogue\r\n" + smuggled).encode())
    assert env["quarantine"]["reason"] == "unscannable"
    assert "structure.after-close" in env["quarantine"]["detail"]
    # A repeated close delimiter opens nothing: delivered.
    twice = multipart(TEXT, boundary="o") + f"--o--{CRLF}trailer{CRLF}"
    assert run((HEAD + "Subject: twice\r\n" + twice).encode())["quarantine"] is None


def test_missing_close_delimiters_hide_nothing_and_are_delivered_or_found() -> None:
    # The inner multipart never closes; the outer delimiter still ends it (stdlib eof stack).
    inner = multipart(TEXT, boundary="i", close=False)
    raw = (HEAD + "Subject: unclosed\r\n" + multipart(inner, boundary="o", after=0)).encode()
    env = run(raw.replace(b"--o--\r\n", b"--o\r\n" + exe_part().encode() + b"--o--\r\n"))
    assert env["quarantine"]["reason"] == "executable"
    assert "defect.CloseBoundaryNotFoundDefect" in {e["code"] for e in env["parseErrors"]}


def test_defects_that_hide_nothing_are_still_delivered() -> None:
    for name in ("broken_structure.eml", "base64_damaged.eml", "charsets.eml", "not_mime.eml"):
        env = run(fixture(name))
        assert env["parseErrors"], name
        assert unscannable_errors(env["parseErrors"]) == [], name
        assert env["quarantine"] is None, (name, env["quarantine"])


def test_a_flood_of_harmless_errors_cannot_push_the_unscannable_one_out() -> None:
    junk = "".join(
        f"--f{CRLF}Content-Type: bogus{i}{CRLF}{CRLF}x{CRLF}" for i in range(MAX_ERRORS + 20)
    )
    deep = exe_part()
    for i in range(150):
        deep = multipart(deep, boundary=f"d{i}")
    flood = (
        f'Content-Type: multipart/mixed; boundary="f"{CRLF}{CRLF}{junk}--f{CRLF}{deep}--f--{CRLF}'
    )
    env = run((HEAD + "Subject: flood\r\n" + flood).encode())
    codes = [e["code"] for e in env["parseErrors"]]
    assert codes.index("limit.errors") < codes.index("limit.depth")
    assert env["quarantine"]["reason"] == "unscannable"


def test_error_log_keeps_unscannable_entries_past_the_cap() -> None:
    log = ErrorLog()
    for i in range(MAX_ERRORS + 5):
        log.add("header.x", f"m{i}")
    log.add("limit.depth", "deep")
    log.add("charset.fallback", "late")
    codes = [e["code"] for e in log.items]
    assert codes[MAX_ERRORS:] == ["limit.errors", "limit.depth"]
    assert "limit.depth" in UNSCANNABLE and "charset.fallback" not in UNSCANNABLE


def test_tnef_with_its_signature_that_cannot_be_read_is_unscannable() -> None:
    def tnef_mail(data: bytes) -> bytes:
        part = (
            f'Content-Type: application/ms-tnef; name="winmail.dat"{CRLF}'
            f"Content-Transfer-Encoding: base64{CRLF}{CRLF}{b64(data)}"
        )
        return (HEAD + "Subject: tnef\r\n" + multipart(part)).encode()

    env = run(tnef_mail(TNEF_SIGNATURE + b"\x01"))  # truncated after the signature
    assert env["quarantine"]["reason"] == "unscannable"
    assert "attachment.tnef-unreadable" in env["quarantine"]["detail"]
    plain = run(tnef_mail(b"not tnef at all"))
    assert plain["quarantine"] is None


def test_winmail_with_more_files_than_the_limit_is_unscannable() -> None:
    env = parse_message(fixture("winmail.eml"), limits=Limits(max_tnef_files=1))
    assert [e["code"] for e in unscannable_errors(env["parseErrors"])] == ["limit.tnef-files"]
    assert len(env["attachments"]) == 1
    whole = parse_message(fixture("winmail.eml"), limits=Limits(max_tnef_files=2))
    assert unscannable_errors(whole["parseErrors"]) == []


def test_undecodable_uuencode_is_unscannable_damaged_base64_is_not() -> None:
    part = f'Content-Type: application/octet-stream; name="a.bin"{CRLF}Content-Transfer-Encoding: x-uuencode{CRLF}{CRLF}no begin line{CRLF}'
    env = run((HEAD + "Subject: uu\r\n" + multipart(part)).encode())
    assert env["quarantine"]["reason"] == "unscannable"
    assert "body.undecodable" in env["quarantine"]["detail"]


def test_forward_re_parse_budget() -> None:
    inner = exe_part()
    for i in range(5):
        inner = forward(multipart(inner, boundary=f"q{i}"), subject=f"l{i}")
    raw = (HEAD + "Subject: budget\r\n" + multipart(inner)).encode()
    small = parse_message(raw, limits=Limits(max_nested_bytes=len(raw)))
    assert [e["code"] for e in unscannable_errors(small["parseErrors"])] == ["limit.nested-bytes"]
    assert unscannable_errors(parse_message(raw)["parseErrors"]) == []


def test_unscannable_is_held_even_without_the_scan_stage() -> None:
    stages = [s for s in make_config().pipeline.stages if s != "scan"]
    env = run(nested(101), stages=stages)
    assert env["quarantine"]["reason"] == "unscannable"
    assert "limit.depth" in env["quarantine"]["detail"]


def test_the_hidden_errors_are_named_once_and_not_as_parse_limit() -> None:
    env = run(nested(101))
    assert env["quarantine"] == {
        "reason": "unscannable",
        "detail": "limit.depth: MIME nesting deeper than 100; rest skipped",
    }


# -- end to end ---------------------------------------------------------------------------------------


def test_1200_deep_over_smtp_is_quarantined_not_delivered(mailgate_server: Any) -> None:
    srv: MailgateServer = mailgate_server(max_size="2MB")
    srv.send(nested(1200))
    srv.send(nested(3), rcpt_to=["billing@example.test"])
    clean = HEAD + "Subject: hello\r\nContent-Type: text/plain\r\n\r\nJust a question.\r\n"
    srv.send(clean.encode())
    rows = srv.wait_processed(3)
    by_subject = {json.loads(r["envelope"])["subject"]: r for r in rows}
    deep = by_subject["deep 1200"]
    assert deep["state"] == "quarantined"
    env = json.loads(deep["envelope"])
    assert env["quarantine"]["reason"] == "unscannable"
    assert "parse.structure (" not in env["quarantine"]["detail"]  # code: message, not a repr
    assert env["quarantine"]["detail"].startswith("parse.structure: MIME structure")
    assert by_subject["deep 3"]["state"] == "quarantined"
    assert json.loads(by_subject["deep 3"]["envelope"])["quarantine"]["reason"] == "executable"
    assert by_subject["hello"]["state"] == "processed"
    with srv.db() as conn:
        held = conn.execute(
            "SELECT COUNT(*) FROM events WHERE msg_id IN (?, ?)",
            (deep["id"], by_subject["deep 3"]["id"]),
        ).fetchone()[0]
        delivered = conn.execute(
            "SELECT COUNT(*) FROM events WHERE msg_id = ?", (by_subject["hello"]["id"],)
        ).fetchone()[0]
    assert (held, delivered) == (0, 1)
    listed = json.loads(srv.cli("quarantine", "list", "--json", "--reason", "unscannable").stdout)
    assert [m["id"] for m in listed] == [deep["id"]]


# -- boundaries of each rule (found by mutation testing) ------------------------------------------


def test_forward_at_the_last_allowed_level_is_opened_one_deeper_is_not() -> None:
    def raw(depth: int) -> bytes:
        entity = forward(exe_part(), subject="bottom")  # the forward's own root is the file
        for i in range(depth - 1):
            entity = multipart(entity, boundary=f"f{i}")
        return (HEAD + "Subject: fwd deep\r\n" + entity).encode()

    env = run(raw(100))  # the file is the forward's root, at level 100
    assert env["quarantine"]["reason"] == "executable"
    env = run(raw(101))
    assert env["quarantine"] == {
        "reason": "unscannable",
        "detail": "limit.depth: MIME nesting deeper than 100; rest skipped",
    }


def test_a_forward_the_stdlib_cannot_parse_is_unscannable() -> None:
    deep = exe_part()
    for i in range(1200):
        deep = multipart(deep, boundary=f"r{i}")
    env = run((HEAD + "Subject: fwd\r\n" + multipart(forward(deep, "Deep"), boundary="o")).encode())
    assert env["quarantine"] == {
        "reason": "unscannable",
        "detail": "parse.structure: MIME structure of the forwarded message unreadable "
        "(RecursionError)",
    }


def test_paths_and_names_inside_forwards() -> None:
    named = (
        'Content-Type: message/rfc822; name="given.eml"\r\n\r\n'
        "Subject: Ignored for the name\r\nMIME-Version: 1.0\r\n"
        + forward(multipart(exe_part(), boundary="i2"))  # an inner forward without a name
    )
    env = run((HEAD + "Subject: names\r\n" + multipart(named, boundary="o2")).encode())
    (eml,) = env["attachments"]
    assert eml["filename"] == "given.eml"
    assert [c["path"] for c in eml["contains"]] == ["given.eml/message.eml/setup.exe"]


def test_winmail_inside_a_forward_is_unpacked_into_contains() -> None:
    import re as _re

    winmail = fixture("winmail.eml")
    body = (
        winmail.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in winmail else winmail.split(b"\n\n", 1)[1]
    )
    ctype = _re.search(rb"(?im)^content-type:.*(?:\r?\n[ \t].*)*", winmail)
    assert ctype is not None
    inner = ctype.group().decode() + "\r\n\r\n" + body.decode("latin-1")
    raw = HEAD + "Subject: fwd winmail\r\n" + multipart(forward(inner, "W"), boundary="o3")
    env = parse_message(raw.encode("latin-1"))
    (eml,) = env["attachments"]
    assert [c["filename"] for c in eml["contains"]] == ["minutes.txt", "budget.csv"]


def test_tnef_limit_keeps_the_first_files_not_the_blob() -> None:
    env = parse_message(fixture("winmail.eml"), limits=Limits(max_tnef_files=1))
    assert [a["filename"] for a in env["attachments"]] == ["minutes.txt"]


def test_unreadable_tnef_blob_is_still_listed() -> None:
    part = (
        f'Content-Type: application/ms-tnef; name="winmail.dat"{CRLF}'
        f"Content-Transfer-Encoding: base64{CRLF}{CRLF}{b64(TNEF_SIGNATURE + b'x')}"
    )
    env = parse_message((HEAD + "Subject: t\r\n" + multipart(part)).encode())
    assert [a["filename"] for a in env["attachments"]] == ["winmail.dat"]
    assert [e["message"] for e in unscannable_errors(env["parseErrors"])] == [
        "winmail.dat has the TNEF signature but could not be unpacked; may hide files"
    ]


def test_error_log_reserve_is_exactly_bounded_and_deduplicated() -> None:
    from mailgate.mime.errors import MAX_RESERVED, limit_errors

    log = ErrorLog()
    log.add("header.x", "same")
    log.add("header.x", "same")
    assert log.items == [{"code": "header.x", "message": "same"}]
    for i in range(MAX_ERRORS + 5):
        log.add("header.y", f"m{i}")
    for i in range(MAX_RESERVED + 5):
        log.add("limit.depth", f"d{i}")
    assert log.items[MAX_ERRORS] == {
        "code": "limit.errors",
        "message": "further parse errors dropped",
    }
    reserved = [e for e in log.items[MAX_ERRORS:] if e["code"] == "limit.depth"]
    assert [e["message"] for e in reserved] == [f"d{i}" for i in range(MAX_RESERVED)]
    assert limit_errors(
        [{"code": "limit.parts", "message": ""}, {"code": "x.y", "message": ""}, {"message": "-"}]  # type: ignore[list-item]
    ) == ["limit.parts"]
    assert unscannable_errors([{"code": "limit.depth"}, "junk", {"code": "x"}]) == [
        {"code": "limit.depth", "message": ""}
    ]


def test_scan_helpers_name_every_file_and_every_hidden_error() -> None:
    from mailgate.pipeline.stages.scan import unscannable_finding

    files = scanned_files(
        [
            {"id": "att_1"},
            {},
            {"filename": "f.eml", "contains": [{"filename": "x.exe"}, {}, "junk"]},
        ]
    )
    assert [name for name, _ in files] == ["att_1", "attachment", "f.eml", "x.exe", "attachment"]
    finding = unscannable_finding(
        [{"code": "limit.depth", "message": "a"}, {"code": "parse.structure", "message": "b"}]
    )
    assert finding is not None
    assert finding.detail == "limit.depth: a; parse.structure: b"
    assert unscannable_finding([{"code": "charset.fallback", "message": "c"}]) is None


def test_nested_archive_that_fails_to_extract_is_unscannable() -> None:
    inner = _zip({"setup.exe": PE})
    outer = bytearray(_zip({"inner.zip": inner}))  # stored: the inner bytes appear as is
    at = bytes(outer).index(inner) + len(inner) // 2
    outer[at] ^= 0xFF  # the member's CRC-32 no longer matches: extracting it fails
    env = run(_zip_mail(bytes(outer)))
    assert env["quarantine"] == {
        "reason": "unscannable",
        "detail": "logs.zip/inner.zip: unreadable (BadZipFile)",
    }
