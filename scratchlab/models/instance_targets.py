"""Mask R-CNN training targets from scratch masks or polygons, in torchvision's detection format."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from scratchlab.errors import ConfigError, DataError

SCRATCH_LABEL = 1
"""Class id of a scratch; 0 is background, as torchvision's detection models expect."""


def instances_from_mask(mask: np.ndarray, min_area: int = 1) -> np.ndarray:
    """One uint8 (N, H, W) instance mask per 8-connected component of ``mask`` with at least ``min_area`` pixels."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise DataError(f"mask must be a non-empty (H, W) array, got shape {mask.shape}")
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask != 0).astype(np.uint8), connectivity=8)
    ids = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    return (labels[None] == np.array(ids, dtype=labels.dtype).reshape(-1, 1, 1)).astype(np.uint8)


def instances_from_polygons(polygons: Sequence[Sequence[tuple[float, float]]], height: int, width: int,
                            stroke_width: int = 5) -> np.ndarray:
    """One uint8 (N, H, W) instance mask per polygon of ``(x, y)`` pixel points.

    Each polygon is filled and its closed outline stroked with a ``stroke_width``-pixel disc, so thin or
    line-like annotations (two points, collinear points) still cover the scratch. Polygons that
    cover no pixel of the image are dropped.
    """
    if height < 1 or width < 1:
        raise DataError(f"image size must be positive, got height={height}, width={width}")
    if stroke_width < 0:
        raise ConfigError(f"stroke_width={stroke_width} must be >= 0 pixels")
    pen = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (stroke_width, stroke_width)) if stroke_width else None
    out = []
    for polygon in polygons:
        points = np.round(np.asarray(polygon, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
        canvas = np.zeros((height, width), np.uint8)
        if pen is not None and len(points):
            cv2.polylines(canvas, [points], True, 1, 1)
            canvas = cv2.dilate(canvas, pen)
        if len(points) >= 3:
            cv2.fillPoly(canvas, [points], 1)
        if canvas.any():
            out.append(canvas)
    return np.stack(out) if out else np.zeros((0, height, width), np.uint8)


def build_target(instance_masks: np.ndarray) -> dict[str, torch.Tensor]:
    """torchvision detection target from (N, H, W) instance masks (non-zero = instance).

    ``boxes`` float32 (N, 4) are ``x1, y1, x2, y2`` with ``x2, y2`` = max pixel coordinate + 1
    (exclusive, as ``Box``), so a one-pixel-wide scratch gets a box one pixel wide rather than the
    zero-width box torchvision rejects. ``labels`` int64 are all ``SCRATCH_LABEL``; ``masks`` uint8
    (N, H, W). Empty instance masks have no box and are dropped; with no instances the tensors
    have shapes (0, 4), (0,) and (0, H, W).
    """
    masks = np.asarray(instance_masks) != 0
    if masks.ndim != 3:
        raise DataError(f"instance masks must be (N, H, W), got shape {masks.shape}")
    masks = masks[masks.any(axis=(1, 2))]
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        cols, rows = np.flatnonzero(m.any(axis=0)), np.flatnonzero(m.any(axis=1))
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return {"boxes": torch.from_numpy(boxes),
            "labels": torch.full((len(masks),), SCRATCH_LABEL, dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8))}
