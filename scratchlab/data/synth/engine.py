"""Per-image result, scratch placement, masks from changed pixels, and scratching any given image."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from scratchlab.data.synth import appearance as app
from scratchlab.data.synth import geometry
from scratchlab.data.synth.params import QUANTILE_PROBS, ScratchParams
from scratchlab.data.types import Box
from scratchlab.errors import ConfigError, DataError


@dataclass
class SynthResult:
    """One synthetic image: RGB ``image`` (H, W, 3) uint8, ``mask`` (H, W) uint8 in {0, 255}.

    ``polygons`` and ``boxes`` outline the connected components of the mask, one per scratch region.
    """

    image: np.ndarray
    mask: np.ndarray
    polygons: list[list[tuple[float, float]]] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)


def sample_quantiles(rng: np.random.Generator, quantiles: tuple[float, ...]) -> float:
    """Draw from the distribution whose values at ``QUANTILE_PROBS`` are ``quantiles``."""
    if len(quantiles) != len(QUANTILE_PROBS):
        raise ConfigError(f"quantile tables need {len(QUANTILE_PROBS)} values (p0 p5 p25 p50 p75 p95 p100)")
    return float(np.interp(rng.uniform(), QUANTILE_PROBS, quantiles))


def to_rgb(gray: np.ndarray) -> np.ndarray:
    """Round a float gray image to uint8 and stack it into three equal channels."""
    u8 = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return np.repeat(u8[:, :, None], 3, axis=2)


def stored_as_jpeg(gray: np.ndarray, rng: np.random.Generator, prob: float, quality: tuple[int, int]) -> np.ndarray:
    """The photo as stored (uint8 gray): a JPEG round trip with chance ``prob`` at a quality drawn from
    ``quality``, else the photo rounded. Applied after the mask is taken, so masks stay exact."""
    u8 = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    if rng.uniform() >= prob:
        return u8
    level = int(rng.integers(quality[0], quality[1] + 1))
    _, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, level])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def place_scratches(
    rng: np.random.Generator,
    shape: tuple[int, int],
    params: ScratchParams,
    sensitivity: np.ndarray,
    angle: Callable[[np.random.Generator], float] | None = None,
    ends: np.ndarray | None = None,
    end_prob: float = 0.0,
    direction: float | None = None,
) -> list[np.ndarray]:
    """Damage maps of the strokes (and maybe one scuffed patch) of one bad image.

    ``sensitivity`` is how many gray levels full damage would change each pixel; strokes are anchored
    on sensitive pixels and re-drawn until they change at least ``params.min_changed`` of them by more
    than ``params.change_tol`` (the best try is kept if none does). Without ``angle`` they run in random
    directions, within ``params.angle_spread`` degrees of one shared direction when that is set (``direction``,
    radians, or a random one). With ``ends``
    (flat pixel indices of the part's ends) a stroke is anchored there with chance ``end_prob``, so that it runs
    in from the end.
    """
    tol = params.change_tol
    hot = np.flatnonzero(sensitivity > max(2.0 * tol, 0.5 * float(sensitivity.max())))
    if hot.size == 0:
        hot = np.arange(sensitivity.size)
    w = shape[1]

    def anchor(pool: np.ndarray) -> tuple[float, float]:
        i = int(pool[rng.integers(pool.size)])
        return i % w + rng.uniform(-0.5, 0.5), i // w + rng.uniform(-0.5, 0.5)

    def changed(damage: np.ndarray) -> int:
        return int(np.count_nonzero(damage * sensitivity > tol))

    if angle is None and params.angle_spread > 0:  # one scraping leaves near-parallel streaks
        shared = rng.uniform(0, math.pi) if direction is None else direction
        spread = math.radians(params.angle_spread)

        def angle(r: np.random.Generator) -> float:
            return shared + r.normal(0.0, spread)

    maps: list[np.ndarray] = []
    for _ in range(geometry.stroke_count(rng, params)):
        # no draw without ends: every image of a generator that never asks for them stays as it was
        pool = ends if ends is not None and ends.size and rng.uniform() < end_prob else hot
        best, best_n = None, -1
        for _ in range(params.max_tries):
            theta = angle(rng) if angle is not None else rng.uniform(0, math.pi)
            damage = geometry.stroke(rng, shape, params, anchor(pool), theta)
            n = changed(damage)
            if n > best_n:
                best, best_n = damage, n
            if n >= params.min_changed:
                break
        maps.append(best)
    if rng.uniform() < params.patch_prob:
        maps.append(geometry.scuff_patch(rng, shape, params, anchor(hot)))
    return maps


def _change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel absolute change in gray levels (the largest over channels)."""
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16))
    return diff.max(axis=2) if diff.ndim == 3 else diff


def visible_pixels(before: np.ndarray, after: np.ndarray, level: float) -> int:
    """How many pixels of ``after`` differ from ``before`` by ``level`` gray levels or more."""
    return int(np.count_nonzero(_change(before, after) >= level))


SPAN_LEVEL = 0.1
"""A stroke's path is where its damage map exceeds this (its tapered tips included)."""


def stroke_spans(changed: np.ndarray, strokes: Sequence[np.ndarray], max_gap: float | None = None) -> np.ndarray:
    """Where each stroke runs between its first and last changed pixel along its length, paper it skipped
    included: the band an annotator marks for one scratch. ``changed`` is a bool map, ``strokes`` damage maps.
    With ``max_gap`` (px along the stroke) a longer stretch without a changed pixel is left out: the scratch is
    marked as separate pieces there."""
    out = np.zeros(changed.shape, bool)
    for damage in strokes:
        ys, xs = np.nonzero(damage > SPAN_LEVEL)
        hit = changed[ys, xs]
        if np.count_nonzero(hit) < 2:
            continue
        points = np.stack([xs, ys], axis=1).astype(np.float64)
        points -= points.mean(axis=0)
        along = points @ np.linalg.svd(points, full_matrices=False)[2][0]  # position along the principal axis
        stops = np.unique(along[hit])
        bridged = np.diff(stops) <= (np.inf if max_gap is None else max_gap)  # between stops i and i + 1
        i = np.searchsorted(stops, along, side="right") - 1  # the last stop at or before each pixel
        inside = (i >= 0) & (i < len(stops) - 1)
        keep = hit.copy()
        keep[inside] |= bridged[i[inside]]
        out[ys[keep], xs[keep]] = True
    return out


def change_mask(before: np.ndarray, after: np.ndarray, tol: int, dilate: int, close: int = 0) -> np.ndarray:
    """0/255 mask of the pixels that moved by more than ``tol``, dilated by ``dilate`` px.

    A closing of diameter ``close`` px then bridges the small gaps between pieces of one scratch.
    """
    return _grown(_change(before, after) > tol, dilate, close)


def _grown(pixels: np.ndarray, dilate: int, close: int) -> np.ndarray:
    """0/255 mask of the bool map ``pixels`` dilated by ``dilate`` px, then closed with diameter ``close``."""
    mask = pixels.astype(np.uint8) * 255
    if dilate > 0 and mask.any():
        k = 2 * dilate + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if close > 1 and mask.any():
        pad = close
        big = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        big = cv2.morphologyEx(big, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close)))
        mask = big[pad:-pad, pad:-pad]
    return mask


def annotate(mask: np.ndarray) -> tuple[list[list[tuple[float, float]]], list[Box]]:
    """Outer polygon and box of every connected component of a 0/255 mask."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    polygons: list[list[tuple[float, float]]] = []
    boxes: list[Box] = []
    for i in range(1, n):
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        comp = (labels[y : y + bh, x : x + bw] == i).astype(np.uint8)
        contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
        outline = max(contours, key=len).reshape(-1, 2)
        polygons.append([(float(px), float(py)) for px, py in outline])
        boxes.append(Box(x, y, x + bw, y + bh))
    return polygons, boxes


def finish(clean: np.ndarray, scratched: np.ndarray, params: ScratchParams, rng: np.random.Generator,
           strokes: Sequence[np.ndarray] = ()) -> SynthResult:
    """Result of a scratched RGB image: its mask is the (dilated) set of pixels that changed, and with
    ``params.mask_span`` the path of each of the ``strokes`` (damage maps) between its changed pixels."""
    dilate = int(rng.integers(params.mask_dilate[0], params.mask_dilate[1] + 1))
    changed = _change(clean, scratched) > params.change_tol
    if params.mask_span:
        changed |= stroke_spans(changed, strokes, params.mask_span_gap)
    mask = _grown(changed, dilate, params.mask_close)
    polygons, boxes = annotate(mask)
    return SynthResult(scratched, mask, polygons, boxes)


def apply_scratches(
    image: np.ndarray, rng: np.random.Generator, params: ScratchParams | None = None, appearance: str = "ink"
) -> SynthResult:
    """Scratch any gray or RGB uint8 image; the mask is the (dilated) set of changed pixels, and with
    ``params.mask_span`` each stroke's path between them.

    ``ink``: dark print (Otsu) is scraped towards the local paper level, paper stays untouched.
    ``metal``: bright specular lines or dark grooves anywhere, following the local texture.
    ``crack``: dark meandering cracks anywhere (``params.tile_cracks()`` is their shape on real tiles).
    """
    params = params or ScratchParams()
    if appearance not in app.APPEARANCES:
        raise ConfigError(f"unknown scratch appearance {appearance!r}; use one of {list(app.APPEARANCES)}")
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise DataError(f"apply_scratches needs a gray or RGB uint8 image, got {image.dtype} {image.shape}")
    rgb = image if image.ndim == 3 else image[:, :, None]
    rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb[:, :, :3]
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    shape = gray.shape
    if appearance == "ink":
        ink, paper = app.find_ink(gray)
        sensitivity = ink * np.maximum(paper - gray, 0.0)
        if float(sensitivity.max()) <= 2 * params.change_tol:
            raise DataError("apply_scratches(appearance='ink') found no dark print to scrape in this image")
        maps = place_scratches(rng, shape, params, sensitivity)
        delta = app.scrape_photo(gray, np.maximum.reduce(maps), ink, paper) - gray
    else:
        texture = gray - cv2.GaussianBlur(gray, (0, 0), 3.0)
        texture /= max(float(texture.std()), 1e-3)
        cracks = appearance == "crack"
        contrast = float(rng.uniform(*(app.CRACK_CONTRAST if cracks else (25.0, 80.0))))
        grain = app.grain_angle(gray) if cracks else None

        def along_grain(r: np.random.Generator) -> float:  # cracks mostly run along a part's grain, as on real tiles
            return grain + r.normal(0.0, 0.2) if r.uniform() < app.CRACK_ALONG_GRAIN else r.uniform(0, math.pi)

        maps = place_scratches(rng, shape, params, np.full(shape, contrast, np.float32),
                               None if grain is None else along_grain)
        delta = np.zeros(shape, np.float32)
        for damage in maps:
            bright = False if cracks else bool(rng.uniform() < 0.5)
            delta += app.metal_scratch(gray, damage, texture, contrast, bright) - gray
    delta = app.photographic(delta, rng)
    scratched = np.clip(np.rint(rgb.astype(np.float32) + delta[:, :, None]), 0, 255).astype(np.uint8)
    return finish(rgb, scratched, params, rng, maps)
