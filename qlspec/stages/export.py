"""Stage `export`: fake-to-true integerisation (rung TQ) and the QuantLab-format ONNX files.

Reads the fake-quantised net of the `quantise` stage and the validation split of the `data` stage.
F2T gives the qlspec integer graph (`qlspec.export.f2t`); rung TQ is that graph, input quantiser
included, run by the reference engine on the validation images. Outputs:

- ``deeploy/`` and ``dory/``: both flavours, whatever ``export.flavour`` says (it names the primary
  one, which the convert stage reads), each with network.onnx, inputs.npz / outputs.npz (the first
  `VECTORS` validation images: the file's own test vector), metadata.json, and for DORY its
  config_network.json (`qlspec.export.files`);
- ``graph/``: F2T's graph (`qlspec.graph.io`), input quantiser included;
- ``tq_outputs.npz``: ``output`` (int64 integer outputs of the graph on the first
  ``verify.samples`` validation images), ``z`` (the same times output eps: normalised parameters);
- ``export.json``: primary flavour, output eps, self-check results;
- ``rungs.json``: row TQ against FQ on those images: NME (%), ``max_abs_diff`` = max |TQ*eps - FQ|
  (output units), ``mismatches`` = outputs with ``TQ != round(FQ/eps)``, and ``diff_histogram``
  (``{TQ - round(FQ/eps): count}``), and ``per_layer``: every requantiser fed FQ's own input codes
  on the first `LAYERWISE_IMAGES` images (`qlspec.export.layerwise`), where F2T's promise of at most
  1 LSB is checked; end to end, one such flip before the last linear layer moves an output by a weight.

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

from qlspec.errors import StageError
from qlspec.evaluation import landmarks_from_outputs, load_split, load_stats, nme_row
from qlspec.export import fake_to_true, histogram, run_engine, run_onnxruntime, write_flavour
from qlspec.export.layerwise import layerwise_summary
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

    net = fake_to_true(fq, requant_bits=spec.export.requant_bits, input_shape=(1, *x.shape[1:]))
    q = net.quantise_input(x)
    out = net.run(x, batch=BATCH)  # rung TQ: F2T's graph, run by the reference engine
    with torch.no_grad():
        y = torch.cat([fq(x[s:s + BATCH]) for s in range(0, len(x), BATCH)]).double().numpy()
    eps = np.broadcast_to(net.output_eps, out.shape[1:]).astype(np.float64)
    z = out * eps
    diff = out - np.round(y / eps)
    np.savez(ctx.out / "tq_outputs.npz", output=out, z=z.astype(np.float32))
    save_graph(net.graph, ctx.out / "graph")

    spec_hash = digest_json(spec.model_dump(mode="json"))
    n = min(VECTORS, len(q))
    checks = {}
    for flavour in ("deeploy", "dory"):
        path = write_flavour(net, ctx.out / flavour, flavour, q[:n], out[:n], spec_hash=spec_hash)
        got = run_engine(path, q[:n], input_bits=net.input_info.bits, input_signed=net.input_info.signed)
        bad = int((got != out[:n]).sum())
        if bad:
            raise StageError(f"the reference engine differs from TQ on {bad} of {out[:n].size} outputs", where=str(path))
        checks[flavour] = {"engine_vs_tq_mismatches": bad, "n": n}
    # onnxruntime computes in float32, which cannot hold every product exactly: a count, not a claim
    ort = run_onnxruntime(onnx.load(ctx.out / "dory" / "network.onnx"), q)
    checks["dory"]["onnxruntime_vs_tq_mismatches"] = int((np.rint(ort).astype(np.int64) != out).sum())
    checks["dory"]["onnxruntime_outputs"] = int(out.size)

    per_layer = layerwise_summary(fq, net, x[:LAYERWISE_IMAGES])
    row = nme_row("TQ", landmarks_from_outputs(z, stats, load_face_model(ctx.inputs["data"])), faces,
                  max_abs_diff=float(np.abs(z - y).max()), mismatches=int((diff != 0).sum()),
                  diff_histogram=histogram(diff), outputs=int(diff.size), output_lsb_max_diff=int(np.abs(diff).max()),
                  per_layer={**per_layer, "images": min(LAYERWISE_IMAGES, len(x))})
    write_rungs(ctx.out, [row])
    (ctx.out / "export.json").write_text(json.dumps({
        "primary": spec.export.flavour, "requant_bits": net.requant_bits, "spec_hash": spec_hash,
        "input_eps": net.input_eps, "output_eps": net.output_eps.tolist(), "nodes": net.graph.op_counts(),
        "self_check": checks,
    }, indent=1) + "\n")
    ctx.log(f"  TQ NME {row['nme']:.2f}%; per requantiser {per_layer['differing']} of {per_layer['values']} values differ "
            f"from FQ (max {per_layer['max_lsb']} LSB); end to end {row['mismatches']} of {diff.size} outputs differ from "
            f"round(FQ/eps) (max {row['output_lsb_max_diff']} LSB); engine == TQ on both flavours")
