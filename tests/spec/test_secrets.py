"""Passwords and passphrases never leave the spec: not in validation errors, `diff`, `plan`, stage keys
or records. `diff` shows only that a secret changed (no digest: a short unsalted one confirms a guess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.errors import SpecError
from qlspec.pipeline import open_pipeline
from qlspec.spec.diff import spec_diff
from qlspec.spec.load import load_spec
from qlspec.spec.secrets import secret_paths
from qlspec.stages.registry import STAGES

BASE = "apiVersion: qlspec/v1\nname: secretive\n"


def qlspec(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qlspec", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_the_secret_fields_are_the_password_and_the_passphrase():
    assert secret_paths() == {"deploy.password", "deploy.passphrase"}


def test_a_bad_password_is_not_echoed(tmp_path):
    (tmp_path / "app.yaml").write_text(BASE + "deploy:\n  password: 8675309\n")
    r = qlspec("validate", "app.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "deploy.password" in r.stderr and "8675309" not in r.stderr


def test_a_duplicated_password_key_shows_neither_value(tmp_path):
    (tmp_path / "app.yaml").write_text(BASE + "deploy:\n  password: hunter2\n  password: hunter3\n")
    r = qlspec("validate", "app.yaml", cwd=tmp_path)
    assert r.returncode == 2 and 'duplicate key "password"' in r.stderr
    assert "hunter2" not in r.stderr and "hunter3" not in r.stderr


def test_diff_says_a_secret_changed_and_nothing_more(tmp_path):
    (tmp_path / "a.yaml").write_text(BASE + "deploy:\n  password: hunter2\n")
    (tmp_path / "b.yaml").write_text(BASE + "deploy:\n  password: hunter4\n")
    r = qlspec("diff", "a.yaml", "b.yaml", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == 'deploy.password: "<secret>" -> "<secret>"   invalidates: none (access only)'
    assert "sha256" not in r.stdout and "hunter" not in r.stdout
    data = json.loads(qlspec("diff", "a.yaml", "b.yaml", "--json", cwd=tmp_path).stdout)
    assert data == [{"path": "deploy.password", "old": "<secret>", "new": "<secret>", "stages": [], "effect": "access"}]


secret_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=6, max_size=40).map(lambda s: "Zq" + s)
bad_value = st.one_of(
    st.integers(min_value=10**5), st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: abs(f) > 1e3), st.booleans()
)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["password", "passphrase"]), old=secret_text, new=secret_text, bad=bad_value)
def test_generated_secrets_never_appear_in_errors_diff_plan_or_keys(tmp_path, field, old, new, bad):
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text(BASE + f"deploy:\n  enabled: true\n  {field}: {json.dumps(old)}\n")
    b.write_text(BASE + f"deploy:\n  enabled: true\n  {field}: {json.dumps(new)}\n")
    c.write_text(BASE + f"deploy:\n  {field}: {json.dumps(old)}\n  {field}: {bad}\n")
    shown: list[str] = []
    for change in spec_diff(load_spec(a), load_spec(b), STAGES):
        shown.append(repr(change))
        assert change.stages == ()
    for spec in (a, b):
        pipe = open_pipeline(spec, tmp_path / "build")
        for status in pipe.plan():
            shown.append(repr(status.reasons) + json.dumps(status.basis))
    errors = []
    try:
        load_spec(c)
    except SpecError as e:
        errors.append(str(e))
    c.write_text(BASE + f"deploy:\n  {field}: {bad}\n")
    try:
        load_spec(c)
        raise AssertionError("a number is not a password")
    except SpecError as e:
        errors.append(str(e))
    text = "\n".join(shown + errors)
    for secret in (old, new, json.dumps(old)):
        assert secret not in text
    assert all(str(bad) not in e.split(":", 3)[-1] for e in errors)
