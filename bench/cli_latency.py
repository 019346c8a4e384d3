"""How long the review commands take, as a user starts them, against the interpreter's own start-up
and an import of torch measured in the same run (what `plan` cost while it imported torch):

    python bench/cli_latency.py [--spec examples/3ddfa-synthetic/app.yaml] [--applied DIR] [--repeats 7]

Each figure is the median wall time of a fresh `python -m qlspec ...` process (no pyenv or venv shim
in front of it). `--applied DIR` also times a no-op `qlspec apply` in DIR, whose spec `app.yaml` has
been applied there already.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from timing import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=ROOT / "examples" / "3ddfa-synthetic" / "app.yaml")
    ap.add_argument("--applied", type=Path, default=None, help="a folder whose app.yaml is applied (build/ beside it)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    spec = str(args.spec.resolve())

    def timed(*argv: str, cwd: Path | None = None) -> float:
        def run() -> None:
            subprocess.run([sys.executable, *argv], check=True, capture_output=True, cwd=cwd)

        return median_time(run, args.repeats)

    start = timed("-c", "pass")
    torch = timed("-c", "import torch")
    rows = [
        ("python -c pass (interpreter start-up)", start),
        ("python -c 'import torch'", torch),
        ("qlspec plan", timed("-m", "qlspec", "plan", spec)),
        ("qlspec validate", timed("-m", "qlspec", "validate", spec)),
        ("qlspec diff", timed("-m", "qlspec", "diff", spec, spec)),
    ]
    if args.applied:
        rows.append(("qlspec apply (no-op)", timed("-m", "qlspec", "apply", "app.yaml", "--no-progress", cwd=args.applied)))
    print(f"{'command':40} {'median s':>9} {'x start-up':>11} {'x import torch':>15}")
    for name, seconds in rows:
        print(f"{name:40} {seconds:9.3f} {seconds / start:11.1f} {seconds / torch:15.2f}")


if __name__ == "__main__":
    main()
