"""The C++ application's photo decoding, cropping and resizing (backends/app) against the Python
pipeline (`read_bgr` + `crop_image`), on generated photos, boxes and file formats, and on files an
attacker would send. A native test harness (app_harness.cpp) calls the same functions as qlspec-app."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from qlspec.data.crop import crop_image
from qlspec.data.real import read_bgr

APP = Path(__file__).resolve().parents[2] / "backends" / "app"
HARNESS = Path(__file__).with_name("app_harness.cpp")


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    if shutil.which("g++") is None:
        pytest.skip("no host C++ compiler (scripts/install.sh installs it)")
    binary = tmp_path_factory.mktemp("harness") / "app_harness"
    r = subprocess.run(
        [
            "g++",
            "-O2",
            "-std=c++14",
            "-ffp-contract=off",
            "-Wall",
            "-Werror",
            f"-I{APP}",
            str(HARNESS),
            str(APP / "qlspec_app.cpp"),
            str(APP / "qlspec_image.cpp"),
            "-lpng16",
            "-ljpeg",
            "-o",
            str(binary),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return binary


def crop_cpp(harness: Path, photo: Path, roi, size: int, tmp: Path) -> np.ndarray:
    out = tmp / "crop.raw"
    box = "full" if roi is None else ",".join(repr(float(v)) for v in roi)
    r = subprocess.run([str(harness), str(photo), box, str(size), str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return np.frombuffer(out.read_bytes(), np.uint8).reshape(size, size, 3)[..., ::-1]  # RGB -> BGR, as read_bgr


MODES = (
    "RGB",
    "RGBA",
    "L",
    "LA",
    "P",
    "PA",
    "1",
    "RGB-jpeg-444",
    "RGB-jpeg-420",
    "L-jpeg",
    "RGB-png-interlaced",
    "RGB;16",
    "L;16",
    "LA;16",
)
PNG16 = {"RGB;16": 2, "L;16": 0, "LA;16": 4}  # 16-bit PNGs by colour type (Pillow cannot write them)


def save(rgb: np.ndarray, mode: str, path: Path) -> Path:
    """`rgb` (uint8 H x W x 3) as a file of this kind."""
    im = Image.fromarray(rgb)
    if mode in PNG16:  # 16-bit samples whose high byte is the 8-bit value: the app and read_bgr keep it
        import zlib

        h, w, _ = rgb.shape
        grey = np.asarray(im.convert("L"))[:, :, None]
        samples = {"RGB;16": rgb, "L;16": grey, "LA;16": np.concatenate([grey, 255 - grey], axis=2)}[mode]
        rows = b"".join(b"\0" + (row.astype(np.uint16) * 256 + 7).astype(">u2").tobytes() for row in samples)

        def chunk(kind: bytes, data: bytes) -> bytes:
            return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

        path = path.with_suffix(".png")
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, PNG16[mode], 0, 0, 0]))
            + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b"")
        )
        return path
    if mode.endswith("-jpeg-444") or mode.endswith("-jpeg-420") or mode == "L-jpeg":
        path = path.with_suffix(".jpg")
        base = im.convert("L") if mode.startswith("L") else im
        options: dict[str, Any] = {"subsampling": 0} if mode.endswith("444") else {"subsampling": 2} if mode.endswith("420") else {}
        base.save(path, quality=85, **options)
        return path
    path = path.with_suffix(".png")
    if mode == "RGB-png-interlaced":
        im.save(path, interlace=1)
    elif mode == "P":
        im.quantize(64).save(path)
    elif mode == "PA":
        pal = im.quantize(32)
        pal.info["transparency"] = 3
        pal.save(path, transparency=3)
    else:
        im.convert(mode).save(path)
    return path


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    size=st.sampled_from([1, 7, 32, 120]),
    mode=st.sampled_from(MODES),
    box=st.one_of(st.none(), st.tuples(st.floats(-60, 80), st.floats(-60, 80), st.floats(1, 150), st.floats(1, 150))),
    seed=st.integers(0, 2**32 - 1),
)
def test_generated_photos_crop_to_the_same_pixels_as_python(harness, tmp_path, h, w, size, mode, box, seed):
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)), np.ones((4, 4, 1)))[:h, :w]
    rgb = np.clip(smooth + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    photo = save(rgb, mode, tmp_path / "photo")
    roi = None if box is None else [box[0], box[1], box[0] + box[2], box[1] + box[3]]
    if roi is not None and (round(roi[2]) <= round(roi[0]) or round(roi[3]) <= round(roi[1])):
        return  # an empty box after rounding: refused by both (test_empty_boxes_are_refused)
    expected = crop_image(read_bgr(photo), np.array(roi or [0, 0, w, h], np.float64), size)
    got = crop_cpp(harness, photo, roi, size, tmp_path)
    assert np.array_equal(got, expected), f"{mode} {h}x{w} roi {roi} size {size}: {int((got != expected).sum())} bytes differ"


def test_empty_boxes_are_refused(harness, tmp_path):
    photo = save(np.zeros((8, 8, 3), np.uint8), "RGB", tmp_path / "p")
    for box in ("3,3,3.4,9", "5,5,2,9", "1e300,0,2e300,5", "nan,0,4,4"):
        r = subprocess.run([str(harness), str(photo), box, "8", str(tmp_path / "o")], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, (box, r.stderr)


def hostile_files(tmp: Path) -> dict[str, bytes]:
    good_png = save(np.full((16, 16, 3), 9, np.uint8), "RGB", tmp / "good").read_bytes()
    good_jpg = save(np.full((16, 16, 3), 9, np.uint8), "RGB-jpeg-444", tmp / "good").read_bytes()
    cmyk = tmp / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (1, 2, 3, 4)).save(cmyk)
    huge = bytearray(good_png)
    huge[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")  # IHDR width, height (CRC now wrong too)
    return {
        "empty": b"",
        "text": b"hello, not a photo\n",
        "png-signature-only": good_png[:8],
        "truncated-png": good_png[: len(good_png) // 2],
        "truncated-jpeg": good_jpg[: len(good_jpg) // 2],
        "jpeg-header-only": good_jpg[:20],
        "cmyk-jpeg": cmyk.read_bytes(),
        "huge-png-header": bytes(huge),
        "png-flipped-bits": bytes(b ^ 0x55 if 40 < i < 60 else b for i, b in enumerate(good_png)),
    }


def test_hostile_files_are_one_line_errors(harness, tmp_path):
    for name, data in hostile_files(tmp_path).items():
        photo = tmp_path / f"{name}.bin"
        photo.write_bytes(data)
        r = subprocess.run([str(harness), str(photo), "full", "8", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (name, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(photo) in lines[0], (name, r.stderr)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=400), cut=st.integers(0, 2000), flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=6)
)
def test_mutated_photos_never_crash_the_decoder(harness, tmp_path, data, cut, flips):
    base = bytearray(
        save(
            np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3), "RGB-jpeg-420" if cut % 2 else "RGB", tmp_path / "seed"
        ).read_bytes()
    )
    for at, bits in flips:
        base[at % len(base)] ^= bits
    photo = tmp_path / "mutated.bin"
    photo.write_bytes(bytes(base[:cut]) + data if cut < len(base) else bytes(base) + data)
    r = subprocess.run([str(harness), str(photo), "full", "8", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 2), r.returncode  # decoded, or refused: never a signal
    if r.returncode == 2:
        assert len(r.stderr.strip().splitlines()) == 1


def test_drawn_pictures_show_a_16_bit_grey_photo_as_the_app_saw_it(tmp_path):
    """`qlspec run` draws on the photo as decoded for the app, not on Pillow's clipped copy."""
    from qlspec.photos_run import draw

    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    photo = save(np.repeat(grey[:, :, None], 3, axis=2), "L;16", tmp_path / "grey")
    picture = np.asarray(Image.open(draw(photo, np.empty((0, 2)), [0, 0, 8, 8], tmp_path / "drawn.png")).convert("RGB"))
    assert np.array_equal(picture[1:7, 1:7, 0], grey[1:7, 1:7])  # inside the box's 1-pixel outline
    assert np.array_equal(read_bgr(photo)[:, :, 0], grey)
