"""VGG Image Annotator (VIA 1/2) JSON: scratch strokes and outlines rasterized into masks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from scratchlab.data.io import image_info
from scratchlab.data.types import BINARY_CLASSES, Sample, SampleIndex
from scratchlab.errors import DataError


def _points(shape: dict) -> np.ndarray:
    return np.round(np.stack([shape["all_points_x"], shape["all_points_y"]], axis=1)).astype(np.int32)


def _draw(mask: np.ndarray, shape: dict, stroke_width: int) -> None:
    """Draw one VIA ``shape_attributes`` onto ``mask`` with value 1."""
    name = shape.get("name")
    if name == "polyline":
        # OpenCV strokes thickness t as t + 1 (even t) or t + 2 (odd t > 1) pixels across
        cv2.polylines(mask, [_points(shape)], False, 1, thickness=max(1, stroke_width - stroke_width % 2))
    elif name == "polygon":
        cv2.fillPoly(mask, [_points(shape)], 1)
    elif name == "rect":
        x, y, w, h = (round(shape[k]) for k in ("x", "y", "width", "height"))
        cv2.rectangle(mask, (x, y), (x + w - 1, y + h - 1), 1, thickness=-1)
    elif name == "circle":
        cv2.circle(mask, (round(shape["cx"]), round(shape["cy"])), round(shape["r"]), 1, thickness=-1)
    elif name == "ellipse":
        center, axes = (round(shape["cx"]), round(shape["cy"])), (round(shape["rx"]), round(shape["ry"]))
        angle = float(np.degrees(shape.get("theta", 0.0)))
        cv2.ellipse(mask, center, axes, angle, 0, 360, 1, thickness=-1)
    elif name == "point":
        cv2.circle(mask, (round(shape["cx"]), round(shape["cy"])), max(1, stroke_width // 2), 1, thickness=-1)
    else:
        raise DataError(f"VIA region shape {name!r} is not supported; use polyline, polygon, rect, circle, "
                        f"ellipse or point")


def rasterize_regions(regions: list | dict, height: int, width: int, stroke_width: int = 5) -> list[np.ndarray]:
    """One (height, width) uint8 0/1 mask per VIA region: polylines stroked ``stroke_width`` px wide
    (an even width comes out one pixel wider, as the stroke is centred on the line),
    polygons, rects, circles and ellipses filled, points as dots. ``regions`` is VIA 2's list or VIA 1's dict."""
    regions = list(regions.values()) if isinstance(regions, dict) else regions
    masks = []
    for region in regions:
        mask = np.zeros((height, width), np.uint8)
        try:
            _draw(mask, region["shape_attributes"], stroke_width)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"VIA region {region!r:.120} is incomplete ({e!r}); re-export the annotations") from None
        masks.append(mask)
    return masks


def _outline(mask: np.ndarray) -> tuple[tuple[float, float], ...]:
    """The outer contour of the mask's largest part, as (x, y) points."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return ()
    largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    return tuple((float(x), float(y)) for x, y in largest[:, 0])


def read_via(path: Path) -> list[tuple[str, list]]:
    """``(filename, regions)`` of every image in a VIA project (``_via_img_metadata``) or annotation export."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"VIA annotations {path} cannot be read ({e}); check data.source.annotations") from None
    entries = data.get("_via_img_metadata", data) if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise DataError(f"{path} is not a VIA 1/2 JSON; export it from VIA with Annotation > Export as json")
    out = []
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            raise DataError(f"{path}: entry {key!r} has no filename; export it from VIA 1/2 with "
                            f"Annotation > Export as json (VIA 3 projects are not supported)")
        regions = entry.get("regions") or []
        out.append((entry["filename"], list(regions.values()) if isinstance(regions, dict) else regions))
    return out


class VIASource:
    """Images listed in a VIA JSON: those with regions are bad, the rest good. The union of each bad
    image's regions is written to ``mask_dir`` (default ``root/.scratchlab_masks``) as a 0/255 PNG
    named ``<image file name>.png``; each region's outline goes to ``Sample.polygons``."""

    def __init__(self, root: str | Path, annotations: str | Path = "via_region_data.json", stroke_width: int = 5,
                 image_dir: str | Path | None = None, mask_dir: str | Path | None = None) -> None:
        self.root = Path(root)
        self.annotations = self.root / annotations
        self.image_dir = self.root / image_dir if image_dir is not None else self.root
        self.mask_dir = Path(mask_dir) if mask_dir is not None else self.root / ".scratchlab_masks"
        self.stroke_width = stroke_width

    def load(self) -> SampleIndex:
        """Read the JSON, rasterize every annotated image's regions and write its mask."""
        entries = read_via(self.annotations)
        missing = [name for name, _ in entries if not (self.image_dir / name).is_file()]
        if missing:
            raise DataError(f"{self.annotations} lists {len(missing)} image(s) missing from {self.image_dir} "
                            f"(first: {missing[0]}); add them or set data.source.image_dir")
        samples = []
        for name, regions in entries:
            image = self.image_dir / name
            if not regions:
                samples.append(Sample(image, 0))
                continue
            width, height, _ = image_info(image)
            try:
                instances = rasterize_regions(regions, height, width, self.stroke_width)
            except DataError as e:
                raise DataError(f"{self.annotations}, image {name}: {e}") from None
            outside = [j for j, m in enumerate(instances) if not m.any()]
            if outside:
                raise DataError(f"{self.annotations}, image {name}: region {outside[0]} lies outside the "
                                f"{width}x{height} image; fix its coordinates in VIA")
            mask = self._write_mask(name, np.maximum.reduce(instances))
            polygons = tuple(p for p in map(_outline, instances) if p)
            samples.append(Sample(image, 1, mask=mask, polygons=polygons))
        return SampleIndex(samples, list(BINARY_CLASSES))

    def _write_mask(self, name: str, mask: np.ndarray) -> Path:
        """Write atomically, so that concurrent loads (several processes) never see half a file."""
        path = self.mask_dir / f"{name}.png"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask * 255).save(tmp, format="PNG")
            os.replace(tmp, path)
        except OSError as e:
            raise DataError(f"cannot write the VIA mask {path} ({e}); set data.source.mask_dir to a "
                            f"writable folder") from None
        return path
