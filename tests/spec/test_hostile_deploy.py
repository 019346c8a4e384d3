"""Generated hostile values for the fields this release reads (the spec's `deploy` section, the
target backend, `qlspec run --roi`): a spec loads or fails with located errors, never a traceback."""

from __future__ import annotations

import json
import re

from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.errors import QlspecError, SpecError
from qlspec.photos_run import parse_roi
from qlspec.spec.load import load_spec
from qlspec.spec.models import Deploy

FIELDS = sorted(Deploy.model_fields) + ["no_such_field"]
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
LOCATED = re.compile(r"^app\.yaml:\d+:\d+$")


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    section=st.dictionaries(st.sampled_from(FIELDS), values, max_size=6), backend=st.sampled_from(["armcl", "cpu", "reference", "gpu", 3])
)
def test_generated_deploy_sections_load_or_fail_located(tmp_path, section, backend):
    (tmp_path / "app.yaml").write_text(
        f"apiVersion: qlspec/v1\nname: hostile\ntarget: {{backend: {json.dumps(backend)}}}\ndeploy: {json.dumps(section)}\n"
    )
    try:
        load_spec(tmp_path / "app.yaml")
    except SpecError as e:
        assert e.errors and all(where and LOCATED.match(where.rsplit("/", 1)[-1]) for where, _ in e.errors), e.errors
        assert all("\n" not in message for _, message in e.errors)


@settings(max_examples=examples(200), deadline=None)
@given(
    text=st.text(max_size=40)
    | st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6).map(lambda v: ",".join(map(str, v)))
)
def test_generated_roi_options_parse_or_fail_located(text):
    try:
        sx, sy, ex, ey = parse_roi(text)
    except QlspecError as e:
        assert e.where == "--roi"
    else:
        assert ex > sx and ey > sy
