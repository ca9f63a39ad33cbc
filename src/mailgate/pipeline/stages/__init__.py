"""The stage registry: built-in stages by name; the order comes from ``PipelineConfig.stages``.

Every module in this package that defines a module-level ``STAGE`` is a built-in stage; it is
found by `builtin_stages` (so adding ``stages/respond.py`` with a ``STAGE`` registers it, no
edit here). Plugins and tests add their own with `register_stage` (a ``mailgate.stages`` entry
point can feed the same dict later, as Datasette's ``DEFAULT_PLUGINS`` does).
"""

from __future__ import annotations

import importlib
import pkgutil

from mailgate.pipeline.base import Stage

_EXTRA: dict[str, Stage] = {}
_BUILTIN: dict[str, Stage] | None = None


def builtin_stages() -> dict[str, Stage]:
    """name -> stage for every ``STAGE`` defined by a module of this package."""
    global _BUILTIN
    if _BUILTIN is None:
        found: dict[str, Stage] = {}
        for info in pkgutil.iter_modules(__path__):
            module = importlib.import_module(f"{__name__}.{info.name}")
            stage = getattr(module, "STAGE", None)
            if stage is not None:
                found[stage.name] = stage
        _BUILTIN = found
    return _BUILTIN


def register_stage(stage: Stage) -> None:
    """Add (or replace) a stage by its name."""
    _EXTRA[stage.name] = stage


def unregister_stage(name: str) -> None:
    _EXTRA.pop(name, None)


def registry() -> dict[str, Stage]:
    """Every known stage: built-ins, then registered ones (which may replace a built-in)."""
    return {**builtin_stages(), **_EXTRA}
