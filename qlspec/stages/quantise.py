"""Stage `quantise`: the float network becomes a fake-quantised one (rung FQ).

`quantisation.algorithm`:
- 'pact': float-to-fake conversion, then quantisation-aware training with QuantLib's controllers
  (quantisation starts at `schedule.start_epoch`, clipping bounds freeze at
  `schedule.freeze_clip_at`), from the trained float weights (QAFT) or from scratch;
- 'ptq': float-to-fake conversion with batch-norm folded, bounds calibrated on `ptq.samples`
  training images, no gradient step.

Outputs: fq_state.pt (state dict of the fake-quantised net), quant_config.json (the `QuantConfig`),
network.json (the train stage's record of the float network, `qlspec.nets.registry`), outputs.npz (normalised outputs on the
validation split), history.json (QAT only), fqi_outputs.npz (rung FQI: ``output``, the integer outputs
of F2T's graph on the validation split, and ``z``, the same times output eps) and rungs.json (row FQ,
compared with FP, and row FQI, compared with FQ).

Rung FQI is the fake-quantised network evaluated with the integer arithmetic the export stage will
write: F2T's graph (`qlspec.evaluation.integerise`, the same constants as the export) run by the torch
executor. QAT validates this way too once the clipping bounds are frozen, so the NME it reports is
the exported network's; rung TQ (the reference engine) must then equal FQI bit for bit.

QAT runs where ``training.device`` says (always in float32) and, with ``training.distributed``, in
several processes: each rebuilds the fake-quantised net from the float one, calibrates on its share of
the calibration batches (the statistics are pooled, so all start with the same bounds), trains on its
share of every batch; rank 0 hands the weights and bounds back. PTQ calibration runs here, in one
process (256 images do not pay for more).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx

from qlspec import atomic
from qlspec.evaluation import integer_outputs, integerise, landmarks_from_outputs, load_split, load_stats, network_outputs, nme_row
from qlspec.face.store import load_face_model
from qlspec.metrics.nme import NMEReport, nme_report
from qlspec.nets import registry
from qlspec.preprocess import InputTransform
from qlspec.quant import PACTController, QuantConfig, calibrate, float_to_fake, pact_native, pact_param_groups
from qlspec.quant.controllers import is_frozen
from qlspec.report import write_rungs
from qlspec.spec.models import AppSpec
from qlspec.stages.engine import StageContext, release_memory
from qlspec.training.distributed import launch, team_size, world
from qlspec.training.hardware import Hardware
from qlspec.training.loss import LossConfig
from qlspec.training.trainer import train

EXAMPLE_BATCH = 8


def quant_config(spec: AppSpec) -> QuantConfig:
    """The spec's quantisation section as the PACT library's configuration; the input quantiser
    follows from ``preprocess.normalise`` (`qlspec.preprocess.input_grid`)."""
    q = spec.quantisation
    grid = InputTransform.from_spec(spec.preprocess).grid
    return QuantConfig(
        input_clip=grid.clip,
        input_signed=grid.signed,
        input_rounding=grid.rounding == "half_up",
        weight_bits=q.bits.weights,
        act_bits=q.bits.activations,
        weight_granularity=q.weights.granularity,
        weight_init=q.weights.init,
        act_init=q.activations.init,
        act_clip=q.activations.clip,
        act_rounding=q.activations.rounding == "half_up",
        act_learn_clip=q.activations.learn_clip,
        percentile=q.activations.percentile if q.algorithm == "pact" else q.ptq.percentile,
        fold_bn=q.algorithm == "ptq" and q.ptq.fold_bn,
    )


def load_fake_quantised(folder: Path) -> fx.GraphModule:
    """Rebuild the fake-quantised net a quantise stage wrote to `folder` (eval mode)."""
    cfg = QuantConfig(**json.loads((folder / "quant_config.json").read_text()))
    example = torch.zeros(EXAMPLE_BATCH, *registry.read_record(folder)["input_shape"])
    fq = float_to_fake(registry.build_from_record(folder), cfg, example)
    fq.load_state_dict(torch.load(folder / "fq_state.pt", map_location="cpu", weights_only=True))
    return fq.eval()


def run(ctx: StageContext) -> None:
    spec = ctx.spec
    q, t = spec.quantisation, spec.training
    torch.set_num_threads(t.threads)
    data, float_dir = ctx.inputs["data"], ctx.inputs["train"]
    train_set, val_set = load_split(data, "train"), load_split(data, "val")
    stats = load_stats(data)
    torch.manual_seed(t.seed)
    net = registry.build_from_record(float_dir)  # the architecture the train stage trained
    if q.algorithm == "ptq" or q.schedule.from_float:
        net.load_state_dict(torch.load(float_dir / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    cfg = quant_config(spec)
    prep = InputTransform.from_spec(spec.preprocess)
    fq = float_to_fake(net, cfg, prep(train_set.images[:EXAMPLE_BATCH]))
    face_model = load_face_model(ctx.inputs["data"])
    integer = IntegerEvaluation(ctx, train_set, val_set, stats, face_model, prep)
    if q.algorithm == "pact":
        ctx.log(f"  PACT activations: {pact_native.describe()}")  # what a QAT step costs here (bench/RESULTS.md)
        settings = t.distributed
        size = team_size(settings)
        if size == 1:
            _qat(ctx, fq, train_set, val_set, stats, integer)
        else:
            ctx.log(f"  QAT in {size} processes ({settings.backend})")
            done = launch(_qat_in_process, (dataclasses.replace(ctx, log=print), fq.state_dict()), settings, shared=ctx.build_dir)
            fq.load_state_dict(done["state"])
            (ctx.out / "history.json").write_text(json.dumps(done["history"], indent=2) + "\n")
        fq.to("cpu")
        release_memory()  # QAT's step buffers, before F2T and the evaluations add their own
    else:
        n = min(q.ptq.samples, len(train_set))
        batches = [prep(train_set.images[s : min(s + 64, n)]) for s in range(0, n, 64)]
        calibrate(fq, batches, method=q.ptq.calibration, percentile=q.ptq.percentile)
        ctx.log(f"  calibrated {q.ptq.calibration} bounds on {n} training images")
    atomic.save_torch(ctx.out / "fq_state.pt", fq.state_dict())
    (ctx.out / "quant_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    shutil.copyfile(float_dir / "network.json", ctx.out / "network.json")
    z = network_outputs(fq, val_set, prep)
    np.savez(ctx.out / "outputs.npz", z=z)
    z_fp = np.load(float_dir / "outputs.npz")["z"]
    fq_row = nme_row(
        "FQ",
        landmarks_from_outputs(z, stats, face_model),
        val_set,
        algorithm=q.algorithm,
        max_abs_diff=float(np.abs(z - z_fp).max()),
        bits={"weights": q.bits.weights, "activations": q.bits.activations},
    )
    out, eps = integer.outputs(fq)
    z_int = out * eps
    np.savez(ctx.out / "fqi_outputs.npz", output=out, z=z_int.astype(np.float32))
    lsb = out - np.round(z.astype(np.float64) / eps)
    fqi_row = nme_row(
        "FQI",
        landmarks_from_outputs(z_int, stats, face_model),
        val_set,
        max_abs_diff=float(np.abs(z_int - z).max()),
        outputs=int(out.size),
        outputs_off_round_fq=int((lsb != 0).sum()),
    )
    write_rungs(ctx.out, [fq_row, fqi_row])
    ctx.log(
        f"  FQ ({q.algorithm} w{q.bits.weights}a{q.bits.activations}) NME {fq_row['nme']:.2f}%; "
        f"integer-faithful (FQI) {fqi_row['nme']:.2f}%"
    )


class IntegerEvaluation:
    """Rung FQI for a fake-quantised net: F2T's graph (the export's constants) on the validation
    split, by the torch executor. Remembers its last result, so validating the final QAT epoch and
    writing the rung cost one integerisation."""

    def __init__(self, ctx: StageContext, train_set, val_set, stats, face_model, prep: InputTransform) -> None:
        self.ctx, self.train_set, self.val_set, self.stats, self.face_model, self.prep = ctx, train_set, val_set, stats, face_model, prep
        self.last: tuple[dict, np.ndarray, np.ndarray] | None = None

    def outputs(self, fq: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """(integer outputs int64 ``(N, 62)``, output eps broadcast to one output) on the validation split."""
        if any(p.device.type != "cpu" for p in fq.parameters()):  # trained on a GPU: the integer arithmetic runs here
            fq = copy.deepcopy(fq).to("cpu")
        state = {k: v.clone() for k, v in fq.state_dict().items()}
        if self.last is not None and state.keys() == self.last[0].keys() and all(torch.equal(state[k], self.last[0][k]) for k in state):
            return self.last[1], self.last[2]
        net = integerise(fq, self.ctx.spec, self.train_set, self.val_set)
        out = integer_outputs(net, self.val_set, self.prep)
        eps = np.broadcast_to(net.output_eps, out.shape[1:]).astype(np.float64)
        self.last = (state, out, eps)
        return out, eps

    def __call__(self, fq: torch.nn.Module) -> NMEReport | None:
        """The NME report of the integer arithmetic once the clipping bounds are frozen, else None."""
        if not is_frozen(fq):
            return None
        out, eps = self.outputs(fq)
        return nme_report(landmarks_from_outputs(out * eps, self.stats, self.face_model), self.val_set.landmarks, self.val_set.yaw_deg)


def _qat_in_process(job: tuple[StageContext, dict[str, torch.Tensor]]) -> dict[str, Any] | None:
    """One QAT process: the stage's inputs and the fake-quantised net rebuilt here; rank 0 returns the result."""
    ctx, initial = job
    spec = ctx.spec
    torch.set_num_threads(spec.training.threads)
    data, float_dir = ctx.inputs["data"], ctx.inputs["train"]
    train_set, val_set, stats = load_split(data, "train"), load_split(data, "val"), load_stats(data)
    prep = InputTransform.from_spec(spec.preprocess)
    fq = float_to_fake(registry.build_from_record(float_dir).eval(), quant_config(spec), prep(train_set.images[:EXAMPLE_BATCH]))
    fq.load_state_dict(initial)
    integer = IntegerEvaluation(ctx, train_set, val_set, stats, load_face_model(data), prep)
    history = _qat(ctx, fq, train_set, val_set, stats, integer)
    if not world().is_main:
        return None
    return {"state": {k: v.detach().cpu() for k, v in fq.state_dict().items()}, "history": history}


def _qat(ctx: StageContext, fq: fx.GraphModule, train_set, val_set, stats, integer: IntegerEvaluation) -> list[dict[str, Any]]:
    spec = ctx.spec
    s, t = spec.quantisation.schedule, spec.training
    calibration = None
    prep = InputTransform.from_spec(spec.preprocess)
    w = world()
    if spec.quantisation.activations.init != "const":
        # each process observes its share of the calibration batches; start_activations pools the statistics
        starts = range(0, min(256, len(train_set)), 64)
        calibration = [prep(train_set.images[i : i + 64]) for i in starts][w.rank :: w.size]
    controller = PACTController(fq, start_epoch=s.start_epoch, freeze_clip_at=s.freeze_clip_at, calibration_batches=calibration)

    def on_epoch_start(epoch: int, net: torch.nn.Module) -> None:
        controller(epoch, net)  # the trainer's hook returns nothing; the commands run are in controller.log

    result = train(
        fq,
        train_set,
        val_set,
        stats=stats,
        epochs=s.epochs,
        batch_size=t.batch_size,
        optimizer=t.optimizer.name,
        lr=s.lr,
        momentum=t.optimizer.momentum,
        nesterov=t.optimizer.nesterov,
        weight_decay=t.optimizer.weight_decay,
        schedule="cosine",
        loss_cfg=LossConfig(param_weight=t.loss.param_weight, landmark_weight=t.loss.landmark_weight, landmark=t.loss.landmark),
        params_for_optimiser=pact_param_groups(fq, s.lr, weight_decay=t.optimizer.weight_decay),
        on_epoch_start=on_epoch_start,
        ckpt_dir=ctx.out / "checkpoints",
        seed=t.seed,
        progress=ctx.progress,
        face_model=load_face_model(ctx.inputs["data"]),
        transform=prep,
        evaluator=integer,
        hardware=Hardware.from_spec(t, "qat", w.local_rank),
        find_unused_parameters=s.start_epoch > 0,  # bounds not yet started do not learn
    )
    if w.is_main:
        if result.resumed_from:
            ctx.log(f"  resumed after epoch {result.resumed_from}, from the checkpoint an interrupted run left")
        (ctx.out / "history.json").write_text(json.dumps(result.history, indent=2) + "\n")
        shutil.rmtree(ctx.out / "checkpoints", ignore_errors=True)
    return result.history
