"""`qlspec new`: a new AI application folder from the cookiecutter template in templates/app.

The template's choices of network, board and quantisation preset are not kept by hand: they are the
fragments the spec library holds (``specs/networks/*.yaml``, ``specs/boards/*.yaml``,
``specs/quant/*-w8a8.yaml``), each network fragment naming an architecture of
`qlspec.nets.registry`. The template is rendered from a copy whose ``cookiecutter.json`` lists them.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from cookiecutter.exceptions import CookiecutterException
from cookiecutter.main import cookiecutter

from qlspec.errors import QlspecError
from qlspec.resources import shipped

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
TEMPLATE = shipped("templates") / "app"
LIBRARY = shipped("specs")


def library_choices() -> dict[str, list[str]]:
    """The template's choice lists from the spec library (the template's own default first)."""

    def names(folder: str, suffix: str = "") -> list[str]:
        return sorted(p.name[: -len(suffix + ".yaml")] for p in (LIBRARY / folder).glob(f"*{suffix}.yaml"))

    return {"network": names("networks"), "board": names("boards"), "quantisation": names("quant", "-w8a8")}


def _ordered(default: list[str], found: list[str]) -> list[str]:
    return [c for c in default if c in found] + [c for c in found if c not in default]


def scaffold(pairs: list[str], *, no_input: bool, output_dir: Path) -> Path:
    """Render the template with `key=value` pairs; return the new folder. Existing folders are kept."""
    context = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QlspecError(f"expected key=value, got '{pair}'", where="qlspec new")
        context[key] = value
    allowed = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    for key, found in library_choices().items():
        allowed[key] = _ordered(allowed[key], found)
    unknown = sorted(set(context) - set(allowed))
    if unknown:
        raise QlspecError(
            f"unknown template value(s) {', '.join(unknown)} (allowed: {', '.join(k for k in allowed if not k.startswith('_'))})",
            where="qlspec new",
        )
    for key, value in context.items():
        if isinstance(allowed[key], list) and value not in allowed[key]:
            raise QlspecError(f"{key} '{value}' is not in the spec library (choose from: {', '.join(allowed[key])})", where="qlspec new")
    name = context.get("name", allowed["name"])
    if not re.fullmatch(NAME_PATTERN, name):
        raise QlspecError(f"name '{name}' must be lower-case letters, digits, '.', '_' or '-' (pattern {NAME_PATTERN})", where="qlspec new")
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qlspec-template-") as tmp:
        template = Path(tmp) / "app"
        shutil.copytree(TEMPLATE, template)
        (template / "cookiecutter.json").write_text(json.dumps(allowed, indent=2) + "\n")
        try:
            folder = cookiecutter(
                str(template), no_input=no_input, extra_context=context, output_dir=str(output_dir), overwrite_if_exists=False
            )
        except CookiecutterException as e:
            raise QlspecError(str(e).splitlines()[0] if str(e) else e.__class__.__name__, where="qlspec new") from None
    from qlspec import atomic
    from qlspec.spec.schema import schema_text

    atomic.write_text(Path(folder) / "app.schema.json", schema_text())  # editors complete and check app.yaml with it
    return Path(folder)
