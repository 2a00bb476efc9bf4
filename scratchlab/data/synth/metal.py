"""Synthetic rolled-steel surfaces, optionally scratched (bright specular lines, dark grooves or meandering
cracks, often with a wide bright gouge along the rolling axis).

As for printed codes, the surface is drawn once from its own random sub-streams and the clean and
the scratched photo are composed from it, so the mask is exactly the set of pixels that changed. Hard
negatives (pits, inclusions, mill scale, specular highlights, fibres, the part's edge), the camera's response
(gamma) and JPEG storage vary the domain.
"""
from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from scratchlab.data.synth import appearance as app
from scratchlab.data.synth.engine import (
    SynthResult,
    finish,
    place_scratches,
    sample_quantiles,
    stored_as_jpeg,
    to_rgb,
)
from scratchlab.data.synth.params import MetalParams

_STREAMS = ("layout", "texture", "scale", "light", "optics", "noise", "scratch", "negatives", "jpeg")


def _streaks(rng: np.random.Generator, shape: tuple[int, int], length: float, across: float) -> np.ndarray:
    """Unit-std noise stretched ``length`` px along x and ``across`` px along y (rolling streaks)."""
    h, w = shape
    small = rng.standard_normal((max(2, int(h / across) + 2), max(2, int(w / length) + 2)), np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (big - big.mean()) / max(float(big.std()), 1e-6)


def _relief(rng: np.random.Generator, shape: tuple[int, int], p: MetalParams) -> np.ndarray:
    """Zero-mean surface relief in gray levels: fine and coarse rolling streaks plus grain, along x."""
    length = rng.uniform(*p.streak_length)
    amp = rng.uniform(*p.streaks)
    relief = amp * (
        0.6 * _streaks(rng, shape, length, 1.0)
        + 0.5 * _streaks(rng, shape, length * 2.5, rng.uniform(3.0, 8.0))
        + 0.3 * _streaks(rng, shape, length * 6, rng.uniform(15.0, 40.0))
    )
    grain = cv2.GaussianBlur(rng.standard_normal(shape, np.float32), (0, 0), 0.6)
    return relief + rng.uniform(*p.grain) * grain / max(float(grain.std()), 1e-6)


def _mill_scale(rng: np.random.Generator, shape: tuple[int, int], p: MetalParams) -> np.ndarray:
    """Gray-level offsets of mill-scale spots: soft irregular blobs elongated along the rolling axis."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(p.scale_spots[0], p.scale_spots[1] + 1))):
        canvas = np.zeros(shape, np.uint8)
        center = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(6, w / 4)), int(rng.uniform(2, h / 10) + 1))
        cv2.ellipse(canvas, center, axes, rng.normal(0, 5), 0, 360, 255, -1, cv2.LINE_AA)
        soft = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), rng.uniform(1.0, 3.0))
        ragged = soft * (1 + 0.6 * _streaks(rng, shape, 6.0, 2.0))
        out += rng.uniform(*p.scale_contrast) * np.clip(ragged, 0.0, 1.0)
    return out


def _pits_and_inclusions(rng: np.random.Generator, shape: tuple[int, int], p: MetalParams) -> np.ndarray:
    """Dark gray-level offsets of pits (1-2 px dots) and inclusions (short dark streaks along the rolling
    axis, x): defects that are not scratches."""
    h, w = shape
    canvas = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(p.pits[0], p.pits[1] + 1))):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.circle(canvas, centre, int(rng.integers(1, 3)), float(rng.uniform(15, 50)), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(p.inclusions[0], p.inclusions[1] + 1))):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(4, 18)), int(rng.integers(1, 3)))
        cv2.ellipse(canvas, centre, axes, rng.normal(0, 4), 0, 360, float(rng.uniform(20, 60)), -1, cv2.LINE_AA)
    return -cv2.GaussianBlur(canvas, (0, 0), 0.7)


def _highlights(rng: np.random.Generator, shape: tuple[int, int], p: MetalParams) -> np.ndarray:
    """Bright gray-level offsets of specular highlights: soft lines along the rolling axis (x), a third to all of the
    image long, where a ground surface's ridges catch the light. Not damage: a hard negative against taking any
    bright streak for a scratch."""
    h, w = shape
    canvas = np.zeros(shape, np.float32)
    if p.highlights[1] == 0:  # no draw at all: the other hard negatives stay as they were without highlights
        return canvas
    for _ in range(int(rng.integers(p.highlights[0], p.highlights[1] + 1))):
        length = rng.uniform(0.3, 1.2) * w
        x0 = rng.uniform(-0.2 * w, w - 0.5 * length)
        y = rng.uniform(0, h)
        width = rng.uniform(*p.highlight_width)
        cv2.line(canvas, (int(x0), int(y)), (int(x0 + length), int(y + rng.normal(0, 1.5))),
                 float(rng.uniform(*p.highlight_strength)), max(1, int(round(width))), cv2.LINE_AA)
    return cv2.GaussianBlur(canvas, (0, 0), sigmaX=8.0, sigmaY=0.6)


def _fibres(rng: np.random.Generator, shape: tuple[int, int], p: MetalParams) -> np.ndarray:
    """Dark gray-level offsets of fibres and scuff marks lying on the surface: thin curves that bend sharply
    towards one end (hooks and curls). Not damage: a hard negative against taking any dark curve for a crack."""
    h, w = shape
    canvas = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(p.fibres[0], p.fibres[1] + 1))):
        length = rng.uniform(*p.fibre_length)
        turn = rng.uniform(0.8, 3.5) * (1 if rng.uniform() < 0.5 else -1)  # radians turned over the length
        s = np.linspace(0.0, 1.0, 24)
        heading = rng.uniform(0, 2 * math.pi) + turn * s ** rng.uniform(1.0, 2.5)
        steps = length / (len(s) - 1) * np.stack([np.cos(heading), np.sin(heading)], axis=1)
        points = np.array([rng.uniform(0, w), rng.uniform(0, h)]) + np.cumsum(steps, axis=0)
        cv2.polylines(canvas, [np.round(points * 4).astype(np.int32)], False, float(rng.uniform(*p.fibre_contrast)),
                      int(rng.integers(1, 3)), cv2.LINE_8, shift=2)
    return -cv2.GaussianBlur(canvas, (0, 0), 0.7)


def _orient(a: np.ndarray, vertical: bool, angle: float) -> np.ndarray:
    """Turn an along-x field so that rolling runs vertically and/or a few degrees off axis."""
    h, w = a.shape
    if abs(angle) > 1e-3:
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
        a = cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return np.ascontiguousarray(a.T) if vertical else a


def _part_edge(rng: np.random.Generator, shape: tuple[int, int], depth: tuple[float, float]
               ) -> tuple[np.ndarray, np.ndarray]:
    """The part's edge in view near one side: ``(inside, fill)``, a photo of the surface ``g`` becoming
    ``g * inside + fill``: background beyond a straight, slightly tilted line and a bright rim just inside
    it, where the chamfer catches the light. Not a defect: a hard negative."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = int(rng.integers(4))
    across, along, extent = [(yy, xx, h), (h - 1 - yy, xx, h), (xx, yy, w), (w - 1 - xx, yy, w)][side]
    tilt = rng.uniform(-0.05, 0.05)
    inward = across - rng.uniform(*depth) * extent - tilt * (along - along.mean())  # px into the part
    inside = np.clip(inward + 0.5, 0.0, 1.0)
    background = rng.uniform(5.0, 60.0) if rng.uniform() < 0.7 else rng.uniform(180.0, 250.0)
    rim = rng.uniform(0.0, 80.0) * np.exp(-((inward - rng.uniform(1.0, 4.0)) ** 2) / (2 * rng.uniform(0.7, 2.0) ** 2))
    return inside, (background * (1 - inside) + rim * inside).astype(np.float32)


def _part_ends(on: np.ndarray, vertical: bool) -> np.ndarray:
    """Flat indices of the part's ends: the first and last pixel of the part (``on``) on every line along the
    grain (columns when it runs vertically, else rows), where the image border or the part's edge cuts it off."""
    w = on.shape[1]
    lines = on if vertical else on.T  # lines along the grain are columns of ``lines``
    present = lines.any(axis=0)
    first = np.argmax(lines, axis=0)
    last = lines.shape[0] - 1 - np.argmax(lines[::-1], axis=0)
    across = np.flatnonzero(present)
    along = np.concatenate([first[present], last[present]])
    across = np.concatenate([across, across])
    ys, xs = (along, across) if vertical else (across, along)
    return np.unique(ys * w + xs)


def render_metal(seed: int, bad: bool, params: MetalParams | None = None) -> SynthResult:
    """One rolled-steel photo; ``bad`` ones get scratches, masked where the photo changed."""
    p = params or MetalParams()
    layout, tex_rng, scale_rng, light_rng, optics_rng, noise_rng, scratch_rng, neg_rng, jpeg_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(_STREAMS))
    )
    w = int(round(sample_quantiles(layout, p.width_quantiles)))
    h = int(round(sample_quantiles(layout, p.height_quantiles)))
    vertical = bool(layout.uniform() < 0.5)
    tilt = layout.uniform(-p.roll_angle, p.roll_angle)
    work = (w, h) if vertical else (h, w)  # fields are drawn with rolling along x, then oriented
    relief = _orient(_relief(tex_rng, work, p), vertical, tilt)
    surface = tex_rng.uniform(*p.base) + relief + _orient(_mill_scale(scale_rng, work, p), vertical, tilt)
    surface = surface + _orient(_pits_and_inclusions(neg_rng, work, p) + _highlights(neg_rng, work, p), vertical, tilt)
    x = np.arange(w, dtype=np.float32) / max(w - 1, 1)
    y = np.arange(h, dtype=np.float32)[:, None] / max(h - 1, 1)
    phi = light_rng.uniform(0, 2 * math.pi)
    ramp = (x * math.cos(phi) + y * math.sin(phi)) / (abs(math.cos(phi)) + abs(math.sin(phi)))
    light = 1 + np.float32(light_rng.uniform(*p.lighting)) * (ramp - ramp.mean())
    blurry = optics_rng.uniform() < p.blur_prob
    blur = optics_rng.uniform(*(p.blur_sigma if blurry else p.sharp_sigma))
    noise = noise_rng.standard_normal((h, w), np.float32) * np.float32(noise_rng.uniform(*p.noise))
    gamma = optics_rng.uniform(*p.gamma)
    edge = _part_edge(neg_rng, (h, w), p.edge_depth) if neg_rng.uniform() < p.edge_prob else None
    surface = surface + _fibres(neg_rng, (h, w), p)

    def photo(g: np.ndarray) -> np.ndarray:
        if edge is not None:  # the edge hides what lies beyond it, scratches included: they are never masked there
            g = g * edge[0] + edge[1]
        exposed = 255.0 * (np.clip(g * light, 0, 255) / 255.0) ** gamma
        return cv2.GaussianBlur(exposed.astype(np.float32), (0, 0), blur) + noise

    def stored(image: np.ndarray) -> np.ndarray:
        return to_rgb(stored_as_jpeg(image[:, :, 0], jpeg_rng, p.jpeg_prob, p.jpeg_quality))

    clean = to_rgb(photo(surface))
    if not bad:
        return SynthResult(stored(clean), np.zeros((h, w), np.uint8))
    roll = math.pi / 2 if vertical else 0.0
    roll -= math.radians(tilt) * (-1 if vertical else 1)

    def angle(rng: np.random.Generator) -> float:
        if rng.uniform() < p.along_grain_prob:
            return roll + math.radians(rng.uniform(-10, 10))
        return rng.uniform(0, math.pi)

    def along_rolling(rng: np.random.Generator) -> float:
        return roll + math.radians(rng.uniform(-3, 3))

    contrast = float(scratch_rng.uniform(*p.contrast))
    texture = relief / max(float(relief.std()), 1e-6)
    cracks = bool(scratch_rng.uniform() < p.crack_prob)
    shape = p.crack if cracks else p.scratch
    sensitivity = np.full((h, w), contrast, np.float32) * (1.0 if edge is None else edge[0])  # on the part only
    ends = _part_ends(sensitivity > 0, vertical) if p.end_prob > 0 else None
    maps = place_scratches(scratch_rng, (h, w), shape, sensitivity, angle, ends, p.end_prob)
    scratched = surface
    for damage in maps:
        bright = not cracks and bool(scratch_rng.uniform() < p.bright_prob)
        scratched = app.metal_scratch(scratched, damage, texture, contrast, bright)
    if scratch_rng.uniform() < p.band_prob:  # a wide soft glint, as where a gouge's flank catches the light
        band = replace(p.scratch, count=(1, 1), width=p.band_width, length=p.band_length, curvature=0.02,
                       taper=0.05, patch_prob=0.0)
        damage = place_scratches(scratch_rng, (h, w), band, sensitivity, along_rolling)[0]
        damage = cv2.GaussianBlur(damage, (0, 0), float(scratch_rng.uniform(1.5, 3.5)))
        strength = float(scratch_rng.uniform(*p.band_strength))
        scratched = app.metal_scratch(scratched, damage * strength, texture, contrast, True)
        maps.append(damage)
    result = finish(clean, to_rgb(photo(scratched)), p.scratch, scratch_rng, maps)
    result.image = stored(result.image)
    return result
