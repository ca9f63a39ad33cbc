"""Backend-neutral row mappings of the classifier area that both store backends call.

Why: labels and model versions are the same rows on SQLite and PostgreSQL (tags and summary
stored as JSON); one mapping keeps the two backends alike.
"""

from __future__ import annotations

import json

from mailgate.store.models import LabelRecord, ModelRecord
from mailgate.store.rows import Row

MODEL_COLS = "version, tenant, created_at, active, activated_at, summary"
"""The ``models`` columns of a listing; ``data`` (the model itself) is read only on demand."""


def label_record(r: Row) -> LabelRecord:
    """A ``labels`` row."""
    return LabelRecord(
        msg_id=r["msg_id"],
        tenant=r["tenant"],
        queue=r["queue"],
        tags=tuple(json.loads(r["tags"])),
        labelled_by=r["labelled_by"],
        labelled_at=r["labelled_at"],
    )


def model_record(r: Row, *, data: bool = False) -> ModelRecord:
    """A ``MODEL_COLS`` row, with ``data`` when it was selected too."""
    return ModelRecord(
        version=r["version"],
        tenant=r["tenant"],
        created_at=r["created_at"],
        active=bool(r["active"]),
        activated_at=r["activated_at"],
        summary=json.loads(r["summary"]),
        data=r["data"] if data else None,
    )
