"""3DDFA_V2 checkpoint import: the released layout loads; wrong or corrupt files name the problem."""

from __future__ import annotations

import pytest
import torch

from qlspec.errors import CheckpointError
from qlspec.nets.checkpoint import load_3ddfa_checkpoint
from qlspec.nets.mobilenet_v1 import MobileNetV1


def released_layout(net: MobileNetV1) -> dict:
    """A checkpoint as 3DDFA_V2 ships it: DataParallel prefixes, fc_param, an extra fc_lm head."""
    state = {}
    for key, value in net.state_dict().items():
        key = key.replace("fc.", "fc_param.", 1) if key.startswith("fc.") else key
        state["module." + key] = value.clone()
    width = net.fc.in_features
    state["module.fc_lm.weight"] = torch.randn(136, width)
    state["module.fc_lm.bias"] = torch.randn(136)
    return {"epoch": 62, "state_dict": state}


@pytest.mark.parametrize("legacy", [True, False])
def test_released_layout_loads_exactly(tmp_path, legacy):
    torch.manual_seed(1)
    source = MobileNetV1(width=0.25)
    path = tmp_path / "mb025_120x120.pth"
    torch.save(released_layout(source), path, _use_new_zipfile_serialization=not legacy)
    target = MobileNetV1(width=0.25)
    load_3ddfa_checkpoint(target, path)
    x = torch.randn(2, 3, 120, 120)
    source.eval(), target.eval()
    assert torch.equal(source(x), target(x))


def test_width_mismatch_names_shapes(tmp_path):
    path = tmp_path / "mb05.pth"
    torch.save(released_layout(MobileNetV1(width=0.5)), path)
    with pytest.raises(
        CheckpointError,
        match=r"mb05.pth: does not fit the network: shape mismatches \(file vs network\): conv1.weight \(16, 3, 3, 3\) vs \(8, 3, 3, 3\)",
    ):
        load_3ddfa_checkpoint(MobileNetV1(width=0.25), path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    ckpt = released_layout(MobileNetV1(width=0.25))
    del ckpt["state_dict"]["module.fc_param.bias"]
    ckpt["state_dict"]["module.head.extra"] = torch.zeros(1)
    path = tmp_path / "odd.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as info:
        load_3ddfa_checkpoint(MobileNetV1(width=0.25), path)
    assert "missing keys: fc.bias" in str(info.value) and "unexpected keys: head.extra" in str(info.value)


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    good = tmp_path / "good.pth"
    torch.save(released_layout(MobileNetV1(width=0.25)), good)
    path.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken.pth: not a readable torch checkpoint"):
        load_3ddfa_checkpoint(MobileNetV1(width=0.25), path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": print}, path)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_3ddfa_checkpoint(MobileNetV1(width=0.25), path)
