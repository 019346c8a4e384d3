"""report.md: the ladder table first (the README's columns), the graph summary and the requantisers
from the build's JSON, and the README's table in step with the report's labels."""

from __future__ import annotations

import json
from pathlib import Path

from qlspec.report import DESCRIPTIONS, graph_section, images_note, ladder_table, render_markdown, row, rung_labels, weight_count
from qlspec.spec.load import load_spec

ROOT = Path(__file__).resolve().parents[1]
LADDER_HEADER = "| rung | NME % | against the rung above |"


def _rows(n_integer: int = 1000) -> list[dict]:
    return [
        row("MEAN", nme=21.5612, n=1000),
        row("FP", nme=7.4271, n=1000),
        row("FQ", nme=7.4438, n=1000, max_abs_diff=0.53213),
        row("FQI", nme=7.4429, n=1000, max_abs_diff=0.23159, outputs=62000),
        row("TQ", nme=7.4429, n=n_integer, max_abs_diff=0.0, mismatches=0, outputs=62000),
        row("GRAPH", nme=7.4429, n=n_integer, max_abs_diff=0.0, mismatches=0, outputs=62000),
        row("ARMCL", nme=7.4429, n=n_integer, max_abs_diff=0.0, mismatches=3, outputs=62000),
        row("BOARD", nme=7.4429, n=n_integer, max_abs_diff=0.0, mismatches=0, outputs=62000),
    ]


def _tables(md: str) -> list[list[str]]:
    """The markdown tables of `md`, each as its lines, in order."""
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_md_leads_with_the_ladder_table_and_ends_with_the_stages():
    md = render_markdown(
        "app", _rows(), {"train": "up to date", "build": "will run"}, {"Graph": "graph body", "Requantisers (int32)": "rq body"}
    )
    lines = md.splitlines()
    assert lines[0] == "# app: verification report" and lines[2] == LADDER_HEADER
    first = _tables(md)[0]
    assert [line.split(" | ")[0] for line in first[2:]] == [
        f"| {r} ({DESCRIPTIONS[r]})" for r in ("MEAN", "FP", "FQ", "FQI", "TQ", "GRAPH", "ARMCL", "BOARD")
    ]
    assert first[2] == "| MEAN (always the mean parameters) | 21.56 | |"  # nothing to compare with: empty cell
    assert first[4] == "| FQ (float fake-quantisation) | 7.44 | max abs diff 0.532 |"
    assert first[6] == "| TQ (F2T's integer graph, reference engine) | 7.44 | 0 mismatches of 62,000 |"
    assert first[8].endswith("| 7.44 | 3 mismatches of 62,000 |")
    assert first[9].endswith("| 7.44 | 0 mismatches of 62,000 against GRAPH |")  # BOARD: checked against GRAPH, not ARMCL
    titles = [line for line in lines if line.startswith("## ")]
    assert titles == ["## Graph", "## Requantisers (int32)", "## Stages"]
    assert lines[-2:] == ["- train: up to date", "- build: will run"]


def test_images_note_says_which_rungs_saw_how_many_images():
    assert images_note(_rows()) == "Images: 1000 validation images for every rung."
    assert images_note(_rows(16)) == (
        "Images: MEAN, FP, FQ, FQI 1000; TQ, GRAPH, ARMCL, BOARD 16 validation images (NMEs on different images are not comparable)."
    )


def test_rung_labels_come_from_the_spec():
    spec = load_spec(ROOT / "examples" / "3ddfa-synthetic" / "app.yaml").spec
    labels = rung_labels(spec)
    assert labels["FP"] == "float MobileNet-V1 x0.5" and labels["FQ"] == "PACT w8a8, float fake-quantisation"
    ptq = spec.model_copy(update={"quantisation": spec.quantisation.model_copy(update={"algorithm": "ptq"})})
    assert rung_labels(ptq)["FQ"].startswith("PTQ w8a8")


def test_readme_shows_the_reports_ladder_table():
    """The README's results table has the report's columns and the default app's rung labels."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Set up and run") : readme.index("\n## ", readme.index("## Set up and run") + 1)]
    table = _tables(section)[0]
    assert table[0] == LADDER_HEADER
    labels = rung_labels(load_spec(ROOT / "examples" / "3ddfa-synthetic" / "app.yaml").spec)
    names = [line.split(" | ")[0][2:] for line in table[2:]]
    report_names = [
        line.split(" | ")[0][2:]
        for line in ladder_table([row(r, nme=1.0, n=1) for r in ("MEAN", "FP", "FQ", "FQI", "TQ", "ONNX", "GRAPH", "ARMCL")], labels)[2:]
    ]
    assert names == report_names


GRAPH = {
    "constants": [
        {"name": "conv.weight", "key": "c0"},
        {"name": "rq.mul", "key": "c1"},
        {"name": "fc.weight", "key": "c2"},
        {"name": "fc.bias", "key": "c3"},
    ],
    "tensors": {
        "x": {"shape": [1, 3, 8, 8], "bits": 8},
        "conv.weight": {"shape": [4, 3, 3, 3], "bits": 8},
        "rq.mul": {"shape": [4, 1, 1], "bits": 16},
        "y": {"shape": [1, 4, 8, 8], "bits": 8},
        "fc.weight": {"shape": [2, 4], "bits": 16},
        "fc.bias": {"shape": [2], "bits": 32},
        "m": {"shape": [4, 4], "bits": 8},
    },
    "nodes": [
        {"op": "ConvRequant", "inputs": ["x", "conv.weight", "", "rq.mul", ""]},
        {"op": "Gemm", "inputs": ["y", "fc.weight", "fc.bias"]},
        {"op": "MatMul", "inputs": ["y", "m"]},
    ],  # an activation, not a weight
}


def test_weight_count_counts_the_constant_kernels_only():
    assert weight_count(GRAPH) == (4 * 3 * 3 * 3 + 2 * 4, 4 * 3 * 3 * 3 + 2 * 4 * 2)


def test_graph_section_takes_its_numbers_from_the_convert_stage(tmp_path):
    summary = {
        "nodes": 3,
        "op_counts": {"ConvRequant": 1, "Gemm": 1, "MatMul": 1},
        "macs": 46_464_064,
        "weight_bytes": 873_924,
        "activation_bytes_naive": 795_384,
        "activation_bytes_planned": 172_800,
        "activation_bytes_lower_bound": 172_000,
        "inputs": {"x": "i8[1x3x8x8]"},
        "outputs": {"out": "i32[1x2]"},
    }
    parsed = {**summary, "nodes": 58, "activation_bytes_planned": 576_000, "activation_bytes_naive": 3_794_936}
    (tmp_path / "graph").mkdir()
    (tmp_path / "summary.json").write_text(json.dumps({"parsed": parsed, "optimised": summary}))
    (tmp_path / "graph" / "graph.json").write_text(json.dumps(GRAPH))
    text = graph_section(tmp_path)
    table = dict(_cells(line) for line in _tables(text)[0][2:])
    assert table["MACs"] == "46,464,064"
    assert table["weights (Conv and Gemm kernels)"] == "116 values, 124 bytes"
    assert table["peak activation memory with the memory plan"] == "172,800 bytes (lower bound 172,000)"
    assert table["activation memory without reuse"] == "795,384 bytes"
    assert table["all constants (weights, biases, requantiser multipliers and offsets)"] == "873,924 bytes"
    assert "before optimisation: 58 nodes, peak activation memory 576,000 bytes" in text


def test_requantiser_section_shows_the_int32_check_and_the_per_requantiser_table(tmp_path):
    from qlspec.pipeline import requantiser_section

    (tmp_path / "export.json").write_text(
        json.dumps(
            {
                "int32_check": {"mismatches": 0, "values": 750_400_000, "min_headroom": 2.048},
                "self_check": {"dory": {"onnxruntime_vs_tq_mismatches": 12_064, "onnxruntime_outputs": 62_000}},
            }
        )
    )
    (tmp_path / "requantisers.md").write_text(
        "| requantiser | source | D | mul bits | observed headroom | worst-case headroom |\n"
        "|---|---|---|---|---|---|\n| relu | relu | 21 | 4-12 | 3.58x | 3.51x |\n"
    )
    text = requantiser_section(tmp_path)
    assert "0 of 750,400,000 values differ" in text and "12,064 of 62,000 outputs differ from TQ" in text
    assert _tables(text)[0][2] == "| relu | relu | 21 | 4-12 | 3.58x | 3.51x |"
