"""What changing a spec field changes: a result, the deployment, only access, only speed, or only names.

Each field of the models declares its effect with ``json_schema_extra={"effect": ...}`` (the
constants below); a field without one inherits its section's, and a top-level section without one
is ``result``. Stage keys digest only the fields in `KEYED` effects, so `plan`, `apply` and `diff`
agree that changing the thread count reruns nothing while changing the learning rate reruns
training and everything after it.

Secrets (`qlspec.spec.secrets`) are never keyed, whatever their section.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from qlspec.spec.secrets import is_secret, walk_fields

Effect = Literal["result", "deployment", "access", "speed", "naming"]

MEANING: dict[Effect, str] = {
    "result": "changes what the stages that read it compute or build (in their keys)",
    "deployment": "changes what is installed on the board, where, and what runs there (in the deploy stage's key)",
    "access": "changes only how the board is reached: credentials, host keys, time-outs (in no key)",
    "speed": "changes only how fast: threads, repeats (in no key)",
    "naming": "changes only names and descriptions; `name` picks the build folder build/<name> (in no key)",
}
KEYED: frozenset[Effect] = frozenset({"result", "deployment"})

DEPLOYMENT: dict[str, Any] = {"effect": "deployment"}
ACCESS: dict[str, Any] = {"effect": "access"}
SPEED: dict[str, Any] = {"effect": "speed"}
NAMING: dict[str, Any] = {"effect": "naming"}


@cache
def declared_effects() -> dict[str, Effect]:
    """Dotted path -> effect of every field that declares one in the models."""
    return {path: extra["effect"] for path, extra in walk_fields().items() if "effect" in extra}


def effect_of(path: str) -> Effect:
    """The effect of the field at a dotted path: its own declaration, else its nearest section's,
    else ``result``."""
    declared = declared_effects()
    parts = path.split(".")
    for depth in range(len(parts), 0, -1):
        found = declared.get(".".join(parts[:depth]))
        if found:
            return found
    return "result"


def keyed(path: str) -> bool:
    """Whether a field is part of the keys of the stages that read it."""
    return effect_of(path) in KEYED and not is_secret(path)
