"""How a damage map changes pixels: ink scraped off print (``ink``), a scratch in metal (``metal``) or a
crack in a ceramic or metal part (``crack``: thin, dark, meandering, a faint bright rim on one side).

All functions work on float32 gray images in 0-255 and return new arrays (inputs are not modified).
"""
from __future__ import annotations

import cv2
import numpy as np

APPEARANCES = ("ink", "metal", "crack")
CRACK_CONTRAST = (40.0, 100.0)
"""Gray levels a crack darkens the surface by at its centre: set side by side with real magnetic-tile cracks."""
CRACK_ALONG_GRAIN = 0.7
"""Share of cracks that follow the surface's grain (+-0.2 rad) where it has one (``grain_angle``)."""


def scrape_opacity(opacity: np.ndarray, damage: np.ndarray) -> np.ndarray:
    """Ink layer opacity after scraping: the scratch removes ``damage`` of the ink where it runs."""
    return opacity * (1.0 - damage)


def find_ink(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft ink weight (0-1, dark print) and the paper level under it, estimated from a photo.

    Ink is the dark class of an Otsu threshold; the paper level is a grayscale closing (max filter)
    wide enough to remove the strokes, so scraping towards it brightens ink and leaves paper alone.
    """
    u8 = np.clip(gray, 0, 255).astype(np.uint8)
    thr, dark = cv2.threshold(cv2.GaussianBlur(u8, (3, 3), 0), 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    # a tiny dark class (or near-uniform image) is noise, not print
    if dark.mean() > 0.6 or float(gray.max() - gray.min()) < 40:
        return np.zeros_like(gray, np.float32), gray.astype(np.float32)
    k = max(9, (min(gray.shape) // 12) | 1)
    paper = cv2.dilate(gray.astype(np.float32), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    paper = cv2.GaussianBlur(paper, (0, 0), k / 4)
    weight = cv2.GaussianBlur(dark.astype(np.float32), (0, 0), 0.8)
    weight *= np.clip((paper - gray) / max(1.0, 255.0 - thr), 0.0, 1.0) ** 0.5
    return weight.astype(np.float32), paper.astype(np.float32)


def scrape_photo(gray: np.ndarray, damage: np.ndarray, ink: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """Ink scraped off an existing photo: ink pixels move towards the paper level, paper stays."""
    return gray + damage * ink * np.maximum(paper - gray, 0.0)


def metal_scratch(
    gray: np.ndarray, damage: np.ndarray, texture: np.ndarray, contrast: float, bright: bool
) -> np.ndarray:
    """A bright specular line or a dark groove, its contrast modulated by the local surface texture.

    ``texture`` is the zero-mean surface relief normalised to unit std; a groove also gets a faint
    bright rim one pixel to its side, where the raised edge catches the light.
    """
    mod = np.clip(1.0 + 0.35 * texture, 0.4, 1.8)
    if bright:
        return gray + contrast * damage * mod
    rim = np.roll(damage, (1, 1), axis=(0, 1)) * (1.0 - damage)
    return gray - contrast * damage * mod + 0.25 * contrast * rim


def grain_angle(gray: np.ndarray) -> float | None:
    """Direction (radians, x right / y down) of the surface's streaks or grain, from the structure tensor of the
    whole image; None when the texture has no clear direction (coherence below 0.2)."""
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float((gx * gx).mean()), float((gy * gy).mean()), float((gx * gy).mean())
    if jxx + jyy <= 1e-6 or np.hypot(jxx - jyy, 2 * jxy) / (jxx + jyy) < 0.2:
        return None
    return 0.5 * float(np.arctan2(2 * jxy, jxx - jyy)) + np.pi / 2  # streaks run across their gradient


def photographic(delta: np.ndarray, rng: np.random.Generator, sigma: float = 0.6, noise: float = 2.0) -> np.ndarray:
    """Soften an added change like a lens would, and give it some sensor noise where it is."""
    soft = cv2.GaussianBlur(delta.astype(np.float32), (0, 0), sigma)
    weight = np.clip(np.abs(soft) / 20.0, 0.0, 1.0)
    return soft + rng.normal(0.0, noise, delta.shape).astype(np.float32) * weight
