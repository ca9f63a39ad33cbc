"""Content-addressed attachment store on disk: ``<data_dir>/attachments/ab/cd/<sha256>``.

Attachment bytes never live inside the envelope JSON. Files are written to a temporary name
and renamed, so a reader never sees a partial file; a blob is derivable again from the raw
message, so no fsync is needed here (the raw bytes in SQLite are the source of truth).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from mailgate.store.crypto import NULL_CODEC, NullCodec
from mailgate.store.private import FILE_MODE, make_private_dirs


class BlobStore:
    def __init__(self, root: str | Path, *, codec: NullCodec = NULL_CODEC) -> None:
        self.root = Path(root)
        self.codec = codec  # encryption at rest: files hold sealed bytes, named by the plain hash

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its sha256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest)
        if path.exists():
            return digest
        make_private_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 is masked by the umask
                fh.write(self.codec.seal_blob(digest, data))
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        return self.codec.open_blob(sha256, self.path_for(sha256).read_bytes())

    def exists(self, sha256: str) -> bool:
        try:
            return self.path_for(sha256).exists()
        except ValueError:
            return False
