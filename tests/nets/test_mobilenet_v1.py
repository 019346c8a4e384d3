import pytest
import torch

from qlspec.nets.mobilenet_v1 import MobileNetV1


@pytest.mark.parametrize(("width", "count"), [(1.0, 3_270_526), (0.5, 850_398)])
def test_parameter_count_matches_3ddfa_v2(width, count):
    net = MobileNetV1(width)
    assert sum(p.numel() for p in net.parameters()) == count


def test_state_dict_names_match_3ddfa_v2_layout():
    keys = set(MobileNetV1(0.5).state_dict())
    for name in (
        "conv1.weight",
        "bn1.running_var",
        "dw2_1.conv_dw.weight",
        "dw2_1.bn_dw.bias",
        "dw2_1.conv_sep.weight",
        "dw2_1.bn_sep.running_mean",
        "dw5_6.conv_sep.weight",
        "dw6.bn_sep.weight",
        "fc.weight",
        "fc.bias",
    ):
        assert name in keys
    blocks = {k.split(".")[0] for k in keys if k.startswith("dw")}
    assert blocks == {"dw2_1", "dw2_2", "dw3_1", "dw3_2", "dw4_1", "dw4_2", "dw5_1", "dw5_2", "dw5_3", "dw5_4", "dw5_5", "dw5_6", "dw6"}


def test_layer_shapes_for_120_input():
    net = MobileNetV1(0.5).eval()
    sizes = {}
    for name in ("conv1", "dw2_2", "dw3_2", "dw4_2", "dw5_6", "dw6"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[1:])))
    out = net(torch.zeros(2, 3, 120, 120))
    assert out.shape == (2, 62)
    assert sizes == {
        "conv1": (16, 60, 60),
        "dw2_2": (64, 30, 30),
        "dw3_2": (128, 15, 15),
        "dw4_2": (256, 8, 8),
        "dw5_6": (512, 4, 4),
        "dw6": (512, 4, 4),
    }
    assert net.dw2_2.conv_dw.bias is None and net.dw2_2.conv_dw.groups == 32
