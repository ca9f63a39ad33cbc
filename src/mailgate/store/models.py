"""Records and ports of the classifier area: the team's labels and the stored model versions.

A label says where one stored message belongs (``messages label``, ``POST
/v1/messages/{id}/label``: an agent's correction is a label); the latest label of a message
wins. A model version is the JSON text of `mailgate.classifier.model` (data, never code)
with a summary of how it was trained; one version per tenant is active. The pipeline sees
only `ModelSource` (which version is active, and its text), so every worker process picks up
an activation by asking, without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class LabelRecord:
    msg_id: str
    tenant: str
    queue: str
    tags: tuple[str, ...]
    labelled_by: str
    labelled_at: float


@dataclass(frozen=True)
class ModelRecord:
    version: int
    tenant: str
    created_at: float
    active: bool
    activated_at: float | None
    summary: dict[str, Any]
    data: str | None = None
    """The model's JSON text (only from `ModelStore.get_model`)."""


class ModelSource(Protocol):
    """What the ``classify`` stage reads: cheap to poll, the text only on a change."""

    async def active_models(self) -> dict[str, int]:
        """tenant -> active model version."""
        ...

    async def model_data(self, version: int) -> str:
        """The JSON text of one model version (raises ``NotFound``)."""
        ...


@runtime_checkable
class ModelStore(ModelSource, Protocol):
    """Labels and model versions (the CLI and the API write them)."""

    async def add_label(
        self, msg_id: str, queue: str, tags: tuple[str, ...], *, by: str
    ) -> LabelRecord:
        """Label a stored message (its tenant is the message's); replaces an earlier label."""
        ...

    async def list_labels(self, tenant: str | None = None) -> list[LabelRecord]: ...

    async def save_model(self, tenant: str, data: str, summary: dict[str, Any]) -> int:
        """Store a new, inactive version; returns its number."""
        ...

    async def list_models(self, tenant: str | None = None) -> list[ModelRecord]: ...

    async def get_model(self, version: int) -> ModelRecord: ...

    async def activate_model(self, version: int) -> ModelRecord:
        """Make ``version`` its tenant's active model (the previous one stays stored)."""
        ...

    async def rollback_model(self, tenant: str) -> ModelRecord | None:
        """Activate the newest earlier version that was once active; None: model switched off."""
        ...
