"""Pictures for report.md: landmark overlays per rung, NME per yaw bin, PTQ versus QAT.

Every function writes one PNG (atomically: a temp file, then a rename) and returns its path. Figures
are drawn on matplotlib's Agg canvas through `matplotlib.figure.Figure` (no pyplot, no global
backend switch, no GUI), with fixed sizes, fonts and colours and no timestamp or software tag in the
file, so the same inputs give the same bytes on the same matplotlib and Pillow versions. Each stays
under `MAX_PNG_BYTES` (300 KB): RGB, and palette-encoded if a noisy photo would make it larger.

NME values are fractions, as `qlspec.metrics.nme` gives them; the charts print percent (x 100), the
unit papers use (3DDFA_V2 mb1 on AFLW2000-3D: 3.51).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from qlspec import atomic

__all__ = ["MAX_PNG_BYTES", "landmark_overlays", "nme_by_yaw_chart", "ptq_vs_qat_chart"]

#: Size above which a picture is re-encoded with a colour palette.
MAX_PNG_BYTES = 300_000

_GT_COLOUR = "#00e000"
# Colour-blind-safe (Okabe-Ito) for rungs, in order; cycled if there are more.
_RUNG_COLOURS = ("#e69f00", "#56b4e9", "#cc79a7", "#f0e442", "#0072b2", "#d55e00", "#009e73", "#999999")
_RC = {"font.size": 8, "font.family": "DejaVu Sans", "axes.titlesize": 8, "legend.fontsize": 7}


def _colour(i: int) -> str:
    return _RUNG_COLOURS[i % len(_RUNG_COLOURS)]


def _save(fig: Figure, path: str | os.PathLike[str], dpi: int) -> Path:
    """Render at `dpi`, write an RGB PNG; if that exceeds `MAX_PNG_BYTES` (photos full of noise), a
    256-, then 64-colour palette PNG (median cut, no dithering: deterministic)."""
    from PIL import Image  # noqa: PLC0415  (PIL comes with matplotlib)

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[:, :, :3].copy(), "RGB")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = rgb
    for colours in (256, 64, None):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        if buf.tell() <= MAX_PNG_BYTES or colours is None:
            break
        image = rgb.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    atomic.write_bytes(path, buf.getvalue())
    return path


def landmark_overlays(
    images: np.ndarray,
    gt: np.ndarray,
    preds: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    n: int = 8,
    *,
    cols: int = 4,
    title: str | None = None,
) -> Path:
    """A grid of `n` face crops with ground-truth and each rung's 68 points, and a legend.

    Args:
        images: uint8 ``(N, S, S, 3)`` **BGR** crops (a `FaceSet`'s ``images``).
        gt: ``(N, >=2, 68)`` ground-truth points, rows x, y in crop pixels (0-based, y down).
        preds: rung name -> ``(N, >=2, 68)`` predicted points in the same frame, in legend order.
        path: the PNG to write.
        n: how many images: ``min(n, N)``, evenly spaced over the set (first and last included).
        cols: grid columns.
        title: optional figure title.

    Ground truth is drawn as green dots on top, each rung as small crosses in its own colour; the
    68 points of the jaw, brows, nose, eyes and lips are not joined by lines (they would hide the
    face at 120 pixels). Points outside the crop are clipped by the axes.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, S, S, 3), got {images.shape}")
    total = len(images)
    gt = np.asarray(gt, np.float64)
    if gt.shape[0] != total or gt.ndim != 3 or gt.shape[1] < 2:
        raise ValueError(f"gt must be ({total}, >=2, K), got {gt.shape}")
    pred_arrays = {name: np.asarray(p, np.float64) for name, p in preds.items()}
    for name, p in pred_arrays.items():
        if p.shape[0] != total or p.ndim != 3 or p.shape[1] < 2 or p.shape[2] != gt.shape[2]:
            raise ValueError(f"preds[{name!r}] must be ({total}, >=2, {gt.shape[2]}), got {p.shape}")
    count = max(1, min(n, total))
    index = np.unique(np.round(np.linspace(0, total - 1, count)).astype(int))
    cols = max(1, min(cols, len(index)))
    rows = math.ceil(len(index) / cols)
    h, w = images.shape[1:3]
    panel = 2.0
    legend_h = 0.35 + 0.15 * ((len(pred_arrays) + 1) // 4)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(cols * panel, rows * panel + legend_h + (0.3 if title else 0)))
        axes = fig.subplots(rows, cols, squeeze=False)
        marker = 2.6  # points; a panel is 2 inches whatever the crop size
        for k, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if k >= len(index):
                continue
            i = int(index[k])
            ax.imshow(images[i][:, :, ::-1], interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            for j, p in enumerate(pred_arrays.values()):
                ax.plot(p[i, 0], p[i, 1], "x", ms=marker + 0.8, mew=0.8, color=_colour(j), ls="none")
            ax.plot(gt[i, 0], gt[i, 1], "o", ms=marker, mfc=_GT_COLOUR, mec="black", mew=0.3, ls="none", zorder=3)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_title(f"#{i}", pad=1)
        handles = [Line2D([], [], marker="o", ls="none", mfc=_GT_COLOUR, mec="black", label="ground truth")]
        handles += [
            Line2D([], [], marker="x", ls="none", color=_colour(j), label=name) for j, name in enumerate(pred_arrays)
        ]
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), frameon=False)
        if title:
            fig.suptitle(title)
        bottom = legend_h / fig.get_figheight()
        top = 1 - (0.42 if title else 0.12) / fig.get_figheight()
        fig.subplots_adjust(left=0.01, right=0.99, bottom=bottom, top=top, wspace=0.04, hspace=0.12)
    return _save(fig, path, dpi=100)


def nme_by_yaw_chart(
    rows: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    title: str = "NME by |yaw| bin (3DDFA protocol)",
) -> Path:
    """Grouped bar chart: one group per bin (the first row's keys, e.g. ``[0,30]``, ``(30,60]``, ``>60``,
    ``mean``), one bar per rung (`rows` order), height = NME x 100 (percent), value printed on top.

    Args:
        rows: rung name -> {bin label -> NME as a fraction}; a missing or NaN value leaves a gap
            (e.g. an empty bin).
        path: the PNG to write.
        title: the chart title.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to chart")
    bins = list(next(iter(rows.values())).keys())
    for row in rows.values():
        bins += [b for b in row if b not in bins]
    n_rungs = len(rows)
    width = 0.8 / n_rungs
    x = np.arange(len(bins), dtype=np.float64)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(max(4.5, 1.1 * len(bins) + 0.15 * n_rungs * len(bins)), 3.0))
        ax = fig.add_subplot()
        top = 0.0
        for j, (rung, row) in enumerate(rows.items()):
            vals = np.array([100.0 * float(row.get(b, math.nan)) for b in bins])
            pos = x - 0.4 + width * (j + 0.5)
            ok = np.isfinite(vals)
            bars = ax.bar(pos[ok], vals[ok], width * 0.92, color=_colour(j), label=rung)
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
            if ok.any():
                top = max(top, float(vals[ok].max()))
        ax.set_xticks(x, [f"|yaw| {b}" if b != "mean" else "mean" for b in bins])
        ax.set_ylabel("NME (%)")
        ax.set_ylim(0, top * 1.18 if top > 0 else 1)
        ax.set_title(title)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, ncol=min(4, n_rungs), loc="upper left")
        fig.tight_layout()
    return _save(fig, path, dpi=110)


def ptq_vs_qat_chart(
    results: Mapping[str, Mapping[int, float]],
    path: str | os.PathLike[str],
    *,
    float_nme: float | None = None,
    baseline_nme: float | None = None,
    title: str = "NME by weight/activation bits: PTQ vs QAT",
) -> Path:
    """Grouped bars of NME (percent) per bit width, one bar per method, with reference lines.

    Args:
        results: method name (e.g. ``"PTQ (max)"``, ``"QAT (PACT)"``) -> {bits -> NME fraction}.
        path: the PNG to write.
        float_nme: the float model's NME (fraction), drawn as a solid horizontal line.
        baseline_nme: the mean-parameter predictor's NME (fraction), drawn dashed: a rung at or
            above it has learnt nothing.
        title: the chart title.
    """
    if not results:
        raise ValueError("results is empty: nothing to chart")
    bits = sorted({int(b) for row in results.values() for b in row}, reverse=True)
    n = len(results)
    width = 0.8 / n
    x = np.arange(len(bits), dtype=np.float64)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(max(4.0, 1.2 * len(bits) + 1.5), 3.0))
        ax = fig.add_subplot()
        top = 0.0
        for j, (method, row) in enumerate(results.items()):
            vals = np.array([100.0 * float(row.get(b, math.nan)) for b in bits])
            ok = np.isfinite(vals)
            bars = ax.bar((x - 0.4 + width * (j + 0.5))[ok], vals[ok], width * 0.92, color=_colour(j), label=method)
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
            if ok.any():
                top = max(top, float(vals[ok].max()))
        for value, style, label in ((float_nme, "-", "float"), (baseline_nme, "--", "mean-parameter baseline")):
            if value is not None and math.isfinite(value):
                ax.axhline(100.0 * value, color="#444444", ls=style, lw=1, label=label)
                top = max(top, 100.0 * value)
        ax.set_xticks(x, [f"{b} bit" for b in bits])
        ax.set_ylabel("NME (%)")
        ax.set_ylim(0, top * 1.25 if top > 0 else 1)
        ax.set_title(title)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=6, loc="upper left", ncol=2)
        fig.tight_layout()
    return _save(fig, path, dpi=110)
