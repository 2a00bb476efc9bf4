"""Photographed printed codes (``68P0``-style, bold type) on a label, optionally with ink scraped off.

The scene (font and stroke weight, paper, print and its voids, lighting and glare, dark corner or label
edge, stray marks, dust and fibres, blur, sensor noise) is drawn once from its own random sub-streams; the
clean and the scratched photo are composed from the same scene, so the mask holds exactly the pixels the
scratch changed and, as annotators mark a scratch, each stroke's path between them (``mask_span``; over paper
gaps up to ``mask_span_gap`` px). A bad photo's strokes run near-parallel, most often along its line of print
or its characters' stems (``code_aligned_prob``). Scratches that blur or faint print would hide are drawn again
(``visible_change``, ``min_visible``). JPEG storage, when drawn, comes after the mask is taken.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scratchlab.data.synth import appearance as app
from scratchlab.data.synth.engine import (
    SynthResult,
    finish,
    place_scratches,
    sample_quantiles,
    stored_as_jpeg,
    to_rgb,
    visible_pixels,
)
from scratchlab.data.synth.params import TextParams
from scratchlab.errors import ConfigError

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
_STREAMS = ("layout", "code", "paper", "ink", "light", "corner", "marks", "optics", "noise", "jpeg", "scratch")


@lru_cache(maxsize=512)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    path = Path(name) if Path(name).is_absolute() else FONT_DIR / name
    if not path.is_file():
        raise ConfigError(f"font {name!r} not found; name a file in {FONT_DIR} or give an absolute path")
    return ImageFont.truetype(str(path), size)


def random_code(rng: np.random.Generator) -> str:
    """Two digits, one capital letter, one digit (like ``68P0``)."""
    digits = rng.integers(0, 10, 3)
    return f"{digits[0]}{digits[1]}{string.ascii_uppercase[rng.integers(26)]}{digits[2]}"


def _code_layout(code: str, font_name: str, size: int, tracking: float) -> tuple[list[float], int, int, int]:
    """Character x positions, canvas width and height, and the glyph top offset of ``code``."""
    font = _font(font_name, size)
    gap, x, xs = tracking * size, size / 4, []
    for c in code:
        xs.append(x)
        x += font.getlength(c) + gap
    _, top, _, bottom = font.getbbox("0")
    return xs, int(x - gap + size / 4), bottom - top + size // 2, top


def _code_coverage(code: str, font_name: str, size: int, tracking: float, weight: float) -> np.ndarray:
    """Anti-aliased ink coverage (float32 0-1) of ``code``, with a margin; ``weight`` (fraction of the font
    size) thickens (> 0) or thins (< 0) the strokes."""
    xs, width, height, top = _code_layout(code, font_name, size, tracking)
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    for c, x in zip(code, xs):
        draw.text((x, size / 4 - top), c, font=_font(font_name, size), fill=255)
    cov = np.asarray(img, np.float32) / 255.0
    r = int(round(abs(weight) * size / 2))
    if r >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        cov = cv2.dilate(cov, kernel) if weight > 0 else cv2.erode(cov, kernel)
    return cov


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
    code_angle: float  # direction of the line of print, radians
    opacity: np.ndarray  # print opacity 0-1
    ink_level: float
    marks: np.ndarray  # stray marks coverage 0-1
    mark_level: float
    debris: np.ndarray  # dust and fibres coverage 0-1
    debris_level: float
    corner: np.ndarray  # dark object / background beyond the label edge, coverage 0-1
    dark: np.ndarray  # its gray level
    light: np.ndarray  # multiplicative lighting
    glare: np.ndarray  # specular glare, fraction of the way to white
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
        g = g * (1 - self.debris) + self.debris_level * self.debris
        g = g * (1 - self.corner) + self.dark * self.corner
        g = g * self.light  # exposure: paper may lie above white; the sensor clips after blur and noise
        g = g + self.glare * np.maximum(255.0 - g, 0.0)
        return cv2.GaussianBlur(g, (0, 0), self.blur) + self.noise


def _place_code(rng: np.random.Generator, shape: tuple[int, int], p: TextParams) -> tuple[np.ndarray, float]:
    """Ink coverage of a random code, rotated, scaled and perspective-warped into the image, and the angle of
    its line of print (radians, image x towards y)."""
    h, w = shape
    code = random_code(rng)
    font_name = str(p.fonts[int(rng.integers(len(p.fonts)))])
    weight = rng.uniform(*p.stroke_weight)
    tracking = rng.uniform(0.0, 0.15)
    if w / h > p.wide_aspect or rng.uniform() < p.upright_prob:
        flip = 180 if rng.uniform() < p.upside_down_prob else 0
        theta = math.radians(rng.uniform(-p.upright_angle, p.upright_angle) + flip)
    else:
        theta = rng.uniform(0, 2 * math.pi)
    _, pw, ph, _ = _code_layout(code, font_name, 100, tracking)
    tw, th = pw / 100, ph / 100  # size per unit font size
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    fill = rng.uniform(*p.code_fill)
    size = int(max(8, min(w * fill / (c * tw + s * th), h * fill / (s * tw + c * th))))
    cov = _code_coverage(code, font_name, size, tracking, weight)
    ch, cw = cov.shape
    bw, bh = c * cw + s * ch, s * cw + c * ch
    cx = rng.uniform(min(bw / 2, w / 2), max(w - bw / 2, w / 2))
    cy = rng.uniform(min(bh / 2, h / 2), max(h - bh / 2, h / 2))
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    dst = (src - [cw / 2, ch / 2]) @ rot.T + [cx, cy]
    dst += rng.normal(0, p.perspective * min(cw, ch), dst.shape)
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    return cv2.warpPerspective(cov, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0), theta


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


def _label_edge(rng: np.random.Generator, shape: tuple[int, int], p: TextParams, ink: np.ndarray) -> np.ndarray:
    """Soft coverage of the background beyond the label's straight edge, near one side and off the print."""
    h, w = shape
    if rng.uniform() >= p.label_edge_prob:
        return np.zeros(shape, np.float32)
    side = int(rng.integers(4))
    extent = (w if side < 2 else h) * rng.uniform(0.03, 0.15)
    tilt = math.tan(math.radians(rng.uniform(-6, 6)))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    along, across = (y, x) if side < 2 else (x, y)
    depth = across if side in (0, 2) else (w if side == 1 else h) - 1 - across
    inside = (extent + tilt * (along - along.mean())) - depth
    busy = (ink > 0.05).astype(np.float32)
    if (busy * (inside > -2)).any():
        return np.zeros(shape, np.float32)
    return np.clip(inside / rng.uniform(0.6, 1.5) + 0.5, 0.0, 1.0).astype(np.float32)


def _glare(rng: np.random.Generator, shape: tuple[int, int], p: TextParams) -> np.ndarray:
    """A soft specular spot: fraction of the way to white (0 where there is none)."""
    h, w = shape
    if rng.uniform() >= p.glare_prob:
        return np.zeros(shape, np.float32)
    radius = rng.uniform(*p.glare_size) * math.hypot(h, w)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    spot = np.exp(-((x - cx) ** 2 + ((y - cy) * rng.uniform(0.6, 1.6)) ** 2) / (2 * radius**2))
    return (rng.uniform(*p.glare) * spot).astype(np.float32)


def _debris(rng: np.random.Generator, shape: tuple[int, int], p: TextParams) -> np.ndarray:
    """Coverage of dust specks (1-3 px blobs) and fibres (thin short curves) lying on the label."""
    h, w = shape
    canvas = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(p.dust[0], p.dust[1] + 1))):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        cv2.ellipse(canvas, centre, axes, rng.uniform(0, 180), 0, 360, int(rng.uniform(120, 255)), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(p.fibres[0], p.fibres[1] + 1))):
        length = rng.uniform(10, 45)
        phi = rng.uniform(0, math.pi)
        t = np.linspace(0, 1, 16)[:, None]
        start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        bend = rng.normal(0, 0.25) * length * np.array([-math.sin(phi), math.cos(phi)])
        pts = start + t * length * np.array([math.cos(phi), math.sin(phi)]) + 4 * t * (1 - t) * bend
        cv2.polylines(canvas, [np.round(pts * 4).astype(np.int32)], False, int(rng.uniform(90, 200)), 1,
                      cv2.LINE_AA, shift=2)
    return canvas.astype(np.float32) / 255.0


def _voids(rng: np.random.Generator, shape: tuple[int, int], p: TextParams, ink: np.ndarray) -> np.ndarray:
    """Print voids: small round spots inside the strokes where no ink was laid down (0-1 per pixel)."""
    out = np.zeros(shape, np.float32)
    solid = np.flatnonzero(ink > 0.9)
    if solid.size == 0:
        return out
    w = shape[1]
    for _ in range(int(rng.integers(p.voids[0], p.voids[1] + 1))):
        i = int(solid[rng.integers(solid.size)])
        cv2.circle(out, (i % w, i // w), int(rng.integers(1, 4)), float(rng.uniform(0.5, 1.0)), -1, cv2.LINE_AA)
    return out


def _scene(streams: dict[str, np.random.Generator], p: TextParams) -> _Scene:
    layout, code_rng, paper_rng, ink_rng = streams["layout"], streams["code"], streams["paper"], streams["ink"]
    light_rng, corner_rng, marks_rng = streams["light"], streams["corner"], streams["marks"]
    optics_rng, noise_rng = streams["optics"], streams["noise"]
    w = int(round(sample_quantiles(layout, p.width_quantiles)))
    h = int(round(sample_quantiles(layout, p.height_quantiles)))
    shape = (h, w)
    ink_cov, code_angle = _place_code(code_rng, shape, p)
    level = paper_rng.uniform(*p.paper)
    trace = paper_rng.uniform(*p.paper_trace)
    grain = paper_rng.uniform(*p.grain)
    paper = level + grain * (_low_freq(paper_rng, shape, 25) + paper_rng.standard_normal(shape, np.float32))
    ink_level = sample_quantiles(ink_rng, p.ink_quantiles)
    opacity = np.clip(1 - p.ink_unevenness * np.abs(_low_freq(ink_rng, shape, 8)), 0.5, 1.0)
    opacity *= 1 - _voids(ink_rng, shape, p, ink_cov)
    light = _lighting(light_rng, shape, p.lighting, p.vignette)
    glare = _glare(light_rng, shape, p)
    corner = np.maximum(_dark_corner(corner_rng, shape, p, ink_cov), _label_edge(corner_rng, shape, p, ink_cov))
    dark = corner_rng.uniform(*p.dark_level) * (1 + 0.15 * _low_freq(corner_rng, shape, 30))
    marks = _stray_marks(marks_rng, shape, p) * (1 - ink_cov)
    mark_level = marks_rng.uniform(*p.stray_level)
    debris = _debris(marks_rng, shape, p)
    debris_level = marks_rng.uniform(20.0, 120.0)
    blurry = optics_rng.uniform() < p.blur_prob
    blur = optics_rng.uniform(*(p.blur_sigma if blurry else p.sharp_sigma))
    noise = noise_rng.standard_normal(shape, np.float32) * np.float32(noise_rng.uniform(*p.noise))
    return _Scene(paper, trace, ink_cov, code_angle, opacity, ink_level, marks, mark_level, debris, debris_level,
                  corner, dark, light, glare, blur, noise)


def _scratch_direction(rng: np.random.Generator, code_angle: float, p: TextParams) -> float | None:
    """Shared stroke direction of one bad photo: with chance ``p.code_aligned_prob`` the line of print or the
    characters' stems (across it); else None, a random one."""
    if rng.uniform() >= p.code_aligned_prob:
        return None
    return code_angle + (math.pi / 2 if rng.uniform() < 0.5 else 0.0)


def render_text(seed: int, bad: bool, params: TextParams | None = None) -> SynthResult:
    """One printed-code photo; ``bad`` ones have ink scraped off, masked where the photo changed."""
    p = params or TextParams()
    seeds = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    streams = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds)}
    scene = _scene(streams, p)
    clean = to_rgb(scene.compose(None))
    if not bad:
        stored = stored_as_jpeg(clean[:, :, 0], streams["jpeg"], p.jpeg_prob, p.jpeg_quality)
        return SynthResult(to_rgb(stored), np.zeros(clean.shape[:2], np.uint8))
    scratch_rng = streams["scratch"]
    contrast = scene.ink_cov * scene.opacity * np.maximum(scene.paper - scene.ink_level, 0) * scene.light
    contrast *= (1 - scene.corner) * (1 - scene.glare)
    best, best_maps, best_n = clean, [], -1
    direction = _scratch_direction(scratch_rng, scene.code_angle, p)
    for _ in range(p.visible_tries):  # blur and faint print can hide a scratch: re-draw until it shows
        maps = place_scratches(scratch_rng, clean.shape[:2], p.scratch, contrast, direction=direction)
        scratched = to_rgb(scene.compose(np.maximum.reduce(maps)))
        n = visible_pixels(clean, scratched, p.visible_change)
        if n > best_n:
            best, best_maps, best_n = scratched, maps, n
        if n >= p.min_visible:
            break
    result = finish(clean, best, p.scratch, scratch_rng, best_maps)
    result.image = to_rgb(stored_as_jpeg(result.image[:, :, 0], streams["jpeg"], p.jpeg_prob, p.jpeg_quality))
    return result
