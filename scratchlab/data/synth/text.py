"""Photographed printed codes (``68P0``-style, bold sans) on a label, optionally with ink scraped off.

The scene (paper, print, lighting, dark corner, stray marks, blur, sensor noise) is drawn once from
its own random sub-streams; the clean and the scratched photo are composed from the same scene, so
the mask is exactly the set of pixels the scratch changed.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass
from functools import lru_cache

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scratchlab.data.synth import appearance as app
from scratchlab.data.synth.engine import SynthResult, finish, place_scratches, sample_quantiles, to_rgb
from scratchlab.data.synth.params import TextParams

FONT_PATH = f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans-Bold.ttf"
_STREAMS = ("layout", "code", "paper", "ink", "light", "corner", "marks", "optics", "noise", "scratch")


@lru_cache(maxsize=256)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT_PATH, size)


def random_code(rng: np.random.Generator) -> str:
    """Two digits, one capital letter, one digit (like ``68P0``)."""
    digits = rng.integers(0, 10, 3)
    return f"{digits[0]}{digits[1]}{string.ascii_uppercase[rng.integers(26)]}{digits[2]}"


def _code_layout(code: str, size: int, tracking: float) -> tuple[list[float], int, int, int]:
    """Character x positions, canvas width and height, and the glyph top offset of ``code``."""
    font = _font(size)
    gap, x, xs = tracking * size, size / 4, []
    for c in code:
        xs.append(x)
        x += font.getlength(c) + gap
    _, top, _, bottom = font.getbbox("0")
    return xs, int(x - gap + size / 4), bottom - top + size // 2, top


def _code_coverage(code: str, size: int, tracking: float) -> np.ndarray:
    """Anti-aliased ink coverage (float32 0-1) of ``code`` in the bold font, with a margin."""
    xs, width, height, top = _code_layout(code, size, tracking)
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    for c, x in zip(code, xs):
        draw.text((x, size / 4 - top), c, font=_font(size), fill=255)
    return np.asarray(img, np.float32) / 255.0


def _low_freq(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth zero-mean unit-std noise with features about ``cell`` px across."""
    h, w = shape
    small = rng.standard_normal((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2))).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (big - big.mean()) / max(float(big.std()), 1e-6)


def _lighting(
    rng: np.random.Generator, shape: tuple[int, int], gradient: tuple[float, float], vignette: tuple[float, float]
) -> np.ndarray:
    """Multiplicative lighting: a linear fall-off in a random direction and darker corners."""
    h, w = shape
    x = np.arange(w, dtype=np.float32) - (w - 1) / 2
    y = np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2
    phi = rng.uniform(0, 2 * math.pi)
    ramp = x * math.cos(phi) + y * math.sin(phi)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    r2 = (x**2 + y**2) / ((w / 2) ** 2 + (h / 2) ** 2)
    return 1 - np.float32(rng.uniform(*gradient)) * ramp - np.float32(rng.uniform(*vignette)) * r2


@dataclass
class _Scene:
    """Everything of one photo except the scratch."""

    paper: np.ndarray  # label level incl. texture
    trace: float  # how much a scratch dulls bare paper (fraction of its level)
    ink_cov: np.ndarray  # print coverage 0-1
    opacity: np.ndarray  # print opacity 0-1
    ink_level: float
    marks: np.ndarray  # stray marks coverage 0-1
    mark_level: float
    corner: np.ndarray  # dark object coverage 0-1
    dark: np.ndarray  # dark object gray level
    light: np.ndarray  # multiplicative lighting
    blur: float
    noise: np.ndarray

    def compose(self, damage: np.ndarray | None) -> np.ndarray:
        """The photo (float gray) with the print scraped by ``damage`` (or clean)."""
        opacity, paper = self.opacity, self.paper
        if damage is not None:
            opacity, paper = app.scrape_opacity(opacity, damage), paper * (1 - self.trace * damage)
        a = self.ink_cov * opacity
        g = paper * (1 - a) + self.ink_level * a
        g = g * (1 - self.marks) + self.mark_level * self.marks
        g = g * (1 - self.corner) + self.dark * self.corner
        g = cv2.GaussianBlur(np.minimum(g * self.light, 255.0), (0, 0), self.blur)
        return g + self.noise


def _place_code(rng: np.random.Generator, shape: tuple[int, int], p: TextParams) -> np.ndarray:
    """Ink coverage of a random code, rotated, scaled and perspective-warped into the image."""
    h, w = shape
    code = random_code(rng)
    tracking = rng.uniform(0.0, 0.15)
    if w / h > p.wide_aspect or rng.uniform() < p.upright_prob:
        flip = 180 if rng.uniform() < p.upside_down_prob else 0
        theta = math.radians(rng.uniform(-p.upright_angle, p.upright_angle) + flip)
    else:
        theta = rng.uniform(0, 2 * math.pi)
    _, pw, ph, _ = _code_layout(code, 100, tracking)
    tw, th = pw / 100, ph / 100  # size per unit font size
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    fill = rng.uniform(*p.code_fill)
    size = int(max(8, min(w * fill / (c * tw + s * th), h * fill / (s * tw + c * th))))
    cov = _code_coverage(code, size, tracking)
    ch, cw = cov.shape
    bw, bh = c * cw + s * ch, s * cw + c * ch
    cx = rng.uniform(min(bw / 2, w / 2), max(w - bw / 2, w / 2))
    cy = rng.uniform(min(bh / 2, h / 2), max(h - bh / 2, h / 2))
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    dst = (src - [cw / 2, ch / 2]) @ rot.T + [cx, cy]
    dst += rng.normal(0, p.perspective * min(cw, ch), dst.shape)
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    return cv2.warpPerspective(cov, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


def _dark_corner(rng: np.random.Generator, shape: tuple[int, int], p: TextParams, ink: np.ndarray) -> np.ndarray:
    """Soft coverage of a dark object behind the label filling one corner (kept off the print)."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    if rng.uniform() >= p.dark_corner_prob:
        return out
    corner = int(rng.integers(4))
    a, b = rng.uniform(*p.dark_corner_size) * w, rng.uniform(*p.dark_corner_size) * h
    bulge = rng.uniform(-0.25, 0.25)
    sx, sy = (1, 1) if corner == 0 else (-1, 1) if corner == 1 else (-1, -1) if corner == 2 else (1, -1)
    ox, oy = (0 if sx > 0 else w - 1), (0 if sy > 0 else h - 1)
    busy = cv2.dilate((ink > 0.05).astype(np.uint8), np.ones((9, 9), np.uint8))
    blur = rng.uniform(0.6, 1.8)
    for _ in range(6):
        t = np.linspace(0, 1, 24)[:, None]
        p0, p2 = np.array([a, 0.0]), np.array([0.0, b])
        p1 = (p0 + p2) / 2 + bulge * np.array([a, b])
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        poly = np.vstack([[[0.0, 0.0]], curve]) * [sx, sy] + [ox, oy]
        canvas = np.zeros(shape, np.uint8)
        cv2.fillPoly(canvas, [np.round(poly * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
        if not np.any(canvas[busy > 0]):
            return cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), blur)
        a, b = a * 0.7, b * 0.7
    return out


def _stray_marks(rng: np.random.Generator, shape: tuple[int, int], p: TextParams) -> np.ndarray:
    """Faint unrelated marks: label borders, rules, arcs and tiny text."""
    h, w = shape
    canvas = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(p.stray_marks[0], p.stray_marks[1] + 1))):
        kind = rng.integers(4)
        val = int(rng.uniform(90, 255))
        thick = int(rng.integers(1, 3))
        pt = lambda: (int(rng.uniform(-0.1, 1.1) * w), int(rng.uniform(-0.1, 1.1) * h))  # noqa: E731
        if kind == 0:
            cv2.line(canvas, pt(), pt(), val, thick, cv2.LINE_AA)
        elif kind == 1:
            axes = (int(rng.uniform(10, w)), int(rng.uniform(10, h)))
            cv2.ellipse(canvas, pt(), axes, rng.uniform(0, 360), 0, rng.uniform(40, 360), val, thick, cv2.LINE_AA)
        elif kind == 2:
            m = int(rng.uniform(2, 12))
            cv2.rectangle(canvas, (m, m), (w - 1 - m, h - 1 - m), val, thick, cv2.LINE_AA)
        else:
            txt = "".join(rng.choice(list(string.ascii_uppercase + string.digits + "-/ "), int(rng.integers(3, 10))))
            cv2.putText(canvas, txt, pt(), cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 0.6), val, 1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def _scene(streams: list[np.random.Generator], p: TextParams) -> _Scene:
    layout, code_rng, paper_rng, ink_rng, light_rng, corner_rng, marks_rng, optics_rng, noise_rng = streams[:9]
    w = int(round(sample_quantiles(layout, p.width_quantiles)))
    h = int(round(sample_quantiles(layout, p.height_quantiles)))
    shape = (h, w)
    ink_cov = _place_code(code_rng, shape, p)
    level = paper_rng.uniform(*p.paper)
    trace = paper_rng.uniform(*p.paper_trace)
    grain = paper_rng.uniform(*p.grain)
    paper = level + grain * (_low_freq(paper_rng, shape, 25) + paper_rng.standard_normal(shape, np.float32))
    ink_level = sample_quantiles(ink_rng, p.ink_quantiles)
    opacity = np.clip(1 - p.ink_unevenness * np.abs(_low_freq(ink_rng, shape, 8)), 0.5, 1.0)
    light = _lighting(light_rng, shape, p.lighting, p.vignette)
    corner = _dark_corner(corner_rng, shape, p, ink_cov)
    dark = corner_rng.uniform(*p.dark_level) * (1 + 0.15 * _low_freq(corner_rng, shape, 30))
    marks = _stray_marks(marks_rng, shape, p) * (1 - ink_cov)
    mark_level = marks_rng.uniform(*p.stray_level)
    blurry = optics_rng.uniform() < p.blur_prob
    blur = optics_rng.uniform(*(p.blur_sigma if blurry else p.sharp_sigma))
    noise = noise_rng.standard_normal(shape, np.float32) * np.float32(noise_rng.uniform(*p.noise))
    return _Scene(paper, trace, ink_cov, opacity, ink_level, marks, mark_level, corner, dark, light, blur, noise)


def render_text(seed: int, bad: bool, params: TextParams | None = None) -> SynthResult:
    """One printed-code photo; ``bad`` ones have ink scraped off, masked where the photo changed."""
    p = params or TextParams()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(_STREAMS))]
    scene = _scene(streams, p)
    clean = to_rgb(scene.compose(None))
    if not bad:
        return SynthResult(clean, np.zeros(clean.shape[:2], np.uint8))
    scratch_rng = streams[-1]
    contrast = scene.ink_cov * scene.opacity * np.maximum(scene.paper - scene.ink_level, 0) * scene.light
    contrast *= 1 - scene.corner
    damage = np.maximum.reduce(place_scratches(scratch_rng, clean.shape[:2], p.scratch, contrast))
    return finish(clean, to_rgb(scene.compose(damage)), p.scratch, scratch_rng)
