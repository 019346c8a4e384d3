"""`qlspec new` with generated values: a clean error or a valid app, never a traceback or a stray folder."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlspec.errors import QlspecError
from qlspec.scaffold import library_choices, scaffold
from qlspec.spec.load import load_spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["network", "board", "quantisation"]), value=st.text(min_size=0, max_size=30))
def test_a_choice_outside_the_spec_library_is_refused_before_anything_is_written(tmp_path_factory, key, value):
    out = tmp_path_factory.mktemp("new")
    if value in library_choices()[key]:
        return
    with pytest.raises(QlspecError, match="is not in the spec library|expected key=value"):
        scaffold(["name=app", f"{key}={value}"], no_input=True, output_dir=out)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("network", library_choices()["network"])
def test_every_network_in_the_library_scaffolds_a_valid_app(tmp_path, network):
    folder = scaffold(["name=app", f"network={network}"], no_input=True, output_dir=tmp_path)
    loaded = load_spec(folder / "app.yaml")
    assert loaded.spec.network.arch.startswith("3ddfa-")
