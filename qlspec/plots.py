"""Pictures for report.md: landmarks one rung per panel, NME per yaw bin and its difference between
rungs, PTQ versus QAT.

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
import itertools
import math
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qlspec import atomic

__all__ = ["MAX_PNG_BYTES", "landmark_overlays", "merge_identical", "nme_by_yaw_chart", "ptq_vs_qat_chart"]

#: Size above which a picture is re-encoded with a colour palette.
MAX_PNG_BYTES = 300_000

_GT_COLOUR = "#00e000"
# Colour-blind-safe (Okabe-Ito) for rungs, in order; cycled if there are more.
_RUNG_COLOURS = ("#e69f00", "#56b4e9", "#cc79a7", "#f0e442", "#0072b2", "#d55e00", "#009e73", "#999999")
_RC: dict[Any, Any] = {"font.size": 8, "font.family": "DejaVu Sans", "axes.titlesize": 8, "legend.fontsize": 7}


def _colour(i: int) -> str:
    return _RUNG_COLOURS[i % len(_RUNG_COLOURS)]


def _save(fig: Figure, path: str | os.PathLike[str], dpi: int) -> Path:
    """Render at `dpi`, write an RGB PNG; if that exceeds `MAX_PNG_BYTES` (photos full of noise), a
    256-, then 64-colour palette PNG (median cut, no dithering: deterministic)."""
    from PIL import Image

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


def merge_identical(preds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rungs whose arrays are exactly equal (same shape, every value) share one entry, keyed by their
    names joined with `` = `` in `preds` order (``"TQ = ONNX = GRAPH"``); first appearance decides
    the order."""
    merged: dict[str, np.ndarray] = {}
    for name, value in preds.items():
        same = next((k for k, v in merged.items() if v.shape == value.shape and np.array_equal(v, value)), None)
        if same is None:
            merged[name] = value
        else:
            merged[f"{same} = {name}"] = merged.pop(same)
    return merged


def landmark_overlays(
    images: np.ndarray,
    gt: np.ndarray,
    preds: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    n: int = 4,
    *,
    title: str | None = None,
) -> Path:
    """Small multiples: one row per face crop, one column per rung, each panel that rung's 68 points
    (crosses) over the ground truth (green dots), and its mean point-to-point error in pixels.

    Args:
        images: uint8 ``(N, S, S, 3)`` **BGR** crops (a `FaceSet`'s ``images``).
        gt: ``(N, >=2, 68)`` ground-truth points, rows x, y in crop pixels (0-based, y down).
        preds: rung name -> ``(N, >=2, 68)`` predicted points in the same frame, in column order.
            Rungs with exactly equal points share a column (`merge_identical`); no rungs: one
            ground-truth column.
        path: the PNG to write.
        n: how many images (rows): ``min(n, N)``, evenly spaced over the set (first and last included).
        title: optional figure title.

    Column titles name the rung(s); the number in a panel's corner is the mean over the 68 points of
    the Euclidean distance to ground truth, in crop pixels. Points outside the crop are clipped.
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
    columns: dict[str, np.ndarray | None] = {**merge_identical(pred_arrays)} or {"ground truth": None}
    index = np.unique(np.round(np.linspace(0, total - 1, max(1, min(n, total)))).astype(int))
    h, w = images.shape[1:3]
    names = {name: textwrap.fill(name, 22) for name in columns}  # "FQI = TQ = ONNX = GRAPH" on two lines
    panel, head = 1.6, 0.17 + 0.13 * max(t.count("\n") + 1 for t in names.values()) + (0.25 if title else 0)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(len(columns) * panel, len(index) * panel + head))
        axes = fig.subplots(len(index), len(columns), squeeze=False)
        for (r, i), (c, (name, p)) in itertools.product(enumerate(index), enumerate(columns.items())):
            ax = axes[r, c]
            ax.set_axis_off()
            ax.imshow(images[i][:, :, ::-1], interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            ax.plot(gt[i, 0], gt[i, 1], "o", ms=2.4, mfc=_GT_COLOUR, mec="black", mew=0.3, ls="none")
            if p is not None:
                ax.plot(p[i, 0], p[i, 1], "x", ms=3.2, mew=0.8, color=_colour(c), ls="none", zorder=3)
                err = float(np.hypot(*(p[i, :2] - gt[i, :2])).mean())
                ax.text(
                    0.03,
                    0.03,
                    f"{err:.1f} px",
                    transform=ax.transAxes,
                    fontsize=6,
                    color="white",
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "lw": 0},
                )
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            if r == 0:
                ax.set_title(names[name], pad=2)
        if title:
            fig.suptitle(title)
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - head / fig.get_figheight(), wspace=0.04, hspace=0.04)
    return _save(fig, path, dpi=100)


def nme_by_yaw_chart(
    rows: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    title: str = "NME by |yaw| bin (3DDFA protocol)",
) -> Path:
    """Two panels over the same bins (the first row's keys, then any new ones, e.g. ``[0,30]``,
    ``(30,60]``, ``>60``, ``mean of bins``). Left: NME x 100 (percent) per bin, one line per rung.
    Right: each later rung's NME minus the first rung's (the reference, e.g. FP), per bin, in
    percentage points, as bars labelled with the signed value. Rungs with exactly equal values in
    every bin share one line and one bar (`merge_identical`). With a single rung (after merging) the
    right panel is left out.

    Args:
        rows: rung name -> {bin label -> NME as a fraction}; a missing or NaN value leaves a gap
            (e.g. an empty bin).
        path: the PNG to write.
        title: the figure title.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to chart")
    bins = list(next(iter(rows.values())).keys())
    for row in rows.values():
        bins += [b for b in row if b not in bins]
    pct = merge_identical({rung: np.array([100.0 * float(row.get(b, math.nan)) for b in bins]) for rung, row in rows.items()})
    names, values = list(pct), list(pct.values())
    x = np.arange(len(bins), dtype=np.float64)
    labels = [f"|yaw| {b}" if b[0] in "[(>" else b for b in bins]
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(max(4.5, 1.1 * len(bins)) * (2 if len(names) > 1 else 1), 3.0))
        axes = fig.subplots(1, 2 if len(names) > 1 else 1, squeeze=False)[0]
        for j, (name, vals) in enumerate(pct.items()):
            axes[0].plot(x, vals, marker="o", ms=3, lw=1.2, color=_colour(j), label=name)
        axes[0].set_ylabel("NME (%)")
        axes[0].set_title("NME per bin")
        if len(names) > 1:
            ax, width = axes[1], 0.8 / (len(names) - 1)
            for j, (name, vals) in enumerate(zip(names[1:], values[1:]), start=1):
                diff = vals - values[0]
                ok = np.isfinite(diff)
                bars = ax.bar((x - 0.4 + width * (j - 0.5))[ok], diff[ok], width * 0.92, color=_colour(j), label=name)
                ax.bar_label(bars, fmt="%+.3f", fontsize=6, padding=1)
            ax.axhline(0, color="#444444", lw=0.8)
            ax.set_ylabel(f"NME minus {names[0]} (percentage points)")
            ax.set_title(f"difference against {names[0]}")
            ax.margins(y=0.25)
        for ax in axes:
            ax.set_xticks(x, labels)
            ax.spines[["top", "right"]].set_visible(False)
            ax.legend(frameon=False, fontsize=6, loc="best")
        fig.suptitle(title)
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
