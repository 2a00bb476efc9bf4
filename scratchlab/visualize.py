"""Pictures for reports: predicted and true scratches over the image, image grids, PNG output (OpenCV)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from scratchlab.data.types import Box
from scratchlab.errors import ConfigError, DataError
from scratchlab.postprocess import Component

PRED_COLOR = (255, 0, 0)
"""RGB tint of predicted scratch pixels."""
GT_COLOR = (0, 255, 0)
"""RGB of ground-truth outlines and boxes."""
BOX_COLOR = (255, 255, 0)
"""RGB of predicted boxes and their area text."""

BoxLike = Box | Component | Sequence[int]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W), (H, W, 1) or (H, W, 3) image as a new (H, W, 3) RGB array."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DataError(f"image must be uint8, got {image.dtype}; convert it, e.g. (x * 255).clip(0, 255).astype('uint8')")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    raise DataError(f"image must be (H, W) gray or (H, W, 3) RGB, got shape {image.shape}")


def _check_mask(mask: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise DataError(f"{what} has shape {mask.shape} but the image is {shape}; resize it to the image first")
    return mask != 0


def _xyxy(box: BoxLike) -> tuple[int, int, int, int]:
    """Box corners with x2, y2 exclusive."""
    if isinstance(box, Component):
        box = box.box
    if isinstance(box, Box):
        return box.x1, box.y1, box.x2, box.y2
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return x1, y1, x2, y2


def _text_style(height: int, width: int) -> tuple[float, int]:
    """Font scale and line thickness that stay legible on small and large images."""
    scale = max(0.3, min(height, width) / 600)
    return scale, max(1, round(scale * 1.5))


def _put_label(canvas: np.ndarray, text: str, scale: float, thickness: int) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(canvas, (0, 0), (tw + 4, th + base + 4), (0, 0, 0), -1)
    cv2.putText(canvas, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def draw_overlay(image: np.ndarray, pred_mask: np.ndarray | None = None, gt_mask: np.ndarray | None = None,
                 boxes: Sequence[BoxLike] | None = None, gt_boxes: Sequence[BoxLike] | None = None,
                 label: str | None = None, alpha: float = 0.4) -> np.ndarray:
    """The image (gray or RGB uint8) with predictions and ground truth drawn on a new RGB array.

    Predicted mask pixels (non-zero) are tinted red by ``alpha``; the ground-truth mask is outlined
    green; ``boxes`` are drawn yellow with their area in pixels (a Component's pixel area, else the
    box area); ``gt_boxes`` green; ``label`` is written top left.
    """
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha={alpha!r} must be between 0 and 1")
    out = to_rgb(image)
    shape = out.shape[:2]
    scale, thickness = _text_style(*shape)
    if pred_mask is not None:
        m = _check_mask(pred_mask, shape, "pred_mask")
        out[m] = ((1 - alpha) * out[m] + alpha * np.array(PRED_COLOR)).round().astype(np.uint8)
    if gt_mask is not None:
        m = _check_mask(gt_mask, shape, "gt_mask").astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, GT_COLOR, thickness)
    for box in gt_boxes or ():
        x1, y1, x2, y2 = _xyxy(box)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), GT_COLOR, thickness)
    for box in boxes or ():
        x1, y1, x2, y2 = _xyxy(box)
        area = box.area if isinstance(box, Component) else (x2 - x1) * (y2 - y1)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), BOX_COLOR, thickness)
        (_, th), _ = cv2.getTextSize(str(area), cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        text_y = y1 - 3 if y1 - 3 >= th else min(y2 + th + 2, shape[0] - 1)
        cv2.putText(out, str(area), (x1, text_y), cv2.FONT_HERSHEY_SIMPLEX, scale, BOX_COLOR, thickness,
                    cv2.LINE_AA)
    if label:
        _put_label(out, label, scale, thickness)
    return out


def letterbox(image: np.ndarray, tile: int) -> np.ndarray:
    """The image scaled to fit a (tile, tile) RGB square with its aspect ratio kept, centred on black."""
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    scale = min(tile / h, tile / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (nw, nh), interpolation=interpolation)
    out = np.zeros((tile, tile, 3), np.uint8)
    top, left = (tile - nh) // 2, (tile - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


def make_grid(images: list[np.ndarray], ncols: int, tile: int = 256,
              titles: list[str] | None = None) -> np.ndarray:
    """Images letterboxed into ``tile`` x ``tile`` cells, ``ncols`` per row, optional title on each cell."""
    if not images:
        raise DataError("make_grid got no images; pass at least one")
    if ncols < 1 or tile < 1:
        raise ConfigError(f"make_grid needs ncols >= 1 and tile >= 1, got ncols={ncols}, tile={tile}")
    if titles is not None and len(titles) != len(images):
        raise ConfigError(f"make_grid got {len(titles)} titles for {len(images)} images; pass one per image")
    nrows = -(-len(images) // ncols)
    grid = np.zeros((nrows * tile, ncols * tile, 3), np.uint8)
    scale, thickness = _text_style(tile, tile)
    for i, image in enumerate(images):
        cell = letterbox(image, tile)
        if titles is not None and titles[i]:
            _put_label(cell, titles[i], scale, thickness)
        r, c = divmod(i, ncols)
        grid[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = cell
    return grid


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or gray) uint8 array to a ``.png`` path, creating parent folders; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"save_png writes PNG only; give {path.name!r} a .png suffix")
    bgr = cv2.cvtColor(to_rgb(rgb), cv2.COLOR_RGB2BGR)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), bgr):
        raise DataError(f"could not write {path}; check that the folder is writable")
    return path
