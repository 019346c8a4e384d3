"""The `qlspec` command line: thin commands over the API; `main` is the only place errors are caught.

Exit status: 0 success; 1 `plan --check` found work to do; 2 a user error (bad spec, missing file,
unsupported ONNX, ...) or an I/O failure (full disk, read-only or unwritable path), printed as one
line per error with its location. Anything else is a bug and keeps its traceback.

Output never interprets what users wrote: the consoles take no markup (names like ``[/x]`` print as
written; qlspec's own styling is passed explicitly with user text escaped) and control characters
(terminal escape sequences in a node name) are printed as ``\\xNN``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from qlspec import __version__
from qlspec.errors import QlspecError

app = typer.Typer(
    name="qlspec",
    help="One declarative spec -> a PACT-quantised, integerised, verified edge application.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: object) -> str:
    """`text` with control characters shown as ``\\xNN`` (nothing reaches the terminal raw)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


class _Console(Console):
    """A console that prints strings verbatim (no markup unless asked) and without control characters."""

    def print(self, *objects, markup: bool | None = None, **kwargs) -> None:
        super().print(*(clean(o) if isinstance(o, str) else o for o in objects), markup=bool(markup), **kwargs)


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)

SpecArg = Annotated[Path, typer.Argument(help="The application spec (YAML).", show_default=False)]
BuildDir = Annotated[Path, typer.Option("--build-dir", help="Root of the build folders; outputs go to BUILD_DIR/<name>/<stage>/.")]
Until = Annotated[str | None, typer.Option("--until", help="Stop after this stage.")]
TrustNewHostKey = Annotated[
    bool,
    typer.Option(
        "--trust-new-host-key",
        help="Accept a board's host key not yet in deploy.known_hosts, and add it there (a changed key is always refused).",
    ),
]

STATE_STYLE = {"up to date": "green", "will run": "yellow", "not available yet": "dim", "skipped": "dim"}


def _version(value: bool) -> None:
    if value:
        out.print(f"qlspec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False) -> None:
    """qlspec: spec -> trained, quantised, integerised, converted, built, verified, deployed."""


@app.command()
def validate(specs: Annotated[list[Path], typer.Argument(help="One or more application specs (YAML).", show_default=False)]) -> None:
    """Check specs: each error as FILE:LINE:COL: field.path: message (exit 2 if any spec has one)."""
    from qlspec.errors import SpecError
    from qlspec.spec.load import load_spec
    from qlspec.spec.named_files import check_named_files

    failed: list[tuple[str | None, str]] = []
    for spec in specs:
        try:
            loaded = load_spec(spec)
            check_named_files(loaded)  # a checkpoint that does not fit the network fails here, not in train
        except SpecError as e:
            failed += e.errors
            continue
        extra = f" (extends {', '.join(loaded.spec.extends)})" if loaded.spec.extends else ""
        out.print(f"ok: {spec} is a valid qlspec/v1 spec for '{loaded.spec.name}'{extra}")
    if failed:
        raise SpecError.many(failed)


@app.command()
def schema(output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file instead of stdout.")] = None) -> None:
    """Print the JSON Schema of the spec (for editor completion)."""
    from qlspec.spec.schema import schema_text

    text = schema_text()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


def _apply(pipe, **kwargs):
    """`qlspec.pipeline.apply`. When torchrun started this command, every rank gets here: rank 0 runs
    the stages, the other ranks join its training jobs and then exit with its status
    (`qlspec.training.distributed.crew`)."""
    from qlspec import pipeline as api
    from qlspec.training.torchrun import started_by_torchrun

    if not started_by_torchrun():
        return api.apply(pipe, **kwargs)
    from qlspec.training.distributed import crew

    with crew(pipe.spec.training.distributed) as role:
        if not role.main:
            if role.exit_code:  # else this node's only line would be torchrun's own: say whose error it is
                import os
                import socket

                who = f"rank {os.environ.get('RANK', '?')} on {socket.gethostname()}"
                err.print(
                    Text.assemble(
                        ("error: ", "red"), f"{who}: rank 0 stopped the apply (exit status {role.exit_code}): its output says why"
                    )
                )
            raise typer.Exit(role.exit_code)
        return api.apply(pipe, **kwargs)


@app.command()
def plan(
    spec: SpecArg,
    build_dir: BuildDir = Path("build"),
    until: Until = None,
    force: Annotated[list[str] | None, typer.Option("--force", help="Treat this stage as stale (repeatable).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if any stage would run.")] = False,
) -> None:
    """Show each stage's state (up to date / will run / not available yet) and why."""
    from qlspec.pipeline import open_pipeline

    statuses = open_pipeline(spec, build_dir).plan(force=force or (), until=until)
    for status in statuses:
        _print_status(status)
    if check and any(s.state == "will run" for s in statuses):
        raise typer.Exit(1)


@app.command()
def apply(
    spec: SpecArg,
    build_dir: BuildDir = Path("build"),
    until: Until = None,
    force: Annotated[list[str] | None, typer.Option("--force", help="Rerun this stage even if up to date (repeatable).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    trust_new_host_key: TrustNewHostKey = False,
) -> None:
    """Run every stale stage of the spec in order, then write build/<name>/report.md."""
    from qlspec import pipeline as api

    pipe = api.open_pipeline(spec, build_dir)
    final = _apply(
        pipe,
        until=until,
        force=force or (),
        progress=progress,
        on_status=_stage_printer(),
        log=out.print,
        options={"trust_new_host_key": trust_new_host_key},
    )
    out.print(f"report: {pipe.build_dir / 'report.md'}")
    pending = [s.stage.name for s in final if s.state == "not available yet"]
    if pending:
        out.print(f"[dim]not available yet in qlspec {__version__}: {', '.join(pending)}[/dim]", markup=True)


@app.command()
def deploy(
    spec: SpecArg,
    build_dir: BuildDir = Path("build"),
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Make the previous release current again; builds and uploads nothing.")
    ] = False,
    trust_new_host_key: TrustNewHostKey = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Push the built app to the board in the spec's deploy section, run it there and check it against
    GRAPH (rung BOARD), whether or not deploy.enabled is set; stale stages before it run first."""
    from qlspec import pipeline as api
    from qlspec.stages.engine import Pipeline

    pipe = api.open_pipeline(spec, build_dir)
    target = pipe.spec.deploy
    if rollback:
        from qlspec.deploy import rollback as roll_back

        was, now = roll_back(target, spec.parent, trust_new_host_key=trust_new_host_key)
        out.print(f"current release on {target.user}@{target.host}:{target.port}: {now} (was {was})")
        return
    enabled = pipe.spec.model_copy(update={"deploy": target.model_copy(update={"enabled": True})})
    pipe = Pipeline(pipe.stages, enabled, pipe.spec_path, pipe.build_root)
    final = _apply(
        pipe,
        until="deploy",
        force=["deploy"],
        progress=progress,
        on_status=_stage_printer(),
        log=out.print,
        options={"trust_new_host_key": trust_new_host_key},
    )
    skipped = next(s for s in final if s.stage.name == "deploy")
    if skipped.state != "up to date":
        raise QlspecError(f"deploy did not run: {'; '.join(skipped.reasons)}", where=str(spec))
    out.print(f"report: {pipe.build_dir / 'report.md'}")


@app.command()
def run(
    spec: SpecArg,
    photos: Annotated[list[Path], typer.Argument(help="Photos (PNG or JPEG).", show_default=False)],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Folder for the pictures and landmarks.json (default: BUILD_DIR/<name>/run).")
    ] = None,
    roi: Annotated[
        str | None, typer.Option("--roi", help="Crop box SX,SY,EX,EY in photo pixels, for every photo (default: the whole photo).")
    ] = None,
    build_dir: BuildDir = Path("build"),
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Run the built AI application on photos (under qemu as a Cortex-A72; backend cpu: natively) and draw their 68 landmarks."""
    from qlspec import pipeline as api
    from qlspec.photos_run import parse_roi, run_on_photos

    box = parse_roi(roi) if roi is not None else None
    pipe = api.open_pipeline(spec, build_dir)
    if pipe.spec.target.backend == "reference":
        raise QlspecError("target.backend is reference: there is no application to run (use armcl or cpu)", where=str(spec))
    _apply(pipe, until="build", progress=progress, on_status=_quiet_unless_running(), log=out.print)
    folder = output or pipe.build_dir / "run"
    pictures = run_on_photos(
        pipe.build_dir,
        photos,
        folder,
        backend=pipe.spec.target.backend,
        roi=box,
        threads=pipe.spec.target.threads,
        cpu=pipe.spec.target.cpu,
    )
    for photo, picture in zip(photos, pictures):
        out.print(f"{photo} -> {picture}")
    out.print(f"landmarks: {folder / 'landmarks.json'}")


@app.command()
def compare(
    spec: SpecArg,
    build_dir: BuildDir = Path("build"),
    algorithm: Annotated[
        list[str] | None, typer.Option("--algorithm", help="ptq or pact (repeatable); default: the spec's compare.algorithms, else both.")
    ] = None,
    bits: Annotated[
        list[int] | None,
        typer.Option("--bits", help="Bit-width for weights and activations (repeatable); default: the spec's compare.bits."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """PTQ vs PACT QAT from the same float network at each bit-width: a table and a chart."""
    from qlspec import pipeline as api
    from qlspec.spec.models import Compare
    from qlspec.stages.engine import Pipeline

    pipe = api.open_pipeline(spec, build_dir)
    current = pipe.spec.compare
    chosen = {"algorithms": algorithm or current.algorithms or ["ptq", "pact"], "bits": bits or current.bits}
    try:
        section = Compare.model_validate(chosen)
    except ValidationError as e:
        first = e.errors()[0]
        raise QlspecError(
            f"{'.'.join(map(str, first['loc']))}: {first['msg']} (got {first.get('input')!r})", where="qlspec compare"
        ) from None
    pipe = Pipeline(pipe.stages, pipe.spec.model_copy(update={"compare": section}), pipe.spec_path, pipe.build_root)
    _apply(pipe, only="compare", progress=progress, on_status=_stage_printer(), log=out.print)
    out.print((pipe.build_dir / "compare" / "compare.md").read_text())
    out.print(f"chart: {pipe.build_dir / 'compare' / 'compare.png'}")


@app.command()
def diff(
    specs: Annotated[
        list[str], typer.Argument(help="OLD NEW; or SPEC with --against; or git's 7 arguments with --git.", show_default=False)
    ],
    against: Annotated[str | None, typer.Option("--against", help="Compare SPEC with itself at this git revision.")] = None,
    git: Annotated[bool, typer.Option("--git", help="Act as git's external diff driver (see the README).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="text, json or markdown (a table for a pull request).")] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Semantic diff of two specs (extends and defaults applied) and the stages each change invalidates."""
    from qlspec.spec.diff import render_markdown, rerun_summary, spec_diff
    from qlspec.spec.load import load_spec
    from qlspec.stages.registry import STAGES

    fmt = "json" if as_json else fmt
    if fmt not in ("text", "json", "markdown"):
        raise QlspecError(f"unknown format {fmt!r} (text, json or markdown)", where="--format")
    title = "qlspec diff"
    if git:
        from qlspec.spec.revisions import from_git_driver

        path, old, new = from_git_driver(specs)
        title = f"qlspec diff {path}"
        if old is None or new is None:
            out.print(f"{title}: {'new' if old is None else 'deleted'} spec")
            return
        out.print(f"{title}")
    elif against is not None:
        from qlspec.spec.revisions import at_revision

        if len(specs) != 1:
            raise QlspecError("--against REV takes one spec", where="qlspec diff")
        with at_revision(Path(specs[0]), against) as old_path:
            old = load_spec(old_path)
        new = load_spec(Path(specs[0]))
        title = f"qlspec diff {specs[0]} against {against}"
    else:
        if len(specs) != 2:
            raise QlspecError(f"needs OLD and NEW specs (got {len(specs)})", where="qlspec diff")
        old, new = load_spec(Path(specs[0])), load_spec(Path(specs[1]))
    changes = spec_diff(old, new, STAGES)
    if fmt == "json":
        typer.echo(json.dumps([c.__dict__ for c in changes], indent=2))
        return
    if fmt == "markdown":
        typer.echo(render_markdown(changes, STAGES, title, new.spec), nl=False)
        return
    if not changes:
        out.print("no semantic changes")
        return
    for c in changes:
        stages = ", ".join(c.stages) if c.stages else "none"
        effect = "" if c.effect == "result" else f" ({c.effect} only)" if not c.stages else f" ({c.effect})"
        out.print(
            f"{escape(c.path)}: {escape(_json(c.old))} -> {escape(_json(c.new))}   [dim]invalidates: {stages}{effect}[/dim]", markup=True
        )
        if c.path == "name":
            out.print(
                f"  [dim]the build folder becomes build/{escape(str(c.new))}: move build/{escape(str(c.old))} there to keep "
                "what is built[/dim]",
                markup=True,
            )
    out.print(f"{len(changes)} change(s); stages to rerun: {escape(rerun_summary(changes, STAGES, new.spec))}")


@app.command()
def new(
    extra: Annotated[list[str] | None, typer.Argument(help="Template values as key=value (name, width, quantisation, board).")] = None,
    no_input: Annotated[bool, typer.Option("--no-input", help="Do not prompt; take defaults and key=value pairs.")] = False,
    output_dir: Annotated[Path, typer.Option("-o", "--output-dir", help="Where the new application folder is created.")] = Path("."),
) -> None:
    """Scaffold a new AI application folder (cookiecutter template)."""
    from qlspec.scaffold import scaffold

    folder = scaffold(extra or [], no_input=no_input, output_dir=output_dir)
    out.print(f"created {folder}; next: qlspec validate {folder / 'app.yaml'}")


InputPrecision = Annotated[
    str | None,
    typer.Option(
        "--input",
        metavar="uint8|int8|int32",
        help="Precision of the model's integer input (an ONNX file does not carry it). "
        "Default: what a side file beside the model declares (qlspec's metadata.json, DORY's config_*.json), else int32.",
    ),
]
SideConfig = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A side JSON declaring the input precision, whatever its name: DORY's (input_bits, input_signed) "
        "or qlspec's export metadata.json (input: {name, bits, signed}). Not with --input.",
    ),
]


@app.command()
def convert(
    model: Annotated[Path, typer.Argument(help="A QuantLab-exported ONNX file (Deeploy or DORY flavour).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the qlspec graph (graph.json + constants.npz).")],
    no_optimise: Annotated[bool, typer.Option("--no-optimise", help="Write the graph as parsed, without passes.")] = False,
    input_precision: InputPrecision = None,
    config: SideConfig = None,
) -> None:
    """Convert QuantLab ONNX into the qlspec integer graph, optimise it, and print a summary."""
    from qlspec.graph.io import save_graph
    from qlspec.graph.passes import optimise
    from qlspec.graph.summary import summarise
    from qlspec.modelio import input_precision as precision_of
    from qlspec.onnx_import import import_onnx

    types, source = precision_of(model, input_precision, config)
    graph = import_onnx(model, input_types=types)
    if not no_optimise:
        graph = optimise(graph)
    save_graph(graph, output)
    out.print(summarise(graph).to_text())
    out.print(f"input precision from {source}")
    out.print(f"wrote {output}")


@app.command()
def infer(
    model: Annotated[Path, typer.Argument(help="A qlspec graph folder or a QuantLab ONNX file.")],
    inputs: Annotated[Path, typer.Option("--inputs", help="An .npz of integer inputs, matched by name or order.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the outputs (.npz).")],
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="reference: the numpy engine; armcl: the generated ARM "
            "Compute Library C++, cross-built and run under qemu-aarch64 as a Cortex-A72; "
            "cpu: the same C++ without ACL, built and run on this machine.",
        ),
    ] = "reference",
    threads: Annotated[int, typer.Option("--threads", min=1, max=64, help="Threads for --backend armcl (ACL's scheduler).")] = 1,
    project: Annotated[Path | None, typer.Option("--project", help="Keep the generated project in this folder.")] = None,
    input_precision: InputPrecision = None,
    config: SideConfig = None,
    expect: Annotated[
        Path | None,
        typer.Option(
            "--expect",
            help="A reference .npz to compare the outputs with, by the model's output names, else in order; exit 1 if any value differs.",
        ),
    ] = None,
) -> None:
    """Run the integer graph: with the reference engine (exact integer semantics) or a generated backend."""
    from qlspec.engine.run import run_graph
    from qlspec.modelio import compare_outputs, load_model, read_inputs, write_outputs
    from qlspec.modelio import input_precision as precision_of

    if backend not in ("reference", "armcl", "cpu"):
        raise QlspecError(f"unknown backend {backend!r} (reference, armcl or cpu)", where="--backend")
    if model.is_dir() and (input_precision is not None or config is not None):
        raise QlspecError("a graph folder carries its input precision: --input and --config apply to an .onnx model", where=str(model))
    graph = load_model(model, None if model.is_dir() else precision_of(model, input_precision, config)[0])
    feeds = read_inputs(inputs, graph)
    if backend == "reference":
        results = run_graph(graph, feeds)
    else:
        from qlspec.codegen.run import run_generated

        results = run_generated(graph, feeds, backend=backend, threads=threads, folder=project)
    write_outputs(output, results)
    for name, value in results.items():
        out.print(f"{name}: {value.dtype} {tuple(value.shape)}")
    out.print(f"wrote {output}")
    if expect is not None:
        rows = compare_outputs(results, expect)
        for name, key, differ, total in rows:
            out.print(f"{name} vs {expect}[{key}]: {differ} of {total} values differ")
        if any(differ for _, _, differ, _ in rows):
            raise typer.Exit(1)


def _stage_printer():
    """An `on_status` callback printing one line per stage event, with timings."""
    started: dict[str, float] = {}

    def on_status(status, event: str) -> None:
        name = status.stage.name
        if event == "start":
            started[name] = time.perf_counter()
            out.print(
                f"[bold]{name:<9}[/bold] running: {status.stage.summary} [dim]({escape('; '.join(status.reasons))})[/dim]", markup=True
            )
        elif event == "done":
            out.print(f"[bold]{name:<9}[/bold] [green]done[/green] in {time.perf_counter() - started[name]:.1f} s", markup=True)
        else:
            _print_status(status)

    return on_status


def _quiet_unless_running():
    """An `on_status` callback that prints only the stages that run."""
    printer = _stage_printer()

    def on_status(status, event: str) -> None:
        if event != "pass":
            printer(status, event)

    return on_status


def _print_status(status) -> None:
    style = STATE_STYLE[status.state]
    reasons = f"  [dim]({escape('; '.join(status.reasons))})[/dim]" if status.reasons else ""
    out.print(f"[bold]{status.stage.name:<9}[/bold] [{style}]{status.state}[/{style}]{reasons}", markup=True)


def _json(value) -> str:
    return json.dumps(value)


def main() -> None:
    """Console entry point: a user error becomes one line per error on stderr and exit status 2."""
    try:
        app()
    except QlspecError as e:
        for line in str(e).splitlines():
            err.print(Text.assemble(("error: ", "red"), clean(line)))
        raise SystemExit(2) from None
    except OSError as e:  # a full disk, a read-only folder, an unwritable or missing path: the environment, not a bug
        where = f"{e.filename}: " if e.filename else ""
        err.print(Text.assemble(("error: ", "red"), clean(f"{where}{e.strerror or e.__class__.__name__}")))
        raise SystemExit(2) from None
