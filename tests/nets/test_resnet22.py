"""3DDFA_V2's ResNet-22 and the network registry."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from qlspec.export import fake_to_true, write_flavour
from qlspec.export.layerwise import layerwise_summary
from qlspec.nets import registry
from qlspec.nets.checkpoint import load_3ddfa_checkpoint
from qlspec.nets.resnet22 import ResNet22
from qlspec.quant import QuantConfig, calibrate, float_to_fake
from qlspec.spec.load import _models_in
from qlspec.spec.models import AppSpec


def macs(net: torch.nn.Module) -> int:
    total = [0]

    def hook(m, i, o):
        total[0] += o.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    net.eval()(torch.zeros(1, 3, 120, 120))
    for h in hooks:
        h.remove()
    return total[0]


@pytest.mark.parametrize(("width", "count", "mmacs"), [(1.0, 18_449_246, 2656), (0.125, 293_570, 43)])
def test_size_matches_3ddfa_v2_and_the_registry(width, count, mmacs):
    net = ResNet22(width)
    assert sum(p.numel() for p in net.parameters()) == count
    assert round(macs(net) / 1e6) == mmacs
    assert f"{count:,}" in registry.entry("3ddfa-resnet22").sizes


def test_state_dict_has_3ddfa_v2_names():
    keys = set(ResNet22(1.0).state_dict())
    for name in (
        "conv1.weight",
        "bn2.running_mean",
        "layer1.0.conv1.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_var",
        "layer2.3.bn2.bias",
        "layer3.2.conv2.weight",
        "conv_param.weight",
        "conv_param.bias",
    ):
        assert name in keys
    assert ResNet22(1.0).layer3[0].conv1.weight.shape == (512, 256, 3, 3)


def test_loads_a_checkpoint_in_3ddfa_v2_layout(tmp_path):
    torch.manual_seed(1)
    src = ResNet22(0.125)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    state["module.conv_lm.weight"] = torch.zeros(136, 64, 1, 1)  # the training-only landmark head: dropped
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "resnet22.pth")
    net = ResNet22(0.125)
    load_3ddfa_checkpoint(net, tmp_path / "resnet22.pth")
    x = torch.randn(2, 3, 120, 120)
    assert torch.equal(net.eval()(x), src.eval()(x))


def test_registry_and_spec_union_name_the_same_architectures():
    members = _models_in(AppSpec.model_fields["network"].annotation)
    arches = {typing.get_args(m.model_fields["arch"].annotation)[0] for m in members}
    assert arches == set(registry.NETWORKS)
    for arch in registry.NETWORKS:
        spec = AppSpec.model_validate({"name": "x", "network": {"arch": arch}})
        net = registry.build_from_spec(spec.network)
        assert type(net) is registry.entry(arch).cls() and net.width == spec.network.width


def test_the_network_record_rebuilds_the_architecture(tmp_path):
    spec = AppSpec.model_validate({"name": "x", "network": {"arch": "3ddfa-resnet22", "width": 0.0625}})
    registry.write_record(spec.network, 120, tmp_path)
    net = registry.build_from_record(tmp_path)
    assert isinstance(net, ResNet22) and net.width == 0.0625
    assert registry.read_record(tmp_path)["input_shape"] == [3, 120, 120]


def test_resnet22_integerises_exactly_in_both_flavours(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = ResNet22(0.0625)
    pixels = torch.randint(0, 256, (4, 3, 120, 120), generator=torch.Generator().manual_seed(2))
    x = (pixels.float() - 127.5) / 128
    net.train()
    with torch.no_grad():
        net(x)
    fq = float_to_fake(net.eval(), QuantConfig(fold_bn=True), x[:2])
    calibrate(fq, [x], method="percentile")
    ig = fake_to_true(fq, requant_bits=24, input_shape=(1, 3, 120, 120))
    counts = ig.graph.op_counts()
    assert counts["Add"] == 10 and counts["Conv"] == 1 + 1 + 2 * 10 + 3 + 1  # stem, 10 blocks, 3 shortcuts, head
    assert layerwise_summary(fq, ig, x)["max_lsb"] <= 1
    out = ig.run(x)
    for flavour in ("deeploy", "dory"):
        from qlspec.export import run_engine

        path = write_flavour(ig, tmp_path / flavour, flavour, ig.quantise_input(x), out)
        assert np.array_equal(run_engine(path, ig.quantise_input(x), optimised=True), out)
