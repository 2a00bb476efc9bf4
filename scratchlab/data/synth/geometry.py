"""Scratch geometry: curved tapered strokes and scuffed patches, rasterized to anti-aliased damage maps.

A damage map is a float32 ``(H, W)`` array in ``[0, 1]``: the fraction of ink (or surface finish)
the scratch removes at each pixel, already including the stroke's strength and its wobble.
Everything is drawn by OpenCV on a 4x supersampled canvas and area-averaged down, and every random
choice comes from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from scratchlab.data.synth.params import ScratchParams

SUPERSAMPLE = 4


def _smooth_noise(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """Zero-mean, unit-std 1-D noise of ``n`` samples, correlated over about ``corr`` samples."""
    raw = rng.standard_normal(n + 2 * int(corr) + 2)
    k = max(1, int(corr))
    smooth = np.convolve(raw, np.hanning(2 * k + 1), mode="same")[k + 1 : k + 1 + n]
    std = smooth.std()
    return (smooth - smooth.mean()) / std if std > 1e-9 else np.zeros(n)


def centerline(
    rng: np.random.Generator, anchor: tuple[float, float], angle: float, length: float, curvature: float, jitter: float,
    meander: float = 0.0,
) -> np.ndarray:
    """Points ``(N, 2)`` of a jittered cubic Bezier of about ``length`` px passing through ``anchor``: ``jitter``
    wobbles it sideways over a third of its length, ``meander`` zigzags it over a few px, as a crack runs."""
    d = np.array([math.cos(angle), math.sin(angle)])
    nrm = np.array([-d[1], d[0]])
    p0 = np.asarray(anchor, float) - d * length * rng.uniform(0.15, 0.85)
    c1, c2 = rng.normal(0.0, curvature, 2) * length
    ctrl = np.stack([p0, p0 + d * length / 3 + nrm * c1, p0 + d * 2 * length / 3 + nrm * c2, p0 + d * length])
    n = max(6, int(length / 1.5))
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (
        (1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1] + 3 * (1 - t) * t**2 * ctrl[2] + t**3 * ctrl[3]
    )
    if (jitter > 0 or meander > 0) and n > 8:
        tangent = np.gradient(pts, axis=0)
        tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
        normals = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        offset = _smooth_noise(rng, n, max(3.0, n / 3)) * jitter
        if meander > 0:
            offset = offset + _smooth_noise(rng, n, 2.0) * meander
        pts = pts + normals * offset[:, None]
    return pts


def rasterize(out: np.ndarray, points: np.ndarray, widths: np.ndarray, values: np.ndarray) -> None:
    """Draw a polyline with per-point widths (px) and values (0-1) into the float32 map ``out`` (max)."""
    h, w = out.shape
    pad = float(widths.max()) / 2 + 2
    x0 = max(0, int(math.floor(points[:, 0].min() - pad)))
    y0 = max(0, int(math.floor(points[:, 1].min() - pad)))
    x1 = min(w, int(math.ceil(points[:, 0].max() + pad)) + 1)
    y1 = min(h, int(math.ceil(points[:, 1].max() + pad)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    canvas = np.zeros(((y1 - y0) * SUPERSAMPLE, (x1 - x0) * SUPERSAMPLE), np.uint8)
    pts = np.round((points - [x0 - 0.5, y0 - 0.5]) * SUPERSAMPLE - 0.5).astype(np.int32)
    thick = np.maximum(1, np.round(widths * SUPERSAMPLE)).astype(int)
    vals = np.clip(np.round(values * 255), 0, 255).astype(int)
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        cv2.line(canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), int(vals[i]), int(thick[i]), cv2.LINE_8)
    small = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    roi = out[y0:y1, x0:x1]
    np.maximum(roi, small.astype(np.float32) * np.float32(1 / 255), out=roi)


def stroke(
    rng: np.random.Generator,
    shape: tuple[int, int],
    params: ScratchParams,
    anchor: tuple[float, float],
    angle: float,
) -> np.ndarray:
    """One curved, tapered scratch through ``anchor`` at ``angle`` (radians), as a damage map."""
    diag = math.hypot(*shape)
    lo, hi = params.length
    length = max(4.0, diag * math.exp(rng.uniform(math.log(lo), math.log(hi))))
    pts = centerline(rng, anchor, angle, length, params.curvature, params.jitter, params.meander)
    n = len(pts)
    wlo, whi = params.width
    width = wlo + (whi - wlo) * rng.uniform() ** params.width_power
    t = np.linspace(0.0, 1.0, n)
    taper = max(1e-3, params.taper * rng.uniform(0.3, 1.5))
    profile = np.clip(np.minimum(t, 1 - t) / taper, 0.0, 1.0) ** 0.7
    widths = np.maximum(0.3, width * profile * (1 + 0.12 * _smooth_noise(rng, n, max(2.0, n / 5))))
    strength = rng.uniform(*params.strength)
    values = strength * (1 + params.strength_wobble * _smooth_noise(rng, n, max(2.0, n / 4)))
    values = np.clip(values * np.clip(profile * 3, 0.3, 1.0), 0.05, 1.0)
    out = np.zeros(shape, np.float32)
    rasterize(out, pts, widths, values)
    return out


def scuff_patch(
    rng: np.random.Generator, shape: tuple[int, int], params: ScratchParams, center: tuple[float, float]
) -> np.ndarray:
    """A small abraded patch: a cluster of tiny short strokes sharing a rough direction, plus a blob."""
    radius = rng.uniform(*params.patch_radius)
    base_angle = rng.uniform(0, math.pi)
    out = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(params.patch_strokes[0], params.patch_strokes[1] + 1))):
        r, phi = radius * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        start = np.array([center[0] + r * math.cos(phi), center[1] + r * math.sin(phi)])
        angle = base_angle + rng.normal(0, 0.35)
        length = rng.uniform(3.0, max(4.0, radius))
        d = np.array([math.cos(angle), math.sin(angle)])
        pts = start + np.linspace(0.0, length, max(3, int(length)))[:, None] * d
        t = np.linspace(0.0, 1.0, len(pts))
        widths = rng.uniform(0.6, 2.0) * np.clip(np.minimum(t, 1 - t) * 4, 0.3, 1.0)
        values = np.full(len(pts), rng.uniform(*params.strength))
        rasterize(out, pts, widths, values)
    if rng.uniform() < 0.5:
        _blob(rng, out, center, radius * rng.uniform(0.4, 0.8))
    return out


def _blob(rng: np.random.Generator, out: np.ndarray, center: tuple[float, float], radius: float) -> None:
    """Add an irregular soft abrasion blob of partial strength around ``center`` to ``out`` (max)."""
    h, w = out.shape
    size = int(2 * radius) + 3
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), max(1.0, radius / 4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    ellipse = np.clip(1.0 - np.sqrt(xx**2 + yy**2) / radius, 0.0, 1.0)
    blob = np.clip((noise / (noise.std() + 1e-6) + 2.0 * ellipse - 1.2) * 1.5, 0.0, 1.0) * ellipse
    blob = (blob * rng.uniform(0.3, 0.7)).astype(np.float32)
    x0, y0 = int(round(center[0] - (size - 1) / 2)), int(round(center[1] - (size - 1) / 2))
    ox0, oy0, ox1, oy1 = max(0, x0), max(0, y0), min(w, x0 + size), min(h, y0 + size)
    if ox1 > ox0 and oy1 > oy0:
        roi = out[oy0:oy1, ox0:ox1]
        np.maximum(roi, blob[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0], out=roi)


def stroke_count(rng: np.random.Generator, params: ScratchParams) -> int:
    """Number of strokes of one bad image: ``count[0]`` plus a geometric tail, capped at ``count[1]``."""
    lo, hi = params.count
    return int(min(hi, lo + rng.geometric(params.count_p) - 1))
