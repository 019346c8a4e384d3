"""PACT QAT against float and PTQ on the blob regressor (quant_toys): the numbers behind the claims.

Measured (torch 2.13 CPU, seeds below; test RMSE, targets have unit scale, predicting the mean
scores about 0.58; AMD EPYC, 1 thread / Intel Xeon with AVX-512, 1 and 2 threads):

    float                                     0.125 / 0.124, 0.125
    w8a8  PTQ minmax                          0.122 / 0.124, 0.122    PACT QAT (2 epochs, const init 6)  0.114 / 0.112, 0.115
    w4a4  PTQ minmax / percentile / mse       0.40 / 0.45 / 0.40 (EPYC); 0.47 / 0.56 / 0.35 and 0.52 / 0.70 / 0.37 (Xeon)
                                              PACT QAT (4 epochs, max init)      0.203, 0.184 (Xeon)

QAT gets extra epochs, which also helps the float net: the 8-bit claim is only that QAT ends within
10% of the float model it started from. At 4 bits three epochs were not always enough: 0.195 on the
EPYC, but 0.352 on one thread of the Xeon, just above PTQ's 0.348; the fourth makes it 0.20 there.
"""

from __future__ import annotations

import copy

import pytest
import torch
from quant_toys import TinyMobileNet, blob_data, rmse, train

from qlspec.quant import PACTController, QuantConfig, calibrate, float_to_fake, pact_param_groups

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    xtr, ytr, _ = blob_data(3072, seed=1)
    xte, yte, _ = blob_data(1024, seed=2)
    net = TinyMobileNet()
    train(net, xtr, ytr, 10, torch.optim.Adam(net.parameters(), 3e-3))
    net.eval()
    return net, (xtr, ytr), (xte, yte)


def _qat(net, bits, act_init, epochs, data, calib):
    xtr, ytr = data
    fq = float_to_fake(net, QuantConfig(weight_bits=bits, act_bits=bits, act_init=act_init), xtr[:2])
    ctrl = PACTController(fq, start_epoch=0, freeze_clip_at=epochs - 1, calibration_batches=calib)
    opt = torch.optim.Adam(pact_param_groups(fq, lr=1e-3, clip_weight_decay=0.0), lr=1e-3)
    train(fq, xtr, ytr, epochs, opt, on_epoch_start=ctrl, seed=100)
    return fq


def _ptq(net, bits, method, x0, calib):
    fq = float_to_fake(net, QuantConfig(weight_bits=bits, act_bits=bits, fold_bn=True), x0)
    calibrate(fq, calib, method=method)
    return fq


def test_pact_w8a8_ends_near_float_and_w4a4_beats_ptq(trained):
    net, (xtr, ytr), (xte, yte) = trained
    calib = [xtr[i : i + 64] for i in range(0, 512, 64)]
    fp = rmse(net, xte, yte)
    assert fp < 0.2, "the float model did not learn the task"
    ptq8 = rmse(_ptq(net, 8, "minmax", xtr[:2], calib), xte, yte)
    qat8 = rmse(_qat(copy.deepcopy(net), 8, "const", 2, (xtr, ytr), calib), xte, yte)
    ptq4 = {m: rmse(_ptq(net, 4, m, xtr[:2], calib), xte, yte) for m in ("minmax", "percentile", "mse")}
    qat4 = rmse(_qat(copy.deepcopy(net), 4, "max", 4, (xtr, ytr), calib), xte, yte)
    print(f"\nRMSE float {fp:.4f} | w8a8 PTQ {ptq8:.4f} PACT {qat8:.4f} | w4a4 PTQ {ptq4} PACT {qat4:.4f}")
    assert qat8 <= 1.10 * fp
    assert ptq8 <= 1.10 * fp
    assert qat4 < min(ptq4.values())
    assert qat4 <= 2.0 * fp
