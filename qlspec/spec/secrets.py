"""Secret spec fields (passwords, passphrases): found from the models, never printed, never digested.

A field is secret when its model marks it ``json_schema_extra={"secret": True}``. Secrets change
how the board is reached, never a result, so they are not part of any stage key; `plan`, `diff`,
stage records, reports and validation errors show at most that a secret is set or changed.
"""

from __future__ import annotations

from functools import cache
from typing import Any

SHOWN = "<secret>"


@cache
def walk_fields() -> dict[str, dict[str, Any]]:
    """Dotted path (by alias) -> the ``json_schema_extra`` markers of every field of the models that
    has any (``secret``, ``effect``: `qlspec.spec.effects`)."""
    from qlspec.spec.models import AppSpec

    found: dict[str, dict[str, Any]] = {}

    def walk(model: Any, prefix: str) -> None:
        for name, info in model.model_fields.items():
            key = info.alias or name
            if isinstance(info.json_schema_extra, dict):
                found[prefix + key] = info.json_schema_extra
            ann = info.annotation
            for sub in getattr(ann, "__args__", (ann,)):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    walk(sub, prefix + key + ".")

    walk(AppSpec, "")
    return found


@cache
def secret_paths() -> frozenset[str]:
    """Dotted paths of spec fields marked secret in the models."""
    return frozenset(path for path, extra in walk_fields().items() if extra.get("secret"))


def is_secret(dotted: str) -> bool:
    """Whether this dotted path is a secret field, or lies inside one."""
    return any(dotted == s or dotted.startswith(s + ".") for s in secret_paths())


def mask(value: Any) -> Any:
    """What may be shown of a secret: that it is set (no digest: a short digest confirms a guess)."""
    return None if value is None else SHOWN
