"""The loader: positions on every error, extends merging, did-you-mean, cycles, bad YAML."""

from __future__ import annotations

import pytest

from qlspec.errors import SpecError
from qlspec.spec.load import load_spec, resolved_dict


def errors_of(path):
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value).splitlines()


def test_minimal_spec_gets_every_default(spec_file):
    loaded = load_spec(spec_file("name: tiny\n"))
    assert loaded.spec.quantisation.bits.weights == 8
    assert loaded.spec.training.optimizer.name == "sgd"
    assert resolved_dict(loaded)["preprocess"]["normalise"] == {"mean": 127.5, "std": 128.0}


def test_unknown_key_is_located_with_a_suggestion(spec_file):
    path = spec_file("name: x\ntraining:\n  epoch: 3\n")
    [line] = errors_of(path)
    assert line.endswith("app.yaml:3:3: training.epoch: unknown key 'epoch' (did you mean 'epochs'?)")


def test_wrong_type_and_range_point_at_the_value(spec_file):
    path = spec_file("name: x\ntraining:\n  epochs: many\n  batch_size: 0\n")
    lines = errors_of(path)
    assert lines[0].endswith(
        "app.yaml:3:11: training.epochs: Input should be a valid integer, unable to parse string as an integer (got 'many')"
    )
    assert lines[1].endswith("app.yaml:4:15: training.batch_size: must be >= 1 (got 0)")


def test_literal_choices_are_listed(spec_file):
    [line] = errors_of(spec_file("name: x\nquantisation:\n  bits: {weights: 7}\n"))
    assert "app.yaml:3:19: quantisation.bits.weights: must be 2, 4, 6 or 8 (got 7)" in line


def test_cross_field_rule_points_at_the_field_it_names(spec_file):
    [line] = errors_of(spec_file("name: x\nquantisation:\n  schedule:\n    epochs: 2\n    freeze_clip_at: 4\n"))
    assert line.endswith("app.yaml:5:21: quantisation.schedule.freeze_clip_at: freeze_clip_at (4) must be < epochs (2)")


def test_missing_required_name(spec_file):
    [line] = errors_of(spec_file("training: {epochs: 2}\n"))
    assert line.endswith("app.yaml:1:1: name: required field is missing")


def test_missing_pretrained_file_is_an_error_relative_to_the_spec(spec_file, tmp_path):
    [line] = errors_of(spec_file("name: x\nnetwork:\n  pretrained: weights/mb05.pth\n"))
    assert "app.yaml:3:15: network.pretrained: " in line
    assert f"file not found: {tmp_path / 'weights' / 'mb05.pth'}" in line
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "mb05.pth").write_bytes(b"x")
    assert load_spec(tmp_path / "app.yaml").spec.network.pretrained == (tmp_path / "weights" / "mb05.pth").resolve()


def test_invalid_yaml_is_located(spec_file):
    [line] = errors_of(spec_file("name: x\ntraining: {epochs: 3\n"))
    assert "app.yaml:3:1: invalid YAML" in line


def test_missing_file():
    with pytest.raises(SpecError, match="nope.yaml: file not found"):
        load_spec("nope.yaml")


def test_extends_merges_library_fragments_in_order_under_the_file(spec_file):
    path = spec_file("name: x\nextends: [boards/rpi4.yaml, quant/ptq-w8a8.yaml]\nquantisation:\n  bits: {activations: 4}\n")
    spec = load_spec(path).spec
    assert spec.target.board == "rpi4" and spec.target.threads == 4
    assert spec.quantisation.algorithm == "ptq"
    assert spec.quantisation.bits.activations == 4 and spec.quantisation.bits.weights == 8  # deep merge


def test_error_inside_a_fragment_points_into_the_fragment(spec_file, tmp_path):
    spec_file("training:\n  epochs: -1\n", name="frag.yaml")
    [line] = errors_of(spec_file("name: x\nextends: [frag.yaml]\n"))
    assert "frag.yaml:2:11: training.epochs: must be >= 0 (got -1)" in line
    spec_file("training:\n  epochs: 0\n", name="frag.yaml")  # a cross-field rule, too, points into the fragment
    [line] = errors_of(spec_file("name: x\nextends: [frag.yaml]\n"))
    assert "frag.yaml:2:11: training.epochs: training.epochs 0 uses network.pretrained as it is, but network.pretrained is null" in line


def test_later_value_overrides_and_its_position_wins(spec_file):
    spec_file("training:\n  epochs: 0\n", name="frag.yaml")
    [line] = errors_of(spec_file("name: x\nextends: [frag.yaml]\ntraining:\n  epochs: -2\n"))
    assert "app.yaml:4:11: training.epochs" in line


def test_unknown_fragment_suggests_the_library_name(spec_file):
    [line] = errors_of(spec_file("name: x\nextends: [boards/rpi.yaml]\n"))
    assert "app.yaml:2:11: extends: fragment 'boards/rpi.yaml' not found" in line
    assert "did you mean 'boards/rpi4.yaml'" in line


def test_extends_cycle_is_an_error(spec_file):
    spec_file("extends: [b.yaml]\n", name="a.yaml")
    spec_file("extends: [a.yaml]\n", name="b.yaml")
    [line] = errors_of(spec_file("name: x\nextends: [a.yaml]\n"))
    assert "extends: cycle" in line


def test_every_library_fragment_and_example_validates(repo_root):
    for path in sorted((repo_root / "examples").rglob("app.yaml")):
        try:
            load_spec(path)
        except SpecError as e:  # the real-data and pretrained examples name placeholder paths the user fills in
            assert all(
                " not found: /path/to/" in m and m.endswith("(a placeholder: fill in the path of your own copy)") for _, m in e.errors
            ), str(e)
    for fragment in sorted((repo_root / "specs").rglob("*.yaml")):
        text = f"name: check\nextends: [{fragment}]\n"
        tmp = fragment.parent / ".check.yaml"
        try:
            tmp.write_text(text)
            load_spec(tmp)
        finally:
            tmp.unlink()


def test_quantlab_mobilenet_preset_rounds_and_keeps_the_unsigned_bound_fixed(spec_file):
    """QuantLab's MobileNet recipe: rounded activations, upper bound set at start and not learned."""
    import torch

    from qlspec.nets import registry
    from qlspec.quant import float_to_fake
    from qlspec.quant.pact import PACTUnsignedAct
    from qlspec.stages.quantise import quant_config

    spec = load_spec(spec_file("name: x\nextends: [networks/3ddfa-mb05.yaml, quant/quantlab-mobilenet.yaml]\n")).spec
    assert spec.quantisation.activations.rounding == "half_up" and not spec.quantisation.activations.learn_clip
    cfg = quant_config(spec)
    assert cfg.act_rounding and not cfg.act_learn_clip
    torch.manual_seed(0)
    fq = float_to_fake(registry.build_from_spec(spec.network), cfg, torch.zeros(2, 3, 120, 120))
    acts = [m for m in fq.modules() if isinstance(m, PACTUnsignedAct)]
    assert acts and all(m.rule == "half_up" and not m.clip_hi.requires_grad for m in acts)


def test_a_pretrained_network_used_as_it_is_needs_its_checkpoint_and_output_normalisation(spec_file, tmp_path):
    [line] = errors_of(spec_file("name: x\ntraining:\n  epochs: 0\n"))
    assert "app.yaml:3:11: training.epochs: training.epochs 0 uses network.pretrained as it is, but network.pretrained is null" in line
    (tmp_path / "mb.pth").write_bytes(b"x")
    [line] = errors_of(spec_file("name: x\nnetwork: {pretrained: mb.pth}\ntraining:\n  epochs: 0\n"))
    assert "app.yaml:4:11: training.epochs: training.epochs 0 uses network.pretrained as it is: name the output normalisation" in line
    values = f"{{mean: [{', '.join(['0.5'] * 62)}], std: [{', '.join(['2'] * 62)}]}}"
    loaded = load_spec(spec_file(f"name: x\nnetwork: {{pretrained: mb.pth, param_stats: {values}}}\ntraining: {{epochs: 0}}\n"))
    assert loaded.spec.network.param_stats.mean == [0.5] * 62 and loaded.spec.training.epochs == 0
    assert resolved_dict(loaded)["network"]["param_stats"]["std"] == [2.0] * 62


def test_output_normalisation_written_out_is_checked_where_it_is_written(spec_file):
    lines = errors_of(spec_file("name: x\nnetwork:\n  param_stats: {mean: [1, 2], std: [1, 0]}\n"))
    assert lines[0].endswith("app.yaml:3:23: network.param_stats.mean: List should have at least 62 items after validation, not 2")
    assert lines[1].endswith("app.yaml:3:40: network.param_stats.std.1: must be > 0.0 (got 0)")
    lines = errors_of(spec_file("name: x\nnetwork:\n  param_stats: {mean: [1], sd: [1]}\n"))
    assert any(line.endswith("app.yaml:3:28: network.param_stats.sd: unknown key 'sd' (did you mean 'std'?)") for line in lines), lines


def test_the_networks_and_the_data_sets_normalisation_are_not_both_given(spec_file, tmp_path):
    for name in ("stats.pkl", "bfm.pkl"):
        (tmp_path / name).write_bytes(b"x")
    for folder in ("lp", "aflw"):
        (tmp_path / folder).mkdir()
    [line] = errors_of(
        spec_file(
            "name: x\nnetwork:\n  param_stats: stats.pkl\ndata: {kind: 300w-lp, root: lp, val_root: aflw, "
            "bfm: bfm.pkl, param_stats: stats.pkl}\n"
        )
    )
    assert "app.yaml:3:16: network.param_stats: network.param_stats and data.param_stats are both set" in line
