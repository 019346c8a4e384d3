"""`qlspec run`: the built AI application on the user's photos, and the photos with their landmarks drawn.

The app (`qlspec-app`, from the build stage) runs under qemu-aarch64 as a Cortex-A72 here (natively
on an aarch64 machine); it decodes each photo, crops it (the whole photo, or the box given with
--roi), runs the network and writes 68 landmarks per photo in photo pixels. This module only draws
them: each photo is written again as PNG with the crop box and the landmarks on it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from qlspec import atomic
from qlspec.codegen.build import APP, run_app
from qlspec.codegen.toolchain import toolchain_for
from qlspec.errors import QlspecError


def parse_roi(text: str) -> list[float]:
    """--roi SX,SY,EX,EY -> four finite numbers with EX > SX and EY > SY."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)) or values[2] <= values[0] or values[3] <= values[1]:
        raise QlspecError(f"must be SX,SY,EX,EY with EX > SX and EY > SY (got {text!r})", where="--roi")
    return values


def run_on_photos(
    build_dir: Path,
    photos: list[Path],
    out_dir: Path,
    *,
    backend: str = "armcl",
    roi: list[float] | None = None,
    threads: int = 1,
    cpu: str = "cortex-a72",
) -> list[Path]:
    """Run the app that `build_dir`'s build stage built for `backend` on `photos`; writes
    `out_dir`/landmarks.json and one ``<stem>_landmarks.png`` per photo; returns those pictures."""
    app = build_dir / "build" / backend / "bin" / APP
    if not app.is_file():
        raise QlspecError("the application is not built: run `qlspec apply` first", where=str(app))
    for p in photos:
        if not p.is_file():
            raise QlspecError("no such photo", where=str(p))
    arguments = (["--roi", ",".join(repr(v) for v in roi)] if roi else []) + [str(p.resolve()) for p in photos]
    result = run_app(app, arguments, toolchain_for(backend), threads=threads, cpu=cpu)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(
        out_dir / "landmarks.json",
        {**result.landmarks_json, "images": [{**im, "image": str(p)} for im, p in zip(result.landmarks_json["images"], photos)]},
    )
    pictures = []
    used: set[str] = set()
    for photo, found in zip(photos, result.landmarks_json["images"]):
        name = f"{photo.stem}_landmarks"
        while name in used:
            name += "_"
        used.add(name)
        pictures.append(draw(photo, np.asarray(found["landmarks"]), found["roi"], out_dir / f"{name}.png"))
    return pictures


def draw(photo: Path, landmarks: np.ndarray, roi: list[float], out: Path) -> Path:
    """`photo` with the crop box (blue) and the landmarks (green dots) drawn, as PNG at `out`."""
    from PIL import Image, ImageDraw

    from qlspec.data.real import read_bgr  # decoded as the app decodes it (16-bit grey too)

    picture = Image.fromarray(np.ascontiguousarray(read_bgr(photo)[:, :, ::-1]))
    pen = ImageDraw.Draw(picture)
    radius = max(1.0, min(picture.size) / 160)
    pen.rectangle([roi[0], roi[1], roi[2] - 1, roi[3] - 1], outline=(40, 120, 255), width=max(1, int(radius)))
    for x, y in landmarks:
        pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(0, 255, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic.write_bytes(out, buffer.getvalue())
    return out
