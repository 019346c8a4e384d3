"""Stage `export`: fake-to-true integerisation (rung TQ) and the QuantLab-format ONNX files.

Reads the fake-quantised net of the `quantise` stage and the validation split of the `data` stage.
F2T gives the qlspec integer graph (`qlspec.evaluation.integerise`: each requantiser's D fitted for
int32 on the calibration and validation images, `qlspec.export.requant`); rung TQ is that graph,
input quantiser included, run by the reference engine on the validation images, with every
requantiser recomputed on the way as Deeploy's int32 kernel does it (`qlspec.export.int32_check`).
Outputs:

- ``deeploy/`` and ``dory/``: both flavours, whatever ``export.flavour`` says (it names the primary
  one, which the convert stage reads), each with network.onnx, inputs.npz / outputs.npz (the first
  `VECTORS` validation images: the file's own test vector), metadata.json, and for DORY its
  config_network.json (`qlspec.export.files`);
- ``graph/``: F2T's graph (`qlspec.graph.io`), input quantiser included;
- ``tq_outputs.npz``: ``output`` (int64 integer outputs of the graph on the first
  ``verify.samples`` validation images), ``z`` (the same times output eps: normalised parameters);
- ``requantisers.json`` / ``requantisers.md``: per requantiser D, the multiplier's significant bits,
  and observed (calibration and validation images) and worst-case int32 headroom;
- ``export.json``: primary flavour, output eps, self-check results, the int32 cross-check;
- ``rungs.json``: row TQ against FQI (the quantise stage's integer-faithful evaluation) on those
  images: NME (%), ``max_abs_diff`` = max |TQ*eps - FQI*eps|, ``mismatches`` = outputs with
  ``TQ != FQI`` (0 unless the two executors or stages disagree: the stage fails then); against the
  float FQ: ``fq_max_abs_diff``, ``fq_lsb_histogram`` (``{TQ - round(FQ/eps): count}``) and
  ``per_layer``: every requantiser fed FQ's own input codes on the first `LAYERWISE_IMAGES` images
  (`qlspec.export.layerwise`), where the float gap F2T's arithmetic leaves shows.

Before finishing, each exported file is run by qlspec's importer and reference engine on its test
vector; any difference from TQ is a bug and stops the stage. The DORY file (standard ops once its
annotations are stripped) is also run by onnxruntime on all the images; as onnxruntime computes in
float32, its agreement with TQ is recorded as a mismatch count in export.json.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch

from qlspec import atomic
from qlspec.errors import StageError
from qlspec.evaluation import integerise, landmarks_from_outputs, load_split, load_stats, nme_row
from qlspec.export import histogram, run_engine, run_onnxruntime, write_flavour
from qlspec.export.f2t import IMAGE, OUTPUT
from qlspec.export.int32_check import Int32Report, cross_check
from qlspec.export.layerwise import layerwise_summary
from qlspec.export.requant import table_markdown
from qlspec.face.store import load_face_model
from qlspec.graph.io import save_graph
from qlspec.preprocess import InputTransform
from qlspec.report import write_rungs
from qlspec.stages.engine import StageContext, digest_json

VECTORS = 4
LAYERWISE_IMAGES = 64
BATCH = 64


def run(ctx: StageContext) -> None:
    from qlspec.stages.quantise import load_fake_quantised  # the quantise stage's loader

    spec = ctx.spec
    torch.set_num_threads(spec.training.threads)
    fq = load_fake_quantised(ctx.inputs["quantise"]).eval()
    faces = load_split(ctx.inputs["data"], "val")
    faces = faces.subset(slice(0, min(spec.verify.samples, len(faces))))
    stats = load_stats(ctx.inputs["data"])
    x = InputTransform.from_spec(spec.preprocess)(faces.images)

    net = integerise(fq, spec, load_split(ctx.inputs["data"], "train"), faces)
    # the input codes, a batch at a time and in int32 (8-bit codes): all 1,000 at once, through the
    # engine's float64 and int64 passes, were the stage's peak (2.04 GB, 0.35 GB above the rest)
    q = np.concatenate([net.quantise_input(x[s : s + BATCH]).astype(np.int32) for s in range(0, len(x), BATCH)])
    int32 = Int32Report()
    xs = x.numpy()
    # rung TQ: F2T's graph by the reference engine, every requantiser also run as Deeploy's int32 kernel
    out = np.concatenate([cross_check(net.graph, {IMAGE: xs[s : s + BATCH]}, OUTPUT, int32)[0] for s in range(0, len(xs), BATCH)])
    if int32.mismatches:
        ctx.log(
            f"  warning: {int32.mismatches} of {int32.values} requantised values overflow an int32 kernel "
            f"(export.requant_bits = {spec.export.requant_bits}); unset it to fit D for int32"
        )
    with torch.no_grad():
        y = torch.cat([fq(x[s : s + BATCH]) for s in range(0, len(x), BATCH)]).double().numpy()
    eps = np.broadcast_to(net.output_eps, out.shape[1:]).astype(np.float64)
    z = out * eps
    fqi = np.load(ctx.inputs["quantise"] / "fqi_outputs.npz")["output"][: len(out)]
    vs_fqi = int((fqi != out).sum())
    if vs_fqi:
        raise StageError(
            f"TQ (reference engine) differs from FQI (the quantise stage's integer evaluation) on {vs_fqi} of {out.size} outputs",
            where="export",
        )
    diff = out - np.round(y / eps)
    np.savez(ctx.out / "tq_outputs.npz", output=out, z=z.astype(np.float32))
    save_graph(net.graph, ctx.out / "graph")
    agreement = {f.name: int32.agreement.get(f.name, [0, 0]) for f in net.fits}
    atomic.write_json(ctx.out / "requantisers.json", [{**f.as_dict(), "int32_values_mismatches": agreement[f.name]} for f in net.fits])
    atomic.write_text(ctx.out / "requantisers.md", table_markdown(list(net.fits), int32.agreement))

    spec_hash = digest_json(spec.model_dump(mode="json"))
    n = min(VECTORS, len(q))
    checks = {}
    for flavour in ("deeploy", "dory"):
        path = write_flavour(net, ctx.out / flavour, flavour, q[:n].astype(np.int64), out[:n], spec_hash=spec_hash)
        got = run_engine(path, q[:n].astype(np.int64), input_bits=net.input_info.bits, input_signed=net.input_info.signed)
        bad = int((got != out[:n]).sum())
        if bad:
            raise StageError(f"the reference engine differs from TQ on {bad} of {out[:n].size} outputs", where=str(path))
        checks[flavour] = {"engine_vs_tq_mismatches": bad, "n": n}
    # onnxruntime computes in float32, which cannot hold every product exactly: a count, not a claim
    ort = run_onnxruntime(onnx.load(ctx.out / "dory" / "network.onnx"), q)
    checks["dory"]["onnxruntime_vs_tq_mismatches"] = int((np.rint(ort).astype(np.int64) != out).sum())
    checks["dory"]["onnxruntime_outputs"] = int(out.size)

    per_layer = layerwise_summary(fq, net, x[:LAYERWISE_IMAGES])
    row = nme_row(
        "TQ",
        landmarks_from_outputs(z, stats, load_face_model(ctx.inputs["data"])),
        faces,
        max_abs_diff=float(np.abs(out - fqi).max() * eps.max()),
        mismatches=vs_fqi,
        outputs=int(out.size),
        fq_max_abs_diff=float(np.abs(z - y).max()),
        fq_lsb_differing=int((diff != 0).sum()),
        fq_lsb_histogram=histogram(diff),
        fq_lsb_max_diff=int(np.abs(diff).max()),
        per_layer={**per_layer, "images": min(LAYERWISE_IMAGES, len(x))},
    )
    write_rungs(ctx.out, [row])
    # integerise fits D on images, so every requantiser has an observed headroom
    observed = [h for f in net.fits if (h := f.observed_headroom) is not None]
    (ctx.out / "export.json").write_text(
        json.dumps(
            {
                "primary": spec.export.flavour,
                "requant_bits": net.requant_bits,
                "spec_hash": spec_hash,
                "input_eps": net.input_eps,
                "output_eps": net.output_eps.tolist(),
                "nodes": net.graph.op_counts(),
                "self_check": checks,
                "int32_check": {k: v for k, v in int32.as_dict().items() if k != "peaks"},
                "requantisers": len(net.fits),
                "min_observed_headroom": min(observed, default=None),
            },
            indent=1,
        )
        + "\n"
    )
    ds = sorted({f.shift for f in net.fits})
    ctx.log(
        f"  TQ NME {row['nme']:.2f}%, equal to FQI on all {out.size} outputs; D {ds[0]}..{ds[-1]}, int32 headroom >= "
        f"{int32.min_headroom:.2f}x on the validation images ({int32.mismatches} of {int32.values} values differ in "
        f"Deeploy's int32 arithmetic); onnxruntime (DORY file) differs on {checks['dory']['onnxruntime_vs_tq_mismatches']} "
        f"of {out.size}; engine == TQ on both flavours"
    )
