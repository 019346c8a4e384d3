"""PACT quantisation-aware training and post-training quantisation (QuantLib semantics).

What the `quantise` stage calls, in order:

PACT QAT::

    fq = float_to_fake(float_net, QuantConfig(...), example_input)      # float mode until started
    ctrl = PACTController(fq, start_epoch=0, freeze_clip_at=5)          # trainer hook on_epoch_start(epoch, net)
    opt = torch.optim.SGD(pact_param_groups(fq, lr=1e-3), momentum=0.9)
    ... train fq with ctrl as the epoch hook ...

PTQ::

    fq = float_to_fake(float_net, QuantConfig(..., fold_bn=True), example_input)
    calibrate(fq, batches, method="percentile", percentile=99.99)
"""

from qlspec.quant.bn_fold import fold_batchnorm, fold_bn_into
from qlspec.quant.config import QuantConfig
from qlspec.quant.controllers import (
    PACTController,
    clip_parameters,
    freeze_clip,
    observe,
    pact_param_groups,
    start_activations,
    start_weights,
)
from qlspec.quant.f2f import PACTTracer, float_to_fake, reset_observers, trace_fake
from qlspec.quant.pact import (
    PACT_ACTIVATIONS,
    PACT_LINEAR_OPS,
    PACT_MODULES,
    PACTAsymmetricAct,
    PACTConv2d,
    PACTLinear,
    PACTQuantFunc,
    PACTSignedAct,
    PACTUnsignedAct,
    input_quantiser,
    pact_modules,
    pact_quantize,
)
from qlspec.quant.ptq import calibrate

__all__ = [
    "PACT_ACTIVATIONS",
    "PACT_LINEAR_OPS",
    "PACT_MODULES",
    "PACTAsymmetricAct",
    "PACTController",
    "PACTConv2d",
    "PACTLinear",
    "PACTQuantFunc",
    "PACTSignedAct",
    "PACTTracer",
    "PACTUnsignedAct",
    "QuantConfig",
    "calibrate",
    "clip_parameters",
    "float_to_fake",
    "fold_batchnorm",
    "fold_bn_into",
    "freeze_clip",
    "input_quantiser",
    "observe",
    "pact_modules",
    "pact_param_groups",
    "pact_quantize",
    "reset_observers",
    "start_activations",
    "start_weights",
    "trace_fake",
]
