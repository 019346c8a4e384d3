"""The C++ AI application checked against the Python pipeline on photos (stage verify).

`write_photos` turns validation faces into photo files a user could give the app: each face is
resized (`resize_bilinear`) to a random size and pasted into a larger noisy frame, saved as PNG or
JPEG, with a crop box around it whose edges are random non-integers, so decoding, box rounding,
cutting (zeros outside the frame) and resampling in both directions are all exercised.
`python_codes` and `python_landmarks` are the Python pipeline on the same files: Pillow decodes,
`crop_image` cuts and resizes, `integer_inputs` quantises; the landmarks come from the app's own
integer outputs through `FaceModel.landmarks` and `from_crop`, in float64.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qlspec.data.crop import crop_image, from_crop, resize_bilinear, round_roi
from qlspec.data.real import read_bgr

#: Largest allowed difference between the app's landmarks and Python's, in photo pixels: both are
#: float64 sums of the same terms in another order (measured about 1e-13).
LANDMARK_TOLERANCE_PX = 1e-6


@dataclass(frozen=True)
class Photo:
    path: Path
    roi: np.ndarray  # [sx, sy, ex, ey], float64, as given to the app (it rounds, as Python does)


def write_photos(faces_bgr: np.ndarray, folder: Path, seed: int = 0) -> list[Photo]:
    """One photo file per face (uint8 ``(N, H, W, 3)`` BGR), alternately PNG and JPEG (quality 90)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = []
    for i, face in enumerate(faces_bgr):
        side = int(rng.integers(80, 241))
        scaled = resize_bilinear(face, side, side)
        h, w = side + int(rng.integers(10, 120)), side + int(rng.integers(10, 120))
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        frame[y : y + side, x : x + side] = scaled
        margin = rng.uniform(-0.15, 0.25, 4) * side
        roi = np.array([x - margin[0], y - margin[1], x + side + margin[2], y + side + margin[3]])
        path = folder / f"photo_{i:04d}.{'png' if i % 2 == 0 else 'jpg'}"
        options: dict[str, Any] = {} if i % 2 == 0 else {"quality": 90}
        Image.fromarray(frame[..., ::-1]).save(path, **options)
        photos.append(Photo(path, roi))
    return photos


def app_arguments(photos: list[Photo]) -> list[str]:
    """qlspec-app's command-line arguments for these photos (each with its crop box)."""
    args: list[str] = []
    for p in photos:
        args += ["--roi", ",".join(repr(float(v)) for v in p.roi), str(p.path)]
    return args


def python_codes(photos: list[Photo], input_meta: dict, transform, size: int) -> np.ndarray:
    """The Python pipeline's network input codes for the photos, ``(N, 3, size, size)``."""
    from qlspec.stages.convert import integer_inputs

    crops = np.stack([crop_image(read_bgr(p.path), p.roi, size) for p in photos])
    return np.asarray(integer_inputs(crops, input_meta, transform))


def python_landmarks(outputs: np.ndarray, photos: list[Photo], eps, data_dir: Path, size: int) -> np.ndarray:
    """68 landmarks per photo ``(N, 68, 2)`` in photo pixels, from the integer outputs, in float64."""
    from qlspec.evaluation import load_stats
    from qlspec.face.store import load_face_model

    z = np.asarray(outputs, np.int64) * np.asarray(eps, np.float64)
    crop = load_face_model(data_dir).landmarks(load_stats(data_dir).denormalise(z))[:, :2]
    return np.stack([from_crop(c, round_roi(p.roi), size).T for c, p in zip(crop, photos)])


def read_app_landmarks(folder: Path) -> np.ndarray:
    """The app's landmarks.json as ``(N, 68, 2)``."""
    data = json.loads((folder / "landmarks.json").read_text())
    return np.asarray([im["landmarks"] for im in data["images"]], np.float64)


def check_app_outputs(
    codes: np.ndarray,
    outputs: np.ndarray,
    landmarks_json: dict,
    photos: list[Photo],
    *,
    graph,
    input_meta: dict,
    output_eps,
    transform,
    size: int,
    data_dir: Path,
) -> dict:
    """The app's results on `photos` against the Python pipeline: input codes against Python's
    pre-processing, outputs against GRAPH run on the app's own codes, landmarks against Python's
    post-processing of the app's outputs. Returns the counts and the largest landmark difference."""
    from qlspec.engine.run import run_graph

    expected = python_codes(photos, input_meta, transform, size)
    x = graph.inputs[0]
    graph_out = run_graph(graph, {x: np.asarray(codes).astype(graph.tensors[x].dtype)})[graph.outputs[0]]
    got = np.asarray([im["landmarks"] for im in landmarks_json["images"]], np.float64)
    names = [p.path.name for p in photos]
    return {
        "photos": len(photos),
        "png": sum(n.endswith(".png") for n in names),
        "jpeg": sum(n.endswith(".jpg") for n in names),
        "input_codes": int(expected.size),
        "preprocess_mismatches": int((np.asarray(codes, np.int64) != expected).sum()),
        "network_outputs": int(np.asarray(outputs).size),
        "network_mismatches_vs_graph": int((graph_out.reshape(np.shape(outputs)).astype(np.int64) != outputs).sum()),
        "landmark_max_abs_diff_px": float(np.abs(got - python_landmarks(outputs, photos, output_eps, data_dir, size)).max()),
        "landmark_tolerance_px": LANDMARK_TOLERANCE_PX,
    }


def app_failure(report: dict, exact: bool) -> str | None:
    """Why these app results break the contract, or None: any input code that differs, any network
    output that differs (unless the output stage is not exact), landmarks beyond the tolerance."""
    pre, net, diff = report["preprocess_mismatches"], report["network_mismatches_vs_graph"], report["landmark_max_abs_diff_px"]
    if pre or (exact and net) or not diff <= LANDMARK_TOLERANCE_PX:
        return (
            f"the app differs from the Python pipeline: {pre} input codes, {net if exact else 0} network outputs, "
            f"landmarks by {diff:.3g} px (tolerance {LANDMARK_TOLERANCE_PX:g})"
        )
    return None
