"""The wheel is the product: built from the repository's files, installed into a fresh environment,
it carries the spec library, the app template and the C++ backends, and works away from the checkout."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {"specs": "qlspec/specs", "templates": "qlspec/templates", "backends": "qlspec/backends"}
KEYS = (
    "import json, sys; from qlspec.pipeline import open_pipeline; "
    "print(json.dumps({s.stage.name: s.key for s in open_pipeline(sys.argv[1]).plan()}))"
)


def repository_files() -> list[str]:
    """What a clean clone holds (plus files not yet committed, but never ignored ones)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def declared_distributions() -> set[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_normal(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_distribution_is_a_declared_dependency():
    """Each third-party package the code imports (anywhere, lazily too) is in [project.dependencies]."""
    imported: set[str] = set()
    for path in (REPO / "qlspec").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"qlspec", "__future__"}
    owners = importlib.metadata.packages_distributions()
    missing = {m: owners.get(m) for m in third_party if not {_normal(d) for d in owners.get(m, [])} & declared_distributions()}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for f in repository_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"), str(src)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (built,) = (root / "dist").glob("qlspec-*.whl")
    return root, built


def test_the_wheel_holds_the_code_and_the_three_shipped_folders(wheel):
    _, built = wheel
    names = set(zipfile.ZipFile(built).namelist())
    expected = set()
    for f in repository_files():
        top, _, rest = f.partition("/")
        if top == "qlspec" and (f.endswith(".py") or f.endswith("py.typed")):
            expected.add(f)
        elif top in SHIPPED:
            expected.add(f"{SHIPPED[top]}/{rest}")
    assert expected - names == set(), "missing from the wheel"
    assert not {n for n in names if "__pycache__" in n or n.endswith(".pyc")}
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = {
        _normal(re.split(r"[<>=!~;\[ ]", line[len("Requires-Dist: ") :], maxsplit=1)[0])
        for line in zipfile.ZipFile(built).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    }
    assert requires == declared_distributions()


@pytest.mark.slow
def test_installed_wheel_scaffolds_validates_and_plans_away_from_the_checkout(wheel, tmp_path):
    root, built = wheel
    venv = root / "venv"
    if not venv.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
        r = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", "--no-index", str(built)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    python, qlspec = venv / "bin" / "python", venv / "bin" / "qlspec"
    where = subprocess.run(
        [str(python), "-c", "import qlspec.resources as r; print(r.__file__); print(r.shipped('backends'))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel's files, not the checkout's

    def run(*args):
        r = subprocess.run([str(qlspec), *map(str, args)], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    run("new", "--no-input", "name=wheel-app", "quantisation=ptq")
    app = tmp_path / "wheel-app" / "app.yaml"
    assert "valid qlspec/v1 spec for 'wheel-app'" in run("validate", app)
    assert "data      will run  (never run)" in run("plan", app)
    # stage keys name files as in the repository: the installed wheel and the checkout agree
    keys = [
        json.loads(subprocess.run([exe, "-c", KEYS, str(app)], capture_output=True, text=True, cwd=tmp_path, check=True).stdout)
        for exe in (str(python), sys.executable)
    ]
    assert keys[0] == keys[1] and keys[0]["build"]


def test_installed_versions_are_the_pinned_ones():
    """scripts/install.sh installs with -c constraints.txt: what runs here is what was tested."""
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    drift = {
        name: (pin, importlib.metadata.version(name)) for name, pin in pins.items() if importlib.metadata.version(name).split("+")[0] != pin
    }
    assert not drift, f"installed versions differ from constraints.txt (re-pin with scripts/pin_versions.py): {drift}"
    assert {_normal(d) for d in declared_distributions()} <= set(pins)
