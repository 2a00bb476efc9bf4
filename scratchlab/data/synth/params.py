"""Tunables of the scratch synthesis engine, as plain dataclasses with defaults matched to real data.

Ranges are ``(low, high)`` tuples; ``*_quantiles`` are the values at the cumulative probabilities
``QUANTILE_PROBS`` (so sampling through them reproduces the percentiles of the real set).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scratchlab.errors import ConfigError

QUANTILE_PROBS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
"""Cumulative probabilities of every ``*_quantiles`` tuple (p0, p5, p25, p50, p75, p95, p100)."""


CODE_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneralBol.ttf",
              "DejaVuSans.ttf")
"""Fonts of matplotlib's bundled set that print codes plausibly: bold sans, mono and serif, and one regular."""


def _require_draws(name: str, value: object) -> None:
    """A count of draws below 1 would leave a bad image without a scratch."""
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} draws no scratch; set it to a whole number >= 1")


@dataclass
class ScratchParams:
    """Shape and strength of the scratches added to a bad image."""

    count: tuple[int, int] = (1, 10)  # strokes per image, 1 + geometric(count_p), clipped
    count_p: float = 0.3  # success probability of that geometric draw (higher: fewer strokes)
    width: tuple[float, float] = (1.0, 5.0)  # stroke width, px
    width_power: float = 1.0  # >1 skews widths towards the thin end
    length: tuple[float, float] = (0.1, 0.9)  # stroke length, fraction of the image diagonal (log-uniform)
    angle_spread: float = 0.0  # strokes of one image run this close (std, degrees) to one direction (0: each its own)
    curvature: float = 0.06  # Bezier control-point offset, fraction of the length (std)
    jitter: float = 0.5  # low-frequency sideways wobble of the centre line, px (std)
    meander: float = 0.0  # high-frequency sideways zigzag of the centre line (cracks), px (std)
    taper: float = 0.25  # fraction of the length over which each end thins to a point
    strength: tuple[float, float] = (0.3, 0.9)  # fraction of ink/texture removed at the stroke centre
    strength_wobble: float = 0.3  # relative variation of the strength along a stroke
    patch_prob: float = 0.1  # chance of one small scuffed patch per image
    patch_radius: tuple[float, float] = (4.0, 12.0)  # radius of a scuffed patch, px
    patch_strokes: tuple[int, int] = (6, 25)  # tiny strokes in a patch
    min_changed: int = 12  # a stroke that changes fewer pixels is re-drawn elsewhere
    max_tries: int = 12  # re-draws per stroke before giving up on it
    change_tol: int = 6  # a pixel counts as changed when it moved by more than this (0-255)
    mask_dilate: tuple[int, int] = (1, 2)  # dilation of the changed pixels into the mask, px
    mask_close: int = 0  # closing diameter that bridges gaps within one scratch, px (0: off)
    mask_span: bool = False  # the mask also runs along each stroke between its first and last changed pixel
    mask_span_gap: float | None = None  # ...but not over a stretch longer than this without a changed pixel, px

    def __post_init__(self) -> None:
        _require_draws("scratch.max_tries", self.max_tries)
        if self.mask_span_gap is not None and not (isinstance(self.mask_span_gap, (int, float))
                                                   and self.mask_span_gap > 0):
            raise ConfigError(f"scratch.mask_span_gap={self.mask_span_gap!r} is no gap; set it to a length in px "
                              "> 0, or null to bridge any gap")


@dataclass
class TextParams:
    """Photographed printed codes (four bold characters, ink on a white label)."""

    width_quantiles: tuple[float, ...] = (150, 177, 273, 290, 312, 329, 345)  # image width, px
    height_quantiles: tuple[float, ...] = (88, 98, 113, 125, 170, 300, 320)  # image height, px
    code_fill: tuple[float, float] = (0.65, 0.95)  # rotated code's extent / image extent
    wide_aspect: float = 1.6  # images wider than this (w/h) hold a near-horizontal code
    upright_prob: float = 0.3  # chance a squarer image's code is near-horizontal too (else any angle)
    upside_down_prob: float = 0.25  # chance a near-horizontal code is upside down
    upright_angle: float = 12.0  # max tilt of a near-upright code, degrees
    perspective: float = 0.08  # corner jitter of the code quad, fraction of its size
    ink_quantiles: tuple[float, ...] = (18, 22, 36, 62, 93, 131, 145)  # ink gray level
    paper: tuple[float, float] = (250.0, 340.0)  # paper level before lighting (clipped at 255)
    paper_trace: tuple[float, float] = (0.0, 0.03)  # faint dulling of bare paper under a scratch
    ink_unevenness: float = 0.05  # relative variation of the print's opacity
    lighting: tuple[float, float] = (0.0, 0.15)  # strength of the linear lighting gradient
    vignette: tuple[float, float] = (0.0, 0.12)  # darkening towards the corners
    dark_corner_prob: float = 0.5  # chance of a dark object filling one corner
    dark_corner_size: tuple[float, float] = (0.15, 0.45)  # its legs, fraction of the image side
    dark_level: tuple[float, float] = (8.0, 90.0)  # its gray level
    stray_marks: tuple[int, int] = (0, 3)  # faint unrelated marks / line art per image
    stray_level: tuple[float, float] = (175.0, 240.0)  # their gray level
    grain: tuple[float, float] = (1.0, 4.0)  # paper texture amplitude, gray levels
    blur_prob: float = 0.25  # chance the photo is out of focus
    blur_sigma: tuple[float, float] = (1.0, 2.4)  # out-of-focus blur, px
    sharp_sigma: tuple[float, float] = (0.35, 0.8)  # blur of an in-focus photo, px
    noise: tuple[float, float] = (1.0, 4.0)  # sensor noise std, gray levels
    # domain randomisation
    fonts: tuple[str, ...] = CODE_FONTS  # font files (matplotlib's font folder, or paths), one per image
    stroke_weight: tuple[float, float] = (-0.03, 0.05)  # print thinned (<0) / thickened, fraction of font size
    glare_prob: float = 0.15  # chance of a specular glare spot washing out part of the label
    glare: tuple[float, float] = (0.3, 0.8)  # its peak strength (fraction of the way to white)
    glare_size: tuple[float, float] = (0.1, 0.35)  # its radius, fraction of the image diagonal
    jpeg_prob: float = 0.5  # chance the photo was stored as JPEG (after the mask is taken)
    jpeg_quality: tuple[int, int] = (60, 95)
    # hard negatives: look a bit like damage, are not scratches, appear in good and bad images alike
    dust: tuple[int, int] = (0, 6)  # dark specks of 1-3 px per image
    fibres: tuple[int, int] = (0, 2)  # thin curved hairs / paper fibres per image
    voids: tuple[int, int] = (0, 3)  # small print voids (ink missing from birth, round, 1-3 px) per image
    label_edge_prob: float = 0.2  # chance the label's straight edge crosses the photo, background beyond
    scratch: ScratchParams = field(default_factory=lambda: text_strokes())  # a lambda: defined below
    code_aligned_prob: float = 0.8  # chance a bad photo's strokes run along its line of print or its stems
    # a bad photo shows its damage: its scratches are re-drawn (up to visible_tries times, else the most visible
    # draw is kept) until at least min_visible pixels of the photo before JPEG storage differ from the clean one
    # by visible_change gray levels or more (min_visible 0: the first draw, however faint)
    visible_change: float = 25.0
    min_visible: int = 20
    visible_tries: int = 12

    def __post_init__(self) -> None:
        _require_draws("visible_tries", self.visible_tries)


@dataclass
class MetalParams:
    """Rolled-steel-like surfaces."""

    width_quantiles: tuple[float, ...] = (150, 177, 273, 290, 312, 329, 345)  # image width, px
    height_quantiles: tuple[float, ...] = (88, 98, 113, 125, 170, 300, 320)  # image height, px
    base: tuple[float, float] = (35.0, 185.0)  # mean gray level
    streaks: tuple[float, float] = (4.0, 16.0)  # amplitude of the rolling streaks, gray levels
    streak_length: tuple[float, float] = (12.0, 60.0)  # correlation length along the rolling axis, px
    roll_angle: float = 4.0  # max deviation of the rolling axis from horizontal/vertical, degrees
    grain: tuple[float, float] = (2.0, 7.0)  # fine isotropic grain, gray levels
    scale_spots: tuple[int, int] = (0, 6)  # mill-scale spots per image
    scale_contrast: tuple[float, float] = (-40.0, 20.0)  # their gray-level offset
    lighting: tuple[float, float] = (0.0, 0.3)  # strength of the linear lighting gradient
    blur_prob: float = 0.15  # chance the photo is out of focus
    blur_sigma: tuple[float, float] = (0.9, 1.8)  # out-of-focus blur, px
    sharp_sigma: tuple[float, float] = (0.3, 0.6)  # blur of an in-focus photo, px
    noise: tuple[float, float] = (1.0, 3.5)  # sensor noise std, gray levels
    along_grain_prob: float = 0.5  # chance a scratch follows the rolling direction (+-10 degrees)
    bright_prob: float = 0.5  # chance a scratch is a bright specular line (else a dark groove)
    contrast: tuple[float, float] = (12.0, 100.0)  # scratch contrast, gray levels
    band_prob: float = 0.5  # chance a bad image also gets a wide bright gouge along the rolling axis
    band_width: tuple[float, float] = (6.0, 30.0)  # its width, px
    band_length: tuple[float, float] = (0.8, 1.5)  # its length, fraction of the image diagonal (log-uniform)
    band_strength: tuple[float, float] = (1.2, 3.0)  # its brightness, times the scratch contrast
    crack_prob: float = 0.25  # chance a bad image's grooves are meandering dark cracks (shape: ``crack``) instead
    end_prob: float = 0.0  # chance a stroke runs in from the part's end (its first or last pixel across the grain)
    # domain randomisation and hard negatives (in good and bad images alike)
    gamma: tuple[float, float] = (0.7, 1.4)  # camera response exponent
    pits: tuple[int, int] = (0, 10)  # small dark pits (1-2 px) per image
    inclusions: tuple[int, int] = (0, 2)  # short dark inclusions elongated along the rolling axis
    edge_prob: float = 0.0  # chance the part's edge is in view near one side (background beyond it, a bright rim)
    edge_depth: tuple[float, float] = (0.02, 0.15)  # how far in from that side it runs, fraction of the image
    highlights: tuple[int, int] = (0, 0)  # bright specular streaks along the rolling axis per image (ground surfaces)
    highlight_width: tuple[float, float] = (1.0, 8.0)  # their width, px
    highlight_strength: tuple[float, float] = (15.0, 70.0)  # their peak brightness, gray levels
    fibres: tuple[int, int] = (0, 0)  # dark fibres / scuff curls lying on the surface per image (hooks)
    fibre_length: tuple[float, float] = (8.0, 40.0)  # their length, px
    fibre_contrast: tuple[float, float] = (20.0, 80.0)  # their darkness, gray levels (2 px wide; 1 px: about half)
    jpeg_prob: float = 0.5  # chance the photo was stored as JPEG (after the mask is taken)
    jpeg_quality: tuple[int, int] = (60, 95)
    scratch: ScratchParams = field(default_factory=lambda: _metal_strokes())  # a lambda: defined below
    crack: ScratchParams = field(default_factory=lambda: dataclasses.replace(
        _metal_strokes(), width=(1.0, 2.5), curvature=0.3, jitter=2.0, meander=0.8))


def text_strokes() -> ScratchParams:
    """Scratches on printed codes: near-parallel streaks (one scraping) that scrape the ink only partly, mostly
    thin, masked along their path as annotators mark them, paper gaps of up to 25 px included (a wider gap
    splits the mark in two)."""
    return ScratchParams(count=(1, 16), count_p=0.25, width_power=1.5, length=(0.1, 1.0), angle_spread=5.0,
                         strength=(0.15, 0.6), mask_span=True, mask_span_gap=25.0)


def _metal_strokes() -> ScratchParams:
    """Scratch shapes on metal: fewer, thinner, longer and stronger strokes than on printed codes."""
    return ScratchParams(count=(1, 5), count_p=0.5, width=(1.0, 4.0), width_power=1.5, length=(0.1, 1.0),
                         curvature=0.08, strength=(0.65, 1.0), patch_prob=0.1, patch_radius=(6.0, 20.0),
                         mask_dilate=(1, 1), mask_close=0)


def tile_cracks() -> ScratchParams:
    """Crack shapes for real photos (``appearance=crack``), matched to the 57 real magnetic-tile cracks: 1-3 per
    image, 5-35% of the diagonal long (real: 13-27% of the longest side, p25-p75), 1-2 px wide, gently wavy."""
    return dataclasses.replace(MetalParams().crack, count=(1, 3), count_p=0.6, width=(1.0, 2.0), length=(0.05, 0.35),
                               curvature=0.15, meander=0.3, patch_prob=0.0)


P = TypeVar("P", TextParams, MetalParams, ScratchParams)


def params_from_dict(cls: type[P], values: dict[str, Any] | None) -> P:
    """Build ``cls`` from a (possibly partial, possibly YAML-typed) dict; unknown keys are an error."""
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} setting(s) {unknown}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if known[name].type in ("ScratchParams", ScratchParams):
            kwargs[name] = value if isinstance(value, ScratchParams) else params_from_dict(ScratchParams, value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def params_to_dict(params: TextParams | MetalParams | ScratchParams) -> dict[str, Any]:
    """Plain JSON-able dict of ``params`` (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(params))
