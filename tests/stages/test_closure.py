"""Stage keys from import closures: what a stage imports is in its key, nothing else is."""

from __future__ import annotations

from pathlib import Path

import pytest

from qlspec.stages.closure import import_closure
from qlspec.stages.engine import PACKAGE_DIR, code_digest
from qlspec.stages.registry import STAGES


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def pkg(tmp_path):
    """A package `qlspec` of the test's own, with every way of importing that the real one uses."""
    return write(
        tmp_path / "qlspec",
        {
            "__init__.py": "",
            "stages/__init__.py": "",
            "stages/one.py": (
                "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
                "from qlspec.sub import (\n    helper,  # a comment\n    other as renamed,\n)\nimport qlspec.top\n"
                "if TYPE_CHECKING:\n    from qlspec import typed\n"
                "def run(ctx):\n    from .local import x  # lazy, relative\n    return x\n"
            ),
            "stages/local.py": "from ..deep.leaf import y\nx = 1\n",
            "sub/__init__.py": "",
            "sub/helper.py": "REGISTRY = {'a': 'qlspec.registered:Thing'}\n",
            "sub/other.py": "import numpy as np, qlspec.viacomma\n",
            "top.py": "",
            "typed.py": "",
            "registered.py": "",
            "viacomma.py": "",
            "deep/__init__.py": "",
            "deep/leaf.py": "from pathlib import Path\nSOURCE = Path(__file__).with_name('kernel.c')\nGONE = Path(__file__).with_name('gone.c')\ny = 2\n",
            "deep/kernel.c": "int f(void) { return 1; }\n",
            "deep/other.c": "int g(void) { return 2; }\n",
            "unused.py": "import qlspec.stages.one\n",  # imports the stage; the stage does not import it
        },
    )


def test_closure_follows_every_kind_of_import_and_nothing_else(pkg):
    got = {str(p.relative_to(pkg)) for p in import_closure("qlspec.stages.one", pkg)}
    assert got == {
        "__init__.py",
        "stages/__init__.py",
        "stages/one.py",
        "stages/local.py",
        "sub/__init__.py",
        "sub/helper.py",
        "sub/other.py",
        "top.py",
        "typed.py",
        "registered.py",
        "viacomma.py",
        "deep/__init__.py",
        "deep/leaf.py",
        "deep/kernel.c",  # loaded by deep/leaf.py; other.c is not, and gone.c does not exist
    }


def test_closure_sees_an_edit_that_adds_an_import(pkg):
    before = set(import_closure("qlspec.stages.one", pkg))
    (pkg / "deep" / "leaf.py").write_text("import qlspec.unused\ny = 3\n")
    assert set(import_closure("qlspec.stages.one", pkg)) - before == {pkg / "unused.py"}


def test_real_stage_keys_cover_what_they_import():
    convert = {str(p.relative_to(PACKAGE_DIR)) for p in import_closure("qlspec.stages.convert", PACKAGE_DIR)}
    # what the issue found missing from the old hand list, and what it listed but never imports
    assert {"stages/convert.py", "evaluation.py", "report.py", "onnx_import/__init__.py", "graph/passes/__init__.py"} <= convert
    assert "cli.py" not in convert and "deploy/ssh.py" not in convert and "codegen/project.py" not in convert
    data = {str(p.relative_to(PACKAGE_DIR)) for p in import_closure("qlspec.stages.data", PACKAGE_DIR)}
    assert "data/synthetic.py" in data and not any(p.startswith(("nets/", "quant/", "training/")) for p in data)


@pytest.fixture
def package_copy(monkeypatch, tmp_path) -> Path:
    """A copy of the real package that the stage keys are computed from."""
    import shutil

    import qlspec.stages.engine as engine

    copy = tmp_path / "qlspec"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(engine, "PACKAGE_DIR", copy)
    return copy


def changed_keys(path: Path, comment: str) -> set[str]:
    """The stages whose code digest an appended `comment` line in `path` changes."""
    before = {s.name: code_digest(s) for s in STAGES}
    with path.open("a") as f:
        f.write(f"\n{comment}\n")
    return {s.name for s in STAGES if code_digest(s) != before[s.name]}


def test_editing_a_module_changes_exactly_the_keys_of_the_stages_that_import_it(package_copy):
    """Copy the package, touch one module, compare every stage's code digest."""
    assert changed_keys(package_copy / "deploy" / "board.py", "# an edit") == {"deploy"}
    assert changed_keys(package_copy / "spec" / "models.py", "# an edit") == {s.name for s in STAGES}  # every stage reads the spec


def test_editing_a_kernel_changes_the_keys_of_the_stages_that_load_it(package_copy):
    """The fused PACT kernel is C beside its module: an edit reruns what imports qlspec.quant.pact_native."""
    native = package_copy / "quant" / "pact_native.py"
    loaders = {s.name for s in STAGES if native in import_closure(s.run.partition(":")[0], package_copy)}
    assert "quantise" in loaders and "data" not in loaders
    assert changed_keys(package_copy / "quant" / "pact_kernel.c", "/* an edit */") == loaders


def test_build_key_covers_the_cpp_it_generates_from():
    build = next(s for s in STAGES if s.name == "build")
    assert build.assets == ("backends/armcl", "backends/app")
    assert code_digest(build) != code_digest(type(build)(**{**build.__dict__, "assets": ()}))
