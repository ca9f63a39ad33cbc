"""What ``mailgate db check`` reports, for either backend, and the attachment-file check both
share (the local blob directory: every file's content must match its name)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailgate.store.crypto import NULL_CODEC, IntegrityError, NullCodec


@dataclass
class CheckReport:
    integrity: str = ""
    messages: int = 0
    raw_checked: int = 0
    raw_purged: int = 0
    blobs_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def check_blob_files(root: Path, report: CheckReport, codec: NullCodec = NULL_CODEC) -> set[str]:
    """Hash every attachment file under ``root`` against its name; the names present."""
    present: set[str] = set()
    if not root.is_dir():
        return present
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith(".tmp-"):
            continue
        report.blobs_checked += 1
        present.add(path.name)
        try:
            plain = codec.open_blob(path.name, path.read_bytes())
        except IntegrityError as exc:
            report.problems.append(f"attachment blob {path.name[:16]}…: {exc}")
            continue
        if hashlib.sha256(plain).hexdigest() != path.name:
            report.problems.append(f"attachment blob {path.name[:16]}…: content does not match")
    return present
