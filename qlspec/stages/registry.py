"""The fixed stage graph: what each stage reads from the spec, consumes and is made of.

    data -> train -> quantise -> export -> convert -> build -> verify -> deploy
                   +-> compare (PTQ vs QAT; only when compare.algorithms is set)

A stage whose `run` is None is not built yet: `plan` and `apply` report it and everything after it as
"not available yet" and stop there with exit status 0.
"""

from __future__ import annotations

from qlspec.stages.engine import StageDef

STAGES: tuple[StageDef, ...] = (
    StageDef(
        name="data",
        summary="render or read the training and validation images",
        reads=("data", "preprocess.size", "network.param_stats"),
        after=(),
        run="qlspec.stages.data:run",
        files=("data.root", "data.val_root", "data.bfm", "data.param_stats", "network.param_stats"),
    ),
    StageDef(
        name="train",
        rungs=("MEAN", "FP"),
        summary="train the float network (rung FP)",
        reads=("network", "training", "preprocess", "postprocess"),
        after=("data",),
        run="qlspec.stages.train:run",
        resumable=True,
        files=("network.pretrained",),
    ),
    StageDef(
        name="quantise",
        rungs=("FQ", "FQI"),
        summary="PACT quantisation-aware training or PTQ calibration (rungs FQ and FQI)",
        reads=("quantisation", "training", "network", "preprocess", "export.requant_bits", "export.headroom", "verify.samples"),
        after=("data", "train"),
        run="qlspec.stages.quantise:run",
        resumable=True,
        enabled=lambda spec: "quantisation.algorithm is none" if spec.quantisation.algorithm == "none" else None,
    ),
    StageDef(
        name="compare",
        summary="PTQ vs PACT QAT at each bit-width, from the same float network",
        reads=("compare", "quantisation", "training", "network", "preprocess", "export.requant_bits", "export.headroom", "verify.samples"),
        after=("data", "train"),
        run="qlspec.stages.compare:run",
        resumable=True,
        enabled=lambda spec: None if spec.compare.algorithms else "compare.algorithms is empty",
    ),
    StageDef(
        name="export",
        rungs=("TQ",),
        summary="fake-to-true integerisation and QuantLab-format ONNX (rung TQ)",
        reads=("export", "quantisation.bits", "quantisation.ptq.samples", "verify.samples", "preprocess"),
        after=("data", "quantise"),
        run="qlspec.stages.export:run",
    ),
    StageDef(
        name="convert",
        rungs=("ONNX", "GRAPH"),
        summary="QuantLab ONNX -> optimised qlspec graph, run by the reference engine (rungs ONNX, GRAPH)",
        reads=("export.flavour", "preprocess"),
        after=("data", "export"),
        run="qlspec.stages.convert:run",
    ),
    StageDef(
        name="build",
        summary="generate the ARM Compute Library project (network and AI app) and cross-build it for the board",
        reads=("target.backend", "target.cpu", "target.board", "target.output_stage", "preprocess", "export.flavour"),
        after=("data", "export", "convert"),
        run="qlspec.stages.build:run",
        assets=("backends/armcl", "backends/app"),
        enabled=lambda spec: "target.backend is reference (nothing to build)" if spec.target.backend == "reference" else None,
    ),
    StageDef(
        name="verify",
        rungs=("ARMCL", "CPU"),
        summary="run the built app under qemu as a Cortex-A72 (backend cpu: here) against GRAPH (rung ARMCL or CPU)",
        reads=("verify.samples", "verify.emulator", "preprocess", "export.flavour", "target.backend", "target.cpu", "target.output_stage"),
        after=("data", "export", "convert", "build"),
        run="qlspec.stages.verify:run",
        enabled=lambda spec: (
            "target.backend is reference (nothing to verify)"
            if spec.target.backend == "reference"
            else "verify.emulator is board (the deploy stage runs rung BOARD)"
            if spec.verify.emulator == "board" and spec.target.backend == "armcl"
            else None
        ),
    ),
    StageDef(
        name="deploy",
        rungs=("BOARD",),
        summary="push the built app to the board with fabric, run it there against GRAPH (rung BOARD)",
        reads=("deploy", "target.output_stage", "verify.samples", "preprocess", "export.flavour"),
        after=("data", "export", "convert", "build"),
        run="qlspec.stages.deploy:run",
        enabled=lambda spec: (
            "deploy.enabled is false"
            if not spec.deploy.enabled
            else f"target.backend is {spec.target.backend} (only armcl builds for the board)"
            if spec.target.backend != "armcl"
            else None
        ),
    ),
)
