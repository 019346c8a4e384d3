"""Write constraints.txt: the exact versions of qlspec's dependencies (runtime and test, transitively)
as installed here, where the whole suite passed. scripts/install.sh installs with ``-c constraints.txt``.

    python3 scripts/pin_versions.py      # after a green suite, to move the pins forward
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def closure(name: str, extras: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed distribution -> version for `name`[extras] and everything it requires on this platform."""
    pins: dict[str, str] = {}
    todo = [(name, extras)]
    while todo:
        dist_name, want = todo.pop()
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            continue  # an optional requirement for another platform or Python
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in pins and not want:
            continue
        pins[key] = dist.version.split("+")[0]  # 2.13.0+cpu: ==2.13.0 matches it, and any build of 2.13.0
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            extra = re.search(r"""extra\s*==\s*["']([^"']+)""", marker)
            if extra and extra.group(1) not in want:
                continue
            if marker.strip() and not extra and not _applies(marker):
                continue
            child = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?", spec)
            todo.append((child.group(1), tuple(e.strip() for e in (child.group(2) or "[]")[1:-1].split(",") if e.strip())))
    pins.pop("qlspec", None)
    return pins


def _applies(marker: str) -> bool:
    from packaging.markers import Marker

    return Marker(marker).evaluate({"extra": ""})


if __name__ == "__main__":
    pins = closure("qlspec", ("test",))
    lines = [
        "# The versions the whole suite passed with (python3 scripts/pin_versions.py writes this file).",
        "# scripts/install.sh installs with -c constraints.txt; pyproject.toml keeps the ranges qlspec supports.",
    ]
    (ROOT / "constraints.txt").write_text("\n".join(lines + [f"{k}=={v}" for k, v in sorted(pins.items())]) + "\n")
    print(f"constraints.txt: {len(pins)} pins")
