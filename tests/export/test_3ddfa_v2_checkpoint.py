"""A PTQ-quantised 3DDFA_V2-layout checkpoint through F2T: its requantisers fit int32, Deeploy's int32
arithmetic reproduces the engine, and the old fixed D = 30 overflowed it.

The checkpoint is written here in 3DDFA_V2's own layout (``{'epoch', 'state_dict'}``, DataParallel's
``module.`` prefix, the head as ``fc_param``) from a MobileNet-V1 x0.5 whose BatchNorm statistics come
from images (the released weights are not downloaded), then read back by the importer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_toys import float32_magnitude

from qlspec.export import fake_to_true, run_onnxruntime, to_onnx
from qlspec.export.f2t import IMAGE, OUTPUT
from qlspec.export.int32_check import cross_check
from qlspec.nets import registry
from qlspec.nets.checkpoint import load_3ddfa_checkpoint
from qlspec.quant import QuantConfig, calibrate, float_to_fake

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ptq_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = registry.build("3ddfa-mobilenet-v1", 0.5)
    x = torch.nn.functional.avg_pool2d(torch.rand(96, 3, 120, 120, generator=torch.Generator().manual_seed(1)) * 2 - 1, 5, 1, 2)
    net.train()
    with torch.no_grad():
        for i in range(0, 96, 32):
            net(x[i : i + 32])  # BatchNorm running statistics from images
    state = {"module." + ("fc_param." + k[3:] if k.startswith("fc.") else k): v for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("v2") / "mb05_120x120.pth"
    torch.save({"epoch": 50, "state_dict": state}, path)
    imported = registry.build("3ddfa-mobilenet-v1", 0.5)
    load_3ddfa_checkpoint(imported, path)
    fq = float_to_fake(imported.eval(), QuantConfig(fold_bn=True), x[:8])
    calibrate(fq, [x[:32], x[32:64]], method="percentile", percentile=99.99)
    return fq, x


def test_fitted_requantisers_run_exactly_in_int32(ptq_checkpoint):
    fq, x = ptq_checkpoint
    net = fake_to_true(fq, input_shape=(1, 3, 120, 120), samples=x)
    out, report = cross_check(net.graph, {IMAGE: x[64:].numpy()}, OUTPUT)
    assert report.mismatches == 0 and report.min_headroom >= 2.0 * (1 - 1e-6)
    assert len(net.fits) == 28 and all(f.observed_headroom >= 2.0 for f in net.fits)
    # onnxruntime on the DORY file: counted, not promised, because its float32 arithmetic meets values
    # beyond 2**24 (where not every integer is exact) at int32-fitted constants
    q = net.quantise_input(x[64:])
    assert float32_magnitude(net, q) > 2**24
    ort = np.rint(run_onnxruntime(to_onnx(net, "dory"), q)).astype(np.int64)
    assert ort.shape == out.shape


def test_the_old_fixed_d_overflows_int32_kernels(ptq_checkpoint):
    fq, x = ptq_checkpoint
    net = fake_to_true(fq, input_shape=(1, 3, 120, 120), requant_bits=30, samples=x)
    _, report = cross_check(net.graph, {IMAGE: x[64:].numpy()}, OUTPUT)
    assert report.mismatches > 0 and sum(f.observed_headroom < 1 for f in net.fits) >= 20
