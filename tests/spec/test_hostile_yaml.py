"""Hostile spec files: every one is a valid spec or one located `SpecError`, fast, never a traceback.

The corpus holds each failure class found by hand (tags, merge keys, control characters, deep
nesting, long integers, an alias bomb, an exponential `extends` diamond, `extends` outside the spec's
tree, NaN and infinities, huge seeds); the property tests generate documents from the same pieces.
"""

from __future__ import annotations

import time

import pytest
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.errors import SpecError
from qlspec.spec.load import MAX_DEPTH, load_spec

CORPUS = {
    "custom tag on extends": "name: x\nextends: !foo [quant/pact-w8a8.yaml]\n",
    "python object tag": "name: x\ntraining: !!python/object/apply:os.system ['echo owned']\n",
    "omap": "name: x\ntraining: !!omap [{epochs: 2}]\n",
    "set": "name: x\ntraining: !!set {epochs, seed}\n",
    "binary": "name: x\ndescription: !!binary aGVsbG8=\n",
    "date": "name: x\ndescription: 2020-01-01\n",
    "merge key": "name: x\nbase: &b {epochs: 2}\ntraining:\n  <<: *b\n  seed: 1\n",
    "control character": 'name: x\ndescription: "a\x07b"\n',
    "nul byte": "name: x\x00\n",
    "deep nesting": "name: x\ntraining: " + "[" * 300 + "]" * 300 + "\n",
    "deep mapping": "name: x\ndata: " + "{a: " * 100 + "1" + "}" * 100 + "\n",
    "5000-digit integer": "name: x\ntraining: {seed: " + "9" * 5000 + "}\n",
    "int beyond int64": f"name: x\ntraining: {{seed: {2**70}}}\n",
    "seed beyond 32 bits": "name: x\ntraining: {seed: 20000000000000}\n",
    "nan normalise": "name: x\npreprocess: {normalise: {mean: .nan, std: 128}}\n",
    "inf clip": "name: x\nquantisation: {activations: {clip: .inf}}\n",
    "nan loss weight": "name: x\ntraining: {loss: {param_weight: .nan}}\n",
    "alias bomb": "name: x\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
    "extends absolute path": "name: x\nextends: [/etc/passwd]\n",
    "extends up the tree": "name: x\nextends: [../outside.yaml]\n",
    "extends a number": "name: x\nextends: [3]\n",
    "non-string key": "name: x\n1: 2\n",
    "top-level list": "- name\n",
    "pretrained of an unknown user": "name: x\nnetwork: {pretrained: '~nosuchuser/x'}\n",
    "pretrained name too long": "name: x\nnetwork: {pretrained: " + "a" * 5000 + "}\n",
    "pretrained with a NUL byte": 'name: x\nnetwork: {pretrained: "a\\0b"}\n',
    "param_stats a number": "name: x\nnetwork: {param_stats: 3}\n",
    "param_stats a list": "name: x\nnetwork: {param_stats: [1, 2]}\n",
    "param_stats with NaN": "name: x\nnetwork: {param_stats: {mean: [.nan], std: [-1]}}\n",
    "param_stats a long list": "name: x\nnetwork: {param_stats: {mean: [" + "1, " * 5000 + "1], std: []}}\n",
    "param_stats of an unknown user": "name: x\nnetwork: {param_stats: '~nosuchuser/x.pkl'}\n",
    "epochs 0 without a checkpoint": "name: x\ntraining: {epochs: 0}\n",
}


def check(path, seconds: float = 5.0) -> str:
    """Load `path`: a valid spec ('ok') or one located SpecError; in time; nothing else escapes."""
    started = time.perf_counter()
    try:
        load_spec(path)
        result = "ok"
    except SpecError as e:
        text = str(e)
        assert text and "Traceback" not in text
        result = text
    assert time.perf_counter() - started < seconds, f"took {time.perf_counter() - started:.1f} s"
    return result


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_corpus_case_is_refused_with_a_located_line(tmp_path, case):
    (tmp_path / "outside.yaml").write_text("training: {epochs: 2}\n")
    folder = tmp_path / "app"
    folder.mkdir()
    path = folder / "app.yaml"
    path.write_bytes(CORPUS[case].encode())
    result = check(path)
    assert result != "ok", f"{case}: accepted"
    assert "app.yaml" in result.splitlines()[0], result


def test_extends_diamond_is_read_once_per_file(tmp_path):
    """Each level extends the level below twice: 2**24 paths, 25 files."""
    (tmp_path / "f0.yaml").write_text("training: {epochs: 2}\n")
    for i in range(1, 15):
        (tmp_path / f"f{i}.yaml").write_text(f"extends: [f{i - 1}.yaml, f{i - 1}.yaml]\n")
    (tmp_path / "app.yaml").write_text("name: x\nextends: [f14.yaml]\n")
    assert check(tmp_path / "app.yaml", seconds=5) == "ok"
    assert load_spec(tmp_path / "app.yaml").spec.training.epochs == 2


def test_extends_chain_deeper_than_the_limit_is_refused(tmp_path):
    (tmp_path / "f0.yaml").write_text("training: {epochs: 2}\n")
    for i in range(1, 40):
        (tmp_path / f"f{i}.yaml").write_text(f"extends: [f{i - 1}.yaml]\n")
    (tmp_path / "app.yaml").write_text("name: x\nextends: [f39.yaml]\n")
    assert "levels deep" in check(tmp_path / "app.yaml")


def test_extends_through_a_symlink_out_of_the_tree_is_refused(tmp_path):
    (tmp_path / "secret.yaml").write_text("training: {epochs: 2}\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    (app / "app.yaml").write_text("name: x\nextends: [link.yaml]\n")
    assert "outside the spec's folder" in check(app / "app.yaml")


def test_nesting_within_the_limit_still_loads_as_an_error_of_the_model_not_of_yaml(tmp_path):
    (tmp_path / "app.yaml").write_text("name: x\ndescription: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n")
    result = check(tmp_path / "app.yaml")
    assert "description" in result  # the model says it is not a string


# -- generated documents -------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "name",
        "training",
        "epochs",
        "seed",
        "data",
        "kind",
        "extends",
        "quantisation",
        "network",
        "pretrained",
        "param_stats",
        "mean",
        "std",
        "device",
        "precision",
        "compile",
        "distributed",
        "processes",
        "nodes",
        "backend",
        "master_port",
        "loader",
        "workers",
        "pin_memory",
        "<<",
        "a",
        "1",
    ]
)
SCALARS = st.one_of(
    st.sampled_from(
        [
            "x",
            "1e999",
            ".nan",
            "-.inf",
            "~",
            "true",
            "2020-01-01",
            "0x10",
            "9" * 40,
            "'\x07'",
            '"\\x00"',
            "!foo bar",
            "!!python/name:os.system",
            "*a",
            "&a 1",
            "synthetic",
            "3",
            "-1",
            "quant/pact-w8a8.yaml",
            "../x.yaml",
            "/etc/hosts",
            "~nosuchuser/x",
            "a" * 3000,
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def documents(depth: int):
    leaf = SCALARS
    if depth == 0:
        return leaf
    inner = documents(depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(KEYS, inner, max_size=4).map(lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"),
        st.tuples(st.sampled_from(["!foo ", "!!omap ", "!!set ", "&a ", ""]), inner).map("".join),
    )


@settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.dictionaries(KEYS, documents(3), max_size=5))
def test_generated_documents_never_escape_as_tracebacks(tmp_path, body):
    text = "name: gen\n" + "".join(f"{k}: {v}\n" for k, v in body.items() if k != "name")
    path = tmp_path / "app.yaml"
    path.write_text(text, encoding="utf-8")
    check(path)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_tracebacks(tmp_path, data):
    path = tmp_path / "app.yaml"
    path.write_bytes(data)
    check(path)
