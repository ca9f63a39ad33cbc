"""Attachment records: filename sanitizing, type sniffing, the blob sink, ids, TNEF failure."""

from __future__ import annotations

import base64
import hashlib

import pytest

from mailgate.mime.attachments import MAX_FILENAME_BYTES, sanitize_filename, sniff_type
from mailgate.mime.parse import parse_message
from tests.support.mime import assert_valid_envelope


@pytest.mark.parametrize(
    ("name", "ctype", "expected"),
    [
        ("../../etc/passwd", "text/plain", "passwd"),
        ("C:\\Users\\bob\\invoice.pdf", "application/pdf", "invoice.pdf"),
        ("/evil/because:ofpath.gif", "image/gif", "because_ofpath.gif"),
        (".htaccess", "text/plain", "htaccess"),
        ("...", "application/pdf", "attachment-3.pdf"),
        ("", "image/jpeg", "attachment-3.jpg"),
        (None, "text/calendar", "attachment-3.ics"),
        (None, "application/x-unknown-thing", "attachment-3.bin"),
        ("inv\u202eoice\x00\x1f.pdf", "application/pdf", "invoice.pdf"),  # bidi override, controls
        ("report?.pdf", "application/pdf", "report_.pdf"),
        ("CON.txt", "text/plain", "_CON.txt"),
        ("  spaced   name .txt ", "text/plain", "spaced name .txt"),
        ("e\u0301te\u0301.txt", "text/plain", "été.txt"),  # NFC
    ],
)
def test_sanitize_filename(name: str | None, ctype: str, expected: str) -> None:
    assert sanitize_filename(name, ctype, 3) == expected


def test_filename_length_cap_keeps_extension() -> None:
    long = "ä" * 300 + ".pdf"
    out = sanitize_filename(long, "application/pdf", 1)
    assert out.endswith(".pdf")
    assert len(out.encode()) <= MAX_FILENAME_BYTES
    assert sanitize_filename("x" * 400, "text/plain", 1) == "x" * MAX_FILENAME_BYTES


def test_sniff_type() -> None:
    assert sniff_type(b"%PDF-1.7 ...") == "application/pdf"
    assert sniff_type(b"\x89PNG\r\n\x1a\n" + b"\0" * 30) == "image/png"
    assert sniff_type(b"plain words") == "text/plain"
    assert sniff_type(b"\x00\x01\x02\x03") == "application/octet-stream"
    assert sniff_type(b"") is None


def _message(parts: list[tuple[str, bytes]]) -> bytes:
    body = b"".join(
        b"--B\r\n" + headers.encode() + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(data).replace(b"\n", b"\r\n")
        for headers, data in parts
    )  # fmt: skip
    return (
        b"From: a@example.com\r\nSubject: att\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n' + body + b"--B--\r\n"
    )


def test_blob_sink_receives_bytes_and_ids_are_stable() -> None:
    exe = b"MZ" + b"\x90" * 100
    raw = _message(
        [
            ('Content-Type: application/pdf; name="invoice.pdf"', exe),
            ("Content-Type: image/png\r\nContent-ID: <img1@x>", b"\x89PNG\r\n\x1a\n" + b"\0" * 9),
        ]
    )
    stored: dict[str, bytes] = {}

    def sink(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        stored[digest] = data
        return digest

    env = parse_message(raw, blob_sink=sink)
    assert_valid_envelope(env)
    pdf, png = env["attachments"]
    assert stored[pdf["sha256"]] == exe
    assert pdf["contentType"] == "application/pdf"
    assert pdf["detectedType"] == "application/x-msdownload"  # declared pdf, really a PE file
    assert (png["disposition"], png["contentId"]) == ("inline", "img1@x")
    assert pdf["id"].startswith("att_") and pdf["id"] != png["id"]
    again = parse_message(raw)
    assert [a["id"] for a in again["attachments"]] == [pdf["id"], png["id"]]
    assert pdf["url"] is None


def test_unreadable_winmail_dat_is_kept() -> None:
    raw = _message([('Content-Type: application/ms-tnef; name="winmail.dat"', b"not tnef")])
    env = parse_message(raw)
    assert [a["filename"] for a in env["attachments"]] == ["winmail.dat"]
    assert "attachment.tnef" in {e["code"] for e in env["parseErrors"]}


def test_uuencoded_and_gzip64_bodies() -> None:
    import gzip

    packed = base64.encodebytes(gzip.compress(b"hello gzip")).decode()
    raw = (
        "From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: application/octet-stream; name=u.bin\r\n"
        "Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 u.bin\r\n%:&5L;&\\`\r\n`\r\nend\r\n"
        "--B\r\nContent-Type: text/plain; name=g.txt\r\nContent-Disposition: attachment\r\n"
        "Content-Transfer-Encoding: x-gzip64\r\n\r\n" + packed + "--B--\r\n"
    ).encode()
    env = parse_message(raw)
    sizes = {a["filename"]: a["size"] for a in env["attachments"]}
    assert sizes["g.txt"] == len(b"hello gzip")
    assert sizes["u.bin"] == 5


def test_blob_sink_failure_propagates() -> None:
    from mailgate.mime.parse import BlobSinkError

    def broken(data: bytes) -> str:
        raise OSError(28, "No space left on device")

    raw = _message([('Content-Type: application/pdf; name="a.pdf"', b"%PDF-1.4")])
    with pytest.raises(BlobSinkError) as info:
        parse_message(raw, blob_sink=broken)
    assert isinstance(info.value.__cause__, OSError)
