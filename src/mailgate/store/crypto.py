"""Encryption at rest: the codec the store applies where raw MIME, envelopes and blobs are
written and read (AES-256-GCM, ``cryptography``).

Keys: a key-encryption key (KEK, 32 bytes) comes from ``[store] encryption_key_file`` or
``$MAILGATE_ENCRYPTION_KEY`` (base64 of 32 random bytes, one line; ``mailgate keys
new-encryption-key FILE`` writes one). It never touches the data dir. It wraps the data keys
that encrypt the data; they live wrapped in ``<data_dir>/keys/data-keys.json`` (0600, copied
by ``mailgate backup``). ``mailgate keys rotate`` re-wraps them under a new KEK: no message is
rewritten. A new data key can be added (``--new-data-key``); old ones stay to read old data.

Format: ``MGE1`` + data key id (4 bytes) + nonce (12) + ciphertext and tag. The associated
data binds each ciphertext to where it belongs (``raw:<msg id>``, ``env:<msg id>:*``,
``col:<row id>:<column>``, ``blob:<sha256>``), so a ciphertext moved to another row does not
decrypt. The envelope fields that carry content or name a person (``ENCRYPTED_FIELDS``) leave
the envelope's JSON and are sealed together into one ciphertext (the ``sealed`` column, raw
bytes): the JSON keeps what the store's SQL reads (queue, attachments), and reading splices the
opened fields back in as text. The message columns with addresses and the subject
(``SEALED_COLUMNS``) and the reply outbox's recipient and draft are sealed one by one as
``"mge1:<base64>"`` strings (``seal_text``). Where the store needs only equality (thread
contacts and participants, the reply limits' return path, Message-IDs, dedup keys) it keeps a
keyed hash instead (``index``). Values without the prefix are read as they are: a store that had
no key yet stays readable after one is configured, and so do envelopes sealed field by field
inside the JSON (how this module sealed them before the ``sealed`` column). A ciphertext that
fails authentication raises ``IntegrityError`` (the message is quarantined with reason
``integrity``; a delivery whose envelope does not open is dead-lettered).

Stored form, with or without a key: when ``replyText`` is a part of ``text`` as ``reply_text``
leaves it for a message with nothing quoted or a top-posted reply (the text past its leading
white space, up to the quotes or signature), the stored JSON begins ``{"replyText":[s,n],"text":"…"``
and reading cuts the reply's JSON string out of the text's (``fold_reply`` / ``unfold_reply``):
a 100 KB message's envelope is written and read as ~100 KB instead of ~200 KB, and the reader
still gets the JSON text without decoding it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailgate import jsontext
from mailgate.config import ENV_ENCRYPTION_KEY, Config
from mailgate.store.base import StoreError
from mailgate.store.private import make_private_dirs, write_private_file
from mailgate.store.rows import KeyedRow, row_dict

ENV_KEY = ENV_ENCRYPTION_KEY
MAGIC = b"MGE1"
FIELD_PREFIX = "mge1:"
DATA_KEYS_FILE = "data-keys.json"
ENCRYPTED_FIELDS = (
    "from",
    "replyTo",
    "to",
    "cc",
    "bcc",
    "customer",
    "envelope",
    "subject",
    "bounce",
    "reply",
    "spf",  # its mailFrom is the envelope sender
    "dkim",  # i= may be a whole address
    "authenticationResults",
    "messageId",
    "inReplyTo",
    "references",
    "text",
    "replyText",
    "html",
    "headers",
    "forwarded",
    "calendar",
    "entities",
)
SEALED_COLUMNS = ("mail_from", "rcpt_to", "subject", "auth", "smtp")
"""Columns of ``messages`` (and the rows joined with it) that hold a person's address or the
subject: sealed like envelope fields (``seal_text``), read back through ``open_columns``."""
REPLY_SEALED_COLUMNS = ("recipient", "mail_from", "subject", "draft", "last_error")
"""Columns of ``reply_outbox`` sealed under the reply's id (its limit keys are keyed hashes)."""
_HEADER = struct.Struct(">4sI12s")


class EncryptionKeyError(StoreError):
    """The encryption key is missing, malformed or not the one the data keys were wrapped with."""


class IntegrityError(StoreError):
    """A ciphertext failed authentication: tampered with, truncated, or moved to another row."""


def parse_kek(text: str) -> bytes:
    """32 bytes from their base64 (one line); anything else is refused."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyError("the encryption key is not base64") from None
    if len(key) != 32:
        raise EncryptionKeyError(
            f"the encryption key must be 32 bytes (base64 of them), not {len(key)}"
        )
    return key


def read_kek_file(path: str | Path) -> bytes:
    try:
        return parse_kek(Path(path).read_text(encoding="ascii"))
    except OSError as exc:
        raise EncryptionKeyError(
            f"cannot read the encryption key file {path}: {exc.strerror}"
        ) from None


def new_kek_text() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def kek_id(kek: bytes) -> str:
    """A short, non-secret name of a KEK: which key the data keys are wrapped with."""
    return hmac.new(kek, b"mailgate kek id", hashlib.sha256).hexdigest()[:16]


class NullCodec:
    """No encryption: every method hands the value back (the default, without a key)."""

    enabled = False

    def seal_raw(self, msg_id: str, raw: bytes) -> bytes:
        return raw

    def open_raw(self, msg_id: str, data: bytes) -> bytes:
        return data

    def seal_envelope(self, msg_id: str, env: dict[str, Any]) -> tuple[str, bytes | None]:
        """The envelope as stored: its JSON text (the ``envelope`` column) and the ciphertext of
        its sealed fields (the ``sealed`` column; None: nothing sealed)."""
        return jsontext.dumps(fold_reply(env)), None

    def open_envelope(self, msg_id: str, text: str, sealed: bytes | None = None) -> dict[str, Any]:
        """The stored envelope (both columns) as the consumers see it."""
        env: dict[str, Any] = jsontext.loads(self.open_envelope_json(msg_id, text, sealed))
        return env

    def open_envelope_json(self, msg_id: str, text: str, sealed: bytes | None = None) -> str:
        return unfold_reply(text)

    def seal_blob(self, sha256: str, data: bytes) -> bytes:
        return data

    def open_blob(self, sha256: str, data: bytes) -> bytes:
        return data

    def index(self, value: str) -> str:
        """The form a searched-for value (a Message-ID, a dedup key) is stored and looked up in."""
        return value

    def seal_text(self, where: str, value: str) -> str:
        """A text column (an address, a subject) as stored; ``where`` names its row and column."""
        return value

    def open_text(self, where: str, value: str) -> str:
        return value

    def open_columns(self, row_id: str, row: KeyedRow, names: tuple[str, ...] = ()) -> KeyedRow:
        """``row`` with its sealed columns opened: ``names``, by default ``SEALED_COLUMNS``
        (``row_id``: the id the columns were sealed under, the message's or the reply's)."""
        return row


NULL_CODEC = NullCodec()


class AesGcmCodec(NullCodec):
    """AES-256-GCM under the active data key; any known data key opens (see the module doc)."""

    enabled = True

    def __init__(self, keys: dict[int, bytes], active: int) -> None:
        if active not in keys:
            raise EncryptionKeyError("the active data key is missing")
        self._aead = {kid: AESGCM(k) for kid, k in keys.items()}
        self.active = active
        # from the oldest data key: rotation and new data keys leave stored index values valid
        self._index_key = hmac.new(
            keys[min(keys)], b"mailgate index key v1", hashlib.sha256
        ).digest()

    def index(self, value: str) -> str:
        """A keyed hash (HMAC-SHA256) where the store needs only equality: Message-IDs in the
        thread index, dedup keys. Not reversible without the key; equal values, equal hashes."""
        mac = hmac.new(self._index_key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return "h1:" + mac.hexdigest()[:40]

    def seal_text(self, where: str, value: str) -> str:
        sealed = self._seal(value.encode("utf-8", "surrogatepass"), b"col:" + where.encode())
        return FIELD_PREFIX + base64.b64encode(sealed).decode("ascii")

    def open_text(self, where: str, value: str) -> str:
        if not _sealed(value):
            return value  # written before a key was configured
        try:
            sealed = binascii.a2b_base64(value[len(FIELD_PREFIX) :])
        except (binascii.Error, ValueError):
            raise IntegrityError(f"sealed column {where.rsplit(':', 1)[-1]} is damaged") from None
        return self._open(sealed, b"col:" + where.encode()).decode("utf-8", "surrogatepass")

    def open_columns(self, row_id: str, row: KeyedRow, names: tuple[str, ...] = ()) -> KeyedRow:
        out = row_dict(row)
        for name in names or SEALED_COLUMNS:
            value = out.get(name)
            if isinstance(value, str) and _sealed(value):
                out[name] = self.open_text(f"{row_id}:{name}", value)
        return out

    def _seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return _HEADER.pack(MAGIC, self.active, nonce) + self._aead[self.active].encrypt(
            nonce, data, aad
        )

    def _open(self, data: bytes, aad: bytes) -> bytes:
        if not data.startswith(MAGIC):
            return data  # written before a key was configured
        if len(data) < _HEADER.size + 16:
            raise IntegrityError("ciphertext truncated")
        _, kid, nonce = _HEADER.unpack_from(data)
        aead = self._aead.get(kid)
        if aead is None:
            raise IntegrityError(f"no data key {kid} to decrypt with")
        try:
            return aead.decrypt(nonce, data[_HEADER.size :], aad)
        except InvalidTag:
            raise IntegrityError("ciphertext failed authentication") from None

    def seal_raw(self, msg_id: str, raw: bytes) -> bytes:
        return self._seal(raw, b"raw:" + msg_id.encode())

    def open_raw(self, msg_id: str, data: bytes) -> bytes:
        return self._open(data, b"raw:" + msg_id.encode())

    def seal_blob(self, sha256: str, data: bytes) -> bytes:
        return self._seal(data, b"blob:" + sha256.encode())

    def open_blob(self, sha256: str, data: bytes) -> bytes:
        return self._open(data, b"blob:" + sha256.encode())

    def seal_envelope(self, msg_id: str, env: dict[str, Any]) -> tuple[str, bytes | None]:
        """Every ``ENCRYPTED_FIELDS`` value that is not None leaves the JSON text and is sealed
        together with the others: one encryption per envelope, raw bytes (no base64)."""
        out: dict[str, Any] = {}
        group: dict[str, Any] = {}
        for name, value in fold_reply(env).items():
            if value is not None and name in _ENCRYPTED:
                group[name] = value
            else:
                out[name] = value
        if not group:
            return jsontext.dumps(out), None
        plain = jsontext.dumps(group).encode("utf-8", "surrogatepass")
        return jsontext.dumps(out), self._seal(plain, _group_aad(msg_id))

    def open_envelope_json(self, msg_id: str, text: str, sealed: bytes | None = None) -> str:
        """The stored JSON text with the sealed fields spliced back in as JSON text, without
        parsing and re-encoding the whole envelope (what was sealed *is* JSON text)."""
        if FIELD_PREFIX in text:  # sealed field by field inside the JSON (older stores)

            def plain(m: re.Match[str]) -> str:
                aad = f"env:{msg_id}:{m.group(1)}".encode()
                value = self._open(binascii.a2b_base64(m.group(2)), aad)
                return f'"{m.group(1)}":' + value.decode("utf-8", "surrogatepass")

            try:
                text = _SEALED_FIELD.sub(plain, text)
            except binascii.Error:
                raise IntegrityError("a sealed envelope field is damaged") from None
        if sealed is None:
            return unfold_reply(text)
        group = self._open(bytes(sealed), _group_aad(msg_id)).decode("utf-8", "surrogatepass")
        group = unfold_reply(group)
        if not group.startswith("{") or not text.endswith("}"):
            raise IntegrityError("the sealed envelope fields are not a JSON object")
        # '{"id":…}' + '{"from":…}' -> '{"id":…,"from":…}'
        return group if text == "{}" else f"{text[:-1]},{group[1:]}"


_ENCRYPTED = frozenset(ENCRYPTED_FIELDS)

_FOLDED_HEAD = '{"replyText":['
"""How a folded envelope (or sealed group) begins; an unfolded one never does, as its replyText
is a string or null."""
_FOLD_MIN = 512
"""Shorter reply texts are stored as they are: the saving would not pay for the bookkeeping."""


def fold_reply(env: dict[str, Any]) -> dict[str, Any]:
    """``env`` to store: when ``replyText`` is ``text`` (past leading white space and up to where
    quotes or a signature began: what ``reply_text`` keeps of an unquoted or top-posted
    message), the two lead and ``replyText`` is ``[start, length]``, where its JSON string's
    content lies inside the text's (a value it never has). Otherwise ``env`` itself."""
    text, reply = env.get("text"), env.get("replyText")
    if not isinstance(text, str) or not isinstance(reply, str) or len(reply) < _FOLD_MIN:
        return env
    lead = len(text) - len(text.lstrip())
    if not text.startswith(reply, lead):
        return env
    # offsets in the JSON text: escapes make them differ from offsets in the str
    start = len(jsontext.dumps(text[:lead])) - 2 if lead else 0
    out: dict[str, Any] = {"replyText": [start, len(jsontext.dumps(reply)) - 2], "text": text}
    for name, value in env.items():
        if name not in out:
            out[name] = value
    return out


def unfold_reply(stored: str) -> str:
    """The JSON text ``fold_reply`` stored, with ``replyText`` a JSON string again: the slice of
    the text's JSON string that the two offsets name (JSON escapes each character on its own,
    so a substring's JSON is a slice of the whole string's JSON)."""
    if not stored.startswith(_FOLDED_HEAD):
        return stored
    close = stored.find("]", len(_FOLDED_HEAD))
    content = close + len(',"text":"') + 1
    if close < 0 or stored[close + 1 : content] != ',"text":"':
        return stored
    try:
        start, length = (int(n) for n in stored[len(_FOLDED_HEAD) : close].split(","))
    except ValueError:
        return stored  # not what fold_reply wrote: handed on as it is
    # '{"replyText":[s,n],"text":"T…",…' -> '{"replyText":"T[s:s+n]","text":"T…",…'
    part = stored[content + start : content + start + length]
    return f'{{"replyText":"{part}"{stored[close + 1 :]}'


def _group_aad(msg_id: str) -> bytes:
    return f"env:{msg_id}:*".encode()


# A field sealed on its own in the store's compact JSON (how envelopes were sealed before the
# ``sealed`` column): base64 needs no escaping, and a quote in message content is always
# escaped, so this matches only what the store wrote.
_SEALED_FIELD = re.compile(
    r'"(' + "|".join(ENCRYPTED_FIELDS) + r')":"' + FIELD_PREFIX + r'([A-Za-z0-9+/=]*)"'
)


def _sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(FIELD_PREFIX)


# ---------------------------------------------------------------------------- data keys


def _wrap(kek: bytes, kid: int, dek: bytes) -> str:
    nonce = os.urandom(12)
    ct = AESGCM(kek).encrypt(nonce, dek, f"dek:{kid}".encode())
    return base64.b64encode(nonce + ct).decode("ascii")


def _unwrap(kek: bytes, kid: int, wrapped: str) -> bytes:
    blob = base64.b64decode(wrapped)
    try:
        return AESGCM(kek).decrypt(blob[:12], blob[12:], f"dek:{kid}".encode())
    except InvalidTag:
        raise EncryptionKeyError(
            "the encryption key does not open this data dir's data keys (wrong key, or the"
            " keys were rotated to another one)"
        ) from None


def data_keys_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "keys" / DATA_KEYS_FILE


def _read_doc(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EncryptionKeyError(f"{path} is unreadable: {exc}") from None
    return doc


def _write_doc(path: Path, doc: dict[str, Any]) -> None:
    """Replace the data keys file atomically (0600)."""
    tmp = path.with_name(path.name + ".tmp")
    write_private_file(tmp, json.dumps(doc, indent=2).encode("ascii") + b"\n")
    os.replace(tmp, path)


def load_codec(data_dir: str | Path, kek: bytes) -> AesGcmCodec:
    """The codec for ``data_dir``: its data keys unwrapped with ``kek`` (created on first use)."""
    path = data_keys_path(data_dir)
    doc = _read_doc(path)
    if doc is None:
        make_private_dirs(path.parent)
        doc = {
            "kek_id": kek_id(kek),
            "active": 1,
            "keys": [
                {"id": 1, "wrapped": _wrap(kek, 1, secrets.token_bytes(32)), "at": time.time()}
            ],
        }
        data = json.dumps(doc, indent=2).encode("ascii") + b"\n"
        try:  # O_EXCL: the front and the workers starting at once agree on one data key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            doc = _read_doc(path) or doc
        else:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    keys = {int(k["id"]): _unwrap(kek, int(k["id"]), k["wrapped"]) for k in doc["keys"]}
    return AesGcmCodec(keys, int(doc["active"]))


def rotate(data_dir: str | Path, old: bytes, new: bytes, *, new_data_key: bool = False) -> int:
    """Re-wrap every data key from ``old`` to ``new`` (and optionally add a new active one);
    returns how many data keys there are. Data is not touched."""
    path = data_keys_path(data_dir)
    doc = _read_doc(path)
    if doc is None:
        raise EncryptionKeyError(f"no data keys in {path.parent}: nothing is encrypted yet")
    keys = [
        (int(k["id"]), _unwrap(old, int(k["id"]), k["wrapped"]), k.get("at")) for k in doc["keys"]
    ]
    if new_data_key:
        kid = max(k for k, _, _ in keys) + 1
        keys.append((kid, secrets.token_bytes(32), time.time()))
        doc["active"] = kid
    doc["keys"] = [{"id": kid, "wrapped": _wrap(new, kid, dek), "at": at} for kid, dek, at in keys]
    doc["kek_id"] = kek_id(new)
    doc["rotated_at"] = time.time()
    _write_doc(path, doc)
    return len(keys)


def codec_for(cfg: Config, env: Mapping[str, str] | None = None) -> NullCodec:
    """The codec ``cfg`` asks for: AES-GCM with the configured key, else no encryption."""
    environ = os.environ if env is None else env
    if cfg.store.encryption_key_file:
        kek = read_kek_file(cfg.store.encryption_key_file)
    elif environ.get(ENV_KEY):
        kek = parse_kek(environ[ENV_KEY])
    else:
        return NULL_CODEC
    return load_codec(cfg.store.data_dir, kek)


def codec_of(store: object) -> NullCodec:
    """The codec a store was built with (the no-op one for a backend without encryption)."""
    codec = getattr(store, "codec", NULL_CODEC)
    return codec if isinstance(codec, NullCodec) else NULL_CODEC
