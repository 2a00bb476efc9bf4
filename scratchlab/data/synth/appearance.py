"""How a damage map changes pixels: ink scraped off print (``ink``) or a scratch in metal (``metal``).

All functions work on float32 gray images in 0-255 and return new arrays (inputs are not modified).
"""
from __future__ import annotations

import cv2
import numpy as np

APPEARANCES = ("ink", "metal")


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


def photographic(delta: np.ndarray, rng: np.random.Generator, sigma: float = 0.6, noise: float = 2.0) -> np.ndarray:
    """Soften an added change like a lens would, and give it some sensor noise where it is."""
    soft = cv2.GaussianBlur(delta.astype(np.float32), (0, 0), sigma)
    weight = np.clip(np.abs(soft) / 20.0, 0.0, 1.0)
    return soft + rng.normal(0.0, noise, delta.shape).astype(np.float32) * weight
