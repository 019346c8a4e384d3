"""`qlspec new`: a new AI application folder from the cookiecutter template in templates/app."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cookiecutter.exceptions import CookiecutterException
from cookiecutter.main import cookiecutter

from qlspec.errors import QlspecError

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "app"


def scaffold(pairs: list[str], *, no_input: bool, output_dir: Path) -> Path:
    """Render the template with `key=value` pairs; return the new folder. Existing folders are kept."""
    context = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QlspecError(f"expected key=value, got '{pair}'", where="qlspec new")
        context[key] = value
    allowed = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    unknown = sorted(set(context) - set(allowed))
    if unknown:
        raise QlspecError(f"unknown template value(s) {', '.join(unknown)} (allowed: {', '.join(k for k in allowed if not k.startswith('_'))})", where="qlspec new")
    name = context.get("name", allowed["name"])
    if not re.fullmatch(NAME_PATTERN, name):
        raise QlspecError(f"name '{name}' must be lower-case letters, digits, '.', '_' or '-' (pattern {NAME_PATTERN})", where="qlspec new")
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        folder = cookiecutter(str(TEMPLATE), no_input=no_input, extra_context=context, output_dir=str(output_dir), overwrite_if_exists=False)
    except CookiecutterException as e:
        raise QlspecError(str(e).splitlines()[0] if str(e) else e.__class__.__name__, where="qlspec new") from None
    return Path(folder)
