"""PNG pictures for report.md: valid, the expected pixel size, small, deterministic, input-sensitive."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qlspec.plots import landmark_overlays, merge_identical, nme_by_yaw_chart, ptq_vs_qat_chart

PNG = b"\x89PNG\r\n\x1a\n"


def _faces(n: int = 5, seed: int = 0, noise: bool = False):
    rng = np.random.default_rng(seed)
    if noise:  # incompressible: exercises the palette fallback
        images = rng.integers(0, 256, (n, 120, 120, 3), dtype=np.uint8)
    else:  # photo-like: smooth gradients and a little noise
        _, xx = np.mgrid[0:120, 0:120]
        base = np.stack([(xx + 20 * k) % 256 for k in range(n)])[..., None] + np.array([0, 40, 90])
        images = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    gt = rng.uniform(20, 100, (n, 2, 68)).astype(np.float32)
    preds = {
        "float": gt + rng.normal(0, 2, gt.shape),
        "int8 PTQ": gt + rng.normal(0, 3, gt.shape),
        "int4 PACT": gt + rng.normal(0, 4, gt.shape),
    }
    return images, gt, preds


def _check_png(path, size: tuple[int, int]) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG) and 1000 < len(data) < 300_000
    with Image.open(path) as im:
        assert im.size == size
    return data


def test_merge_identical_joins_equal_rungs_in_order():
    a, b = np.zeros((2, 3)), np.ones((2, 3))
    merged = merge_identical({"FP": b, "TQ": a, "ONNX": a.copy(), "GRAPH": a + 0, "FQ": a[:1]})
    assert list(merged) == ["FP", "TQ = ONNX = GRAPH", "FQ"]
    assert merge_identical({"x": a, "y": a + 1e-12}).keys() == {"x", "y"}  # exact equality only


def test_landmark_overlays_one_rung_per_column(tmp_path):
    images, gt, preds = _faces()
    a = landmark_overlays(images, gt, preds, tmp_path / "a.png", n=4)  # 4 rows x 3 rung columns
    data = _check_png(a, (3 * 160, 4 * 160 + 30))
    assert landmark_overlays(images, gt, preds, tmp_path / "b.png", n=4).read_bytes() == data
    moved = {k: v + 5 for k, v in preds.items()}
    assert landmark_overlays(images, gt, moved, tmp_path / "c.png", n=4).read_bytes() != data
    same = {"FP": preds["float"], "TQ": preds["int8 PTQ"], "ONNX": preds["int8 PTQ"].copy()}
    _check_png(landmark_overlays(images, gt, same, tmp_path / "s.png", n=2), (2 * 160, 2 * 160 + 30))  # TQ = ONNX: one column
    one = landmark_overlays(images, gt, {}, tmp_path / "d.png", n=1, title="GT only")
    _check_png(one, (160, 160 + 55))
    noisy, gt, preds = _faces(noise=True)
    _check_png(landmark_overlays(noisy, gt, preds, tmp_path / "noisy.png"), (480, 670))
    with pytest.raises(ValueError, match="preds"):
        landmark_overlays(images, gt, {"bad": gt[:2]}, tmp_path / "e.png")


def test_nme_by_yaw_chart_has_a_difference_panel(tmp_path):
    rows = {
        "float": {"[0,30]": 0.031, "(30,60]": 0.042, ">60": 0.061, "mean": 0.045},
        "int8 PTQ": {"[0,30]": 0.032, "(30,60]": 0.043, ">60": 0.063, "mean": 0.046},
        "int4 PACT": {"[0,30]": 0.035, "(30,60]": 0.047, ">60": float("nan"), "mean": 0.041},
    }
    a = nme_by_yaw_chart(rows, tmp_path / "nme.png")
    data = _check_png(a, (2 * 495, 330))  # two panels: NME per bin, difference against the first rung
    assert nme_by_yaw_chart(rows, tmp_path / "again.png").read_bytes() == data
    rows["int4 PACT"]["mean"] = 0.05
    assert nme_by_yaw_chart(rows, tmp_path / "other.png").read_bytes() != data
    _check_png(nme_by_yaw_chart({"float": rows["float"]}, tmp_path / "one.png"), (495, 330))  # nothing to compare
    same = {"float": rows["float"], "TQ": rows["int8 PTQ"], "ONNX": dict(rows["int8 PTQ"])}
    three = {"float": rows["float"], "TQ": rows["int8 PTQ"], "int4": rows["int4 PACT"]}
    assert nme_by_yaw_chart(same, tmp_path / "same.png").read_bytes() != nme_by_yaw_chart(three, tmp_path / "three.png").read_bytes()
    with pytest.raises(ValueError, match="empty"):
        nme_by_yaw_chart({}, tmp_path / "x.png")


def test_ptq_vs_qat_chart(tmp_path):
    results = {"PTQ (max)": {8: 0.076, 4: 0.19}, "QAT (PACT)": {8: 0.075, 4: 0.095}}
    a = ptq_vs_qat_chart(results, tmp_path / "q.png", float_nme=0.075, baseline_nme=0.196)
    data = _check_png(a, (round(max(4.0, 1.2 * 2 + 1.5) * 110), 330))
    assert ptq_vs_qat_chart(results, tmp_path / "q2.png", float_nme=0.075, baseline_nme=0.196).read_bytes() == data
    assert ptq_vs_qat_chart(results, tmp_path / "q3.png", float_nme=0.07).read_bytes() != data
