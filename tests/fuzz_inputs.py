"""Seeded malformed inputs for the fuzz test: broken and odd images, masks, VIA JSON and Pascal VOC XML.

Each input knows what the data check must make of it: ``fatal`` (a fatal problem that names it),
``warning`` (a warning that names it) or ``ok`` (read without complaint); images that cannot be decoded
are also the ones ``predict`` skips.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FATAL, WARNING, OK = "fatal", "warning", "ok"


@dataclass(frozen=True)
class Input:
    """One generated file: where it lies below the data root, what it is and what the check must say."""

    path: str
    kind: str
    expect: str

    @property
    def is_image(self) -> bool:
        return not self.path.startswith("masks/")


def _gray(rng: np.random.Generator, h: int | None = None, w: int | None = None) -> np.ndarray:
    h = h or int(rng.integers(24, 48))
    w = w or int(rng.integers(24, 48))
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` gray pixels, with a few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def jpeg_bomb(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(_encode(Image.fromarray(_gray(rng, 16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _animated_gif(rng: np.random.Generator) -> bytes:
    frames = [Image.fromarray(_gray(rng, 20, 20)).convert("P") for _ in range(3)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _cmyk(rng: np.random.Generator, fmt: str) -> bytes:
    rgb = np.stack([_gray(rng, 30, 30)] * 3, axis=2)
    return _encode(Image.fromarray(rgb).convert("CMYK"), fmt)


def _sixteen_bit(rng: np.random.Generator, fmt: str) -> bytes:
    values = rng.integers(0, 65536, (30, 30), dtype=np.uint16)
    return _encode(Image.fromarray(values), fmt)


IMAGE_MAKERS: dict[str, tuple[str, str, Callable[[np.random.Generator], bytes]]] = {
    # kind: (suffix, expected outcome, maker)
    "truncated_png": (".png", FATAL, lambda r: (b := _encode(Image.fromarray(_gray(r)), "PNG"))[: int(r.integers(8, len(b) - 12))]),
    "truncated_jpeg": (".jpg", FATAL, lambda r: (b := _encode(Image.fromarray(_gray(r)), "JPEG"))[: int(r.integers(2, len(b) // 2))]),
    "wrong_magic": (".png", FATAL, lambda r: bytes(r.integers(0, 256, int(r.integers(16, 400)), dtype=np.uint8))),
    "text_as_image": (".jpg", FATAL, lambda r: f"not an image {r.integers(1e9)}\n".encode()),
    "zero_bytes": (".png", FATAL, lambda r: b""),
    "png_bomb": (".png", FATAL, lambda r: png_bomb(int(r.integers(60_000, 100_000)), int(r.integers(60_000, 100_000)))),
    "jpeg_bomb": (".jpg", FATAL, lambda r: jpeg_bomb(r, int(r.integers(40_000, 65_000)), int(r.integers(40_000, 65_000)))),
    "one_pixel": (".png", OK, lambda r: _encode(Image.fromarray(r.integers(0, 256, (1, 1, 3), dtype=np.uint8)), "PNG")),
    "sixteen_bit_png": (".png", OK, lambda r: _sixteen_bit(r, "PNG")),
    "sixteen_bit_tiff": (".tif", OK, lambda r: _sixteen_bit(r, "TIFF")),
    "cmyk_jpeg": (".jpg", OK, lambda r: _cmyk(r, "JPEG")),
    "cmyk_tiff": (".tif", OK, lambda r: _cmyk(r, "TIFF")),
    "animated_gif": (".gif", WARNING, _animated_gif),
    "gif_named_png": (".png", WARNING, _animated_gif),
}
"""Each kind is made ``IMAGES_PER_KIND`` times with different seeds, half in good/ and half in bad/."""
IMAGES_PER_KIND = 4

MASK_KINDS = {"mask_wrong_size": FATAL, "mask_non_binary": OK, "mask_all_zero": WARNING, "mask_truncated": FATAL}
MASKS_PER_KIND = 5


def _mask(rng: np.random.Generator, kind: str, h: int, w: int) -> bytes:
    if kind == "mask_wrong_size":
        return _encode(Image.fromarray(np.full((h + int(rng.integers(1, 9)), w, ), 255, np.uint8)), "PNG")
    if kind == "mask_non_binary":
        return _encode(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)), "PNG")
    if kind == "mask_all_zero":
        return _encode(Image.fromarray(np.zeros((h, w), np.uint8)), "PNG")
    full = _encode(Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8) * 255), "PNG")
    return full[: len(full) // 2]


def _size(path: Path) -> tuple[int, int]:
    """Width and height of a readable image; a stand-in size for a broken one."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except Exception:  # noqa: BLE001 - any broken file
        return 30, 30


def write_folder_inputs(root: Path, seed: int = 0, n_good: int = 16, n_bad: int = 8) -> list[Input]:
    """A good/ bad/ masks/ set: ``n_good`` + ``n_bad`` valid images (with masks), every image kind and
    every mask kind mixed in. Returns the malformed inputs (the valid files are not listed)."""
    rng = np.random.default_rng(seed)
    for sub in ("good", "bad", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        Image.fromarray(_gray(rng)).save(root / "good" / f"valid_g{i}.png")
    for i in range(n_bad):
        image = _gray(rng)
        Image.fromarray(image).save(root / "bad" / f"valid_b{i}.png")
        mask = np.zeros_like(image)
        mask[5:9, :] = 255
        Image.fromarray(mask).save(root / "masks" / f"valid_b{i}.png")
    inputs = []
    for kind, (suffix, expect, make) in IMAGE_MAKERS.items():
        for k in range(IMAGES_PER_KIND):
            path = f"{'good' if k % 2 else 'bad'}/{kind}_{k}{suffix}"
            (root / path).write_bytes(make(rng))
            inputs.append(Input(path, kind, expect))
            if path.startswith("bad/"):  # a valid mask of the image's size, so that only the image is at fault
                width, height = _size(root / path)
                mask = np.zeros((height, width), np.uint8)
                mask[: max(1, height // 4)] = 255
                Image.fromarray(mask).save(root / "masks" / f"{kind}_{k}.png")
    for kind, expect in MASK_KINDS.items():
        for k in range(MASKS_PER_KIND):
            image = _gray(rng)
            Image.fromarray(image).save(root / "bad" / f"{kind}_{k}.png")
            path = f"masks/{kind}_{k}.png"
            (root / path).write_bytes(_mask(rng, kind, *image.shape))
            inputs.append(Input(path, kind, expect))
    return inputs


def _via_region(rng: np.random.Generator, w: int, h: int, outside: bool = False) -> dict:
    xs = rng.integers(0, w, 4) + (w + 50 if outside else 0)
    ys = rng.integers(0, h, 4) + (h + 50 if outside else 0)
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs.tolist(), "all_points_y": ys.tolist()},
            "region_attributes": {}}


def via_projects(seed: int = 0) -> list[tuple[str, Callable[[Path], None]]]:
    """(kind, writer) of malformed VIA projects; each writer fills a folder with images and the JSON."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, Callable[[Path], None]]] = []

    def project(entries: Callable[[int, int], object], raw: Callable[[str], str] = lambda s: s):
        def write(folder: Path) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_gray(np.random.default_rng(0), 30, 40)).save(folder / "a.png")
            Image.fromarray(_gray(np.random.default_rng(1), 30, 40)).save(folder / "b.png")
            listed = entries(40, 30)
            if isinstance(listed, dict):
                listed["b"] = {"filename": "b.png", "regions": []}
            text = raw(json.dumps(listed))
            (folder / "via_region_data.json").write_text(text, encoding="utf-8")
        return write

    good = lambda w, h: {"a": {"filename": "a.png", "regions": [_via_region(rng, w, h)]}}  # noqa: E731
    for k in range(5):
        cut = int(rng.integers(1, 40))
        out.append(("via_malformed", project(good, lambda s, c=cut: s[:c])))
    out += [
        ("via_missing_filename", project(lambda w, h: {"a": {"regions": []}})),
        ("via_missing_shape", project(lambda w, h: {"a": {"filename": "a.png", "regions": [{"x": 1}]}})),
        ("via_missing_points", project(lambda w, h: {"a": {"filename": "a.png", "regions": [
            {"shape_attributes": {"name": "polygon", "all_points_x": [1, 5, 9]}}]}})),
        ("via_points_not_numbers", project(lambda w, h: {"a": {"filename": "a.png", "regions": [
            {"shape_attributes": {"name": "polygon", "all_points_x": ["a", 5, 9], "all_points_y": [1, 2, 3]}}]}})),
        ("via_unknown_shape", project(lambda w, h: {"a": {"filename": "a.png", "regions": [
            {"shape_attributes": {"name": "star"}}]}})),
        ("via_not_a_dict", project(lambda w, h: [1, 2, 3])),
    ]
    for k in range(5):
        out.append(("via_polygon_outside", project(lambda w, h: {"a": {"filename": "a.png", "regions": [
            _via_region(rng, w, h, outside=True)]}})))
    return out


def voc_sets(seed: int = 0) -> list[tuple[str, Callable[[Path], None]]]:
    """(kind, writer) of NEU-DET-like folders with one malformed Pascal VOC file each."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, Callable[[Path], None]]] = []

    def voc(box: tuple[int, int, int, int] | None, cut: int | None = None) -> Callable[[Path], None]:
        def write(folder: Path) -> None:
            (folder / "IMAGES").mkdir(parents=True, exist_ok=True)
            (folder / "ANNOTATIONS").mkdir(parents=True, exist_ok=True)
            for i, name in enumerate(("scratches_1", "scratches_2", "crazing_1", "crazing_2")):
                Image.fromarray(_gray(np.random.default_rng(i), 40, 40)).save(folder / "IMAGES" / f"{name}.jpg")
            x1, y1, x2, y2 = box or (2, 2, 20, 20)
            text = (f"<annotation><filename>scratches_1.jpg</filename><size><width>40</width><height>40</height>"
                    f"</size><object><name>scratches</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                    f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>")
            (folder / "ANNOTATIONS" / "scratches_1.xml").write_text(text[:cut] if cut else text)
        return write

    for k in range(5):
        out.append(("voc_malformed", voc(None, cut=int(rng.integers(5, 150)))))
    for k in range(5):
        x1, y1 = int(rng.integers(45, 200)), int(rng.integers(0, 200))
        out.append(("voc_box_outside", voc((x1, y1, x1 + 10, y1 + 10))))
    return out
