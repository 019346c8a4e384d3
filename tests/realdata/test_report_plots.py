"""PNG pictures for report.md: valid, the expected pixel size, small, deterministic, input-sensitive."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qlspec.plots import landmark_overlays, nme_by_yaw_chart, ptq_vs_qat_chart

PNG = b"\x89PNG\r\n\x1a\n"


def _faces(n: int = 5, seed: int = 0, noise: bool = False):
    rng = np.random.default_rng(seed)
    if noise:  # incompressible: exercises the palette fallback
        images = rng.integers(0, 256, (n, 120, 120, 3), dtype=np.uint8)
    else:  # photo-like: smooth gradients and a little noise
        yy, xx = np.mgrid[0:120, 0:120]
        base = np.stack([(xx + 20 * k) % 256 for k in range(n)])[..., None] + np.array([0, 40, 90])
        images = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    gt = rng.uniform(20, 100, (n, 2, 68)).astype(np.float32)
    preds = {"float": gt + rng.normal(0, 2, gt.shape), "int8 PTQ": gt + rng.normal(0, 3, gt.shape),
             "int4 PACT": gt + rng.normal(0, 4, gt.shape)}
    return images, gt, preds


def _check_png(path, size: tuple[int, int]) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG) and 1000 < len(data) < 300_000
    with Image.open(path) as im:
        assert im.size == size
    return data


def test_landmark_overlays(tmp_path):
    images, gt, preds = _faces()
    a = landmark_overlays(images, gt, preds, tmp_path / "a.png", n=8)  # 5 images -> 4 x 2 grid
    data = _check_png(a, (800, round((2 * 2.0 + 0.35 + 0.15) * 100)))
    assert landmark_overlays(images, gt, preds, tmp_path / "b.png", n=8).read_bytes() == data
    moved = {k: v + 5 for k, v in preds.items()}
    assert landmark_overlays(images, gt, moved, tmp_path / "c.png", n=8).read_bytes() != data
    one = landmark_overlays(images, gt, {}, tmp_path / "d.png", n=1, title="GT only")
    assert one.read_bytes().startswith(PNG)
    noisy, gt, preds = _faces(noise=True)
    _check_png(landmark_overlays(noisy, gt, preds, tmp_path / "noisy.png"), (800, 450))
    with pytest.raises(ValueError, match="preds"):
        landmark_overlays(images, gt, {"bad": gt[:2]}, tmp_path / "e.png")


def test_nme_by_yaw_chart(tmp_path):
    rows = {"float": {"[0,30]": 0.031, "(30,60]": 0.042, ">60": 0.061, "mean": 0.045},
            "int8 PTQ": {"[0,30]": 0.032, "(30,60]": 0.043, ">60": 0.063, "mean": 0.046},
            "int4 PACT": {"[0,30]": 0.035, "(30,60]": 0.047, ">60": float("nan"), "mean": 0.041}}
    a = nme_by_yaw_chart(rows, tmp_path / "nme.png")
    data = _check_png(a, (int(round(max(4.5, 1.1 * 4 + 0.15 * 3 * 4) * 110)), 330))
    assert nme_by_yaw_chart(rows, tmp_path / "again.png").read_bytes() == data
    rows["float"]["mean"] = 0.05
    assert nme_by_yaw_chart(rows, tmp_path / "other.png").read_bytes() != data
    with pytest.raises(ValueError, match="empty"):
        nme_by_yaw_chart({}, tmp_path / "x.png")


def test_ptq_vs_qat_chart(tmp_path):
    results = {"PTQ (max)": {8: 0.076, 4: 0.19}, "QAT (PACT)": {8: 0.075, 4: 0.095}}
    a = ptq_vs_qat_chart(results, tmp_path / "q.png", float_nme=0.075, baseline_nme=0.196)
    data = _check_png(a, (int(round(max(4.0, 1.2 * 2 + 1.5) * 110)), 330))
    assert ptq_vs_qat_chart(results, tmp_path / "q2.png", float_nme=0.075, baseline_nme=0.196).read_bytes() == data
    assert ptq_vs_qat_chart(results, tmp_path / "q3.png", float_nme=0.07).read_bytes() != data
