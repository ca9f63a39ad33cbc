"""Everything mailgate creates in its data dir is owner-only (0600 files, 0700 directories)
whatever the umask it was started with: raw mail, attachments and generated keys are private.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailgate.api.keys import read_or_create
from mailgate.store.blobs import BlobStore
from mailgate.store.private import create_private_file, make_private_dirs, write_private_file


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of ``root`` and everything under it."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def not_private(root: Path) -> dict[str, str]:
    bad = {}
    for rel, mode in modes(root).items():
        want = 0o700 if (root / rel).is_dir() else 0o600
        if mode != want:
            bad[rel] = f"{mode:o} (want {want:o})"
    return bad


def _message_with_attachment() -> bytes:
    msg = EmailMessage()
    msg["From"] = "customer@example.org"
    msg["To"] = "support@example.test"
    msg["Subject"] = "invoice attached"
    msg.set_content("see the attachment")
    msg.add_attachment(b"%PDF-1.4 not really\n" * 50, maintype="application", subtype="pdf")
    msg.add_attachment(b"col1,col2\n1,2\n", maintype="text", subtype="csv", filename="d.csv")
    return msg.as_bytes()


def test_serve_data_dir_is_private_under_umask_022(mailgate_server: Any) -> None:
    """A real ``serve`` started with umask 022 (files would be 0644, dirs 0755): the data dir,
    the database and its -wal/-shm, the attachment blobs, the keys and serve.json are private."""
    with umask(0o022):
        srv = mailgate_server()
    srv.send(_message_with_attachment())
    rows = srv.wait_processed(1)
    assert rows[0]["state"] == "processed", srv.log()
    data = srv.data_dir
    found = modes(data)
    # The things this test is about exist (so the mode check below covers them).
    for name in ("mailgate.sqlite", "mailgate.sqlite-wal", "mailgate.sqlite-shm", "serve.json"):
        assert name in found, sorted(found)
    assert any(k.startswith("keys/") for k in found), sorted(found)
    blobs = [k for k in found if k.startswith("attachments/") and len(Path(k).name) == 64]
    assert len(blobs) >= 2, sorted(found)
    assert not_private(data) == {}


def test_blob_and_key_creation_points_ignore_even_an_owner_masking_umask(tmp_path: Path) -> None:
    """umask 0o277 would give 0400/0500 (unwritable); 0o000 would give 0666/0777."""
    for mask in (0o000, 0o277):
        root = tmp_path / f"mask{mask:o}" / "data"
        with umask(mask):
            BlobStore(root / "attachments").put(b"attachment bytes")
            value, created = read_or_create(root / "keys" / "url-signing.key")
            create_private_file(root / "mailgate.sqlite")
            write_private_file(root / "serve.json", b"{}")
        assert created and value
        # every directory from tmp_path/maskNNN down was created here
        assert not_private(root.parent) == {}, mask


def test_existing_directories_keep_their_mode(tmp_path: Path) -> None:
    """A data dir made by the operator (or systemd's StateDirectoryMode=0750) is not changed;
    what mailgate creates inside it is private, and a second call changes nothing."""
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    os.chmod(data, 0o750)
    with umask(0o022):
        make_private_dirs(data / "attachments" / "ab")
        make_private_dirs(data / "attachments" / "ab")
        create_private_file(data / "db")
        (data / "db").write_bytes(b"kept")
        create_private_file(data / "db")  # exists: left as it is, not truncated
    assert (data / "db").read_bytes() == b"kept"
    found = modes(data)
    assert found == {".": 0o750, "attachments": 0o700, "attachments/ab": 0o700, "db": 0o600}
