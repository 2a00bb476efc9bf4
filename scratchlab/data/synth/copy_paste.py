"""Copy-paste expansion: real scratches cut out with their masks and blended into good images.

Each connected component of a real mask (with ``margin`` px of context) is one piece. Within it only
the thin structures a morphological top-hat finds are pasted, weighted by their contrast
(``strength``): bright lines for printed codes (scraped ink), bright or dark ones for metal and cracks. The
loose background an annotator's mask also covers (paper, ink of other characters) stays behind.
A piece is flipped, rotated and laid over a good image at the best of a few random positions (for
printed codes: where the target has the most print, so the scratch still scrapes ink), shifted in
gray level to the target's paper (ink) or surroundings (metal), and alpha-blended with a feathered
edge (for ink only where it brightens the target: scraping never darkens print). The scratch keeps
its real texture and noise, without a seam. The written mask is exactly the set of pixels the paste
changed (by more than ``change_tol``), dilated by 1 px; every other pixel keeps the target's value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from scratchlab.data.io import read_image, read_mask
from scratchlab.data.synth import appearance as app
from scratchlab.data.synth.engine import change_mask
from scratchlab.errors import ConfigError, DataError

ANGLES = ("any", "right")
_DISK3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


@dataclass
class CopyPasteParams:
    """How real scratches are cut, placed and blended."""

    margin: int = 4  # px of context cut around each mask component (feather and level matching use it)
    min_area: int = 8  # mask components smaller than this (annotation specks) are not used
    components: tuple[int, int] = (1, 2)  # scratches pasted per image (uniform, inclusive)
    angles: str = "any"  # any: uniform rotation; right: multiples of 90 degrees (pixels copied exactly)
    flip: bool = True  # random horizontal / vertical mirroring
    candidates: int = 24  # random positions tried per paste; the best-scoring one is used
    min_inside: float = 0.6  # share of a scratch that must land inside the target image
    detail: int = 9  # px: structures narrower than this (the scratch) are told from the surface by a top-hat
    strength: tuple[float, float] = (6.0, 30.0)  # top-hat contrast at which a masked pixel starts to be
    # pasted / is pasted fully (gray levels)
    feather: float = 0.7  # Gaussian sigma of the soft alpha edge around the scratch, px
    max_shift: int = 48  # limit of the gray-level shift that matches the piece's surroundings to the target
    change_tol: int = 2  # pixels the paste moved by at most this keep the target's value (and stay unmasked)

    def __post_init__(self) -> None:
        if self.angles not in ANGLES:
            raise ConfigError(f"copy_paste.angles={self.angles!r} is not one of {list(ANGLES)}")
        lo, hi = (int(v) for v in self.components)
        if not 1 <= lo <= hi:
            raise ConfigError(f"copy_paste.components={list(self.components)} must be [low, high] "
                              f"with 1 <= low <= high")
        self.components = (lo, hi)
        lo_s, hi_s = (float(v) for v in self.strength)
        if not 0 <= lo_s < hi_s:
            raise ConfigError(f"copy_paste.strength={list(self.strength)} must be [low, high] with 0 <= low < high")
        self.strength = (lo_s, hi_s)


@dataclass(frozen=True)
class ScratchPiece:
    """One mask component of a real bad image, cut out with some context."""

    source: Path  # the real bad image
    component: int  # its label in the mask's 8-connected components
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the cut in the source image
    patch: np.ndarray  # (h, w, 3) uint8 RGB
    core: np.ndarray  # (h, w) bool: the component's mask pixels
    ring: np.ndarray  # (h, w) bool: unmasked context around it (level matching on metal)
    strength: np.ndarray  # (h, w) float32 0-1: how much of each pixel is pasted (0 outside the core)
    paper: float  # mean paper level under the core (level matching on printed codes)


def scratch_strength(image: np.ndarray, appearance: str, params: CopyPasteParams) -> np.ndarray:
    """0-1 per pixel: how clearly it belongs to a thin scratch (white top-hat for ``ink``, white or
    black top-hat for ``metal`` and ``crack``), ramped between ``params.strength``."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    k = max(3, int(params.detail) | 1)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    contrast = gray - cv2.morphologyEx(gray, cv2.MORPH_OPEN, se)
    if appearance != "ink":
        contrast = np.maximum(contrast, cv2.morphologyEx(gray, cv2.MORPH_CLOSE, se) - gray)
    lo, hi = params.strength
    return np.clip((contrast - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def cut_pieces(path: Path, image: np.ndarray, mask: np.ndarray, params: CopyPasteParams,
               appearance: str = "ink") -> list[ScratchPiece]:
    """The pieces of one real bad image (``mask`` 0/1 or 0/255 at the image's size)."""
    binary = (mask > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n < 2:
        return []
    strength = scratch_strength(image, appearance, params)
    _, paper = app.find_ink(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32))
    h, w = binary.shape
    m = params.margin
    k = 2 * m + 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < params.min_area:
            continue
        x0, y0, x1, y1 = max(0, x - m), max(0, y - m), min(w, x + bw + m), min(h, y + bh + m)
        core = labels[y0:y1, x0:x1] == i
        if not (strength[y0:y1, x0:x1][core] > 0).any():
            continue  # nothing in this component differs from the surface around it
        ring = (cv2.dilate(core.astype(np.uint8), disk) > 0) & (binary[y0:y1, x0:x1] == 0)
        out.append(ScratchPiece(Path(path), i, (x0, y0, x1, y1), image[y0:y1, x0:x1].copy(), core, ring,
                                strength[y0:y1, x0:x1] * core, float(paper[y0:y1, x0:x1][core].mean())))
    return out


class ScratchBank:
    """Every usable scratch piece of a real bad set (``bad/`` + ``masks/``, any FolderSource layout)."""

    def __init__(self, pieces: list[ScratchPiece], skipped: list[tuple[str, str]] | None = None) -> None:
        if not pieces:
            raise DataError("the copy-paste source holds no scratch of at least copy_paste.min_area pixels")
        self.pieces = pieces
        self.skipped = skipped or []

    @classmethod
    def from_folder(cls, root: str | Path, mask_threshold: int = 128, params: CopyPasteParams | None = None,
                    appearance: str = "ink") -> ScratchBank:
        from scratchlab.data.sources.folder import FolderSource

        params = params or CopyPasteParams()
        index = FolderSource(root, mask_threshold).load()
        bad = [s for s in index.samples if s.label != 0 and s.mask is not None]
        if not bad:
            raise DataError(f"source={root} has no bad images with masks; copy_paste cuts real scratches "
                            f"from bad/ with masks/ named like the images")
        pieces: list[ScratchPiece] = []
        skipped: list[tuple[str, str]] = []
        for s in bad:
            try:
                image = read_image(s.image)
                mask = read_mask(s.mask, int(s.meta.get("mask_threshold", mask_threshold)))
            except DataError as e:
                skipped.append((str(s.image), str(e)))
                continue
            if mask.shape != image.shape[:2]:
                skipped.append((str(s.image), f"mask {s.mask} does not match the image size"))
                continue
            pieces += cut_pieces(s.image, image, mask, params, appearance)
        if not pieces:
            raise DataError(f"source={root}: none of its {len(bad)} masks has a scratch of at least "
                            f"{params.min_area} px that could be read; check the masks "
                            f"(mask_threshold={mask_threshold})")
        return cls(pieces, skipped)


def _transform(piece: ScratchPiece, rng: np.random.Generator, params: CopyPasteParams
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, float]:
    """Flipped and rotated (patch float32, core bool, ring bool, alpha float32, flip, angle in degrees).

    ``flip``: 0 none, 1 mirrored left-right, 2 mirrored top-bottom (applied before the rotation).
    ``right`` angles turn by ``np.rot90`` (counter-clockwise), so pixels are copied exactly.
    """
    patch, core, ring, alpha = piece.patch, piece.core, piece.ring, piece.strength
    flip = int(rng.integers(3)) if params.flip else 0
    if flip:
        axis = 1 if flip == 1 else 0
        patch, core, ring, alpha = (np.flip(a, axis) for a in (patch, core, ring, alpha))
    if params.angles == "right":
        turns = int(rng.integers(4))
        patch, core, ring, alpha = (np.ascontiguousarray(np.rot90(a, turns)) for a in (patch, core, ring, alpha))
        return patch.astype(np.float32), core, ring, alpha, flip, 90.0 * turns
    angle = float(rng.uniform(0.0, 360.0))
    h, w = core.shape
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    nw, nh = int(math.ceil(w * c + h * s)), int(math.ceil(w * s + h * c))
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    m[0, 2] += (nw - w) / 2
    m[1, 2] += (nh - h) / 2

    def warp(a: np.ndarray, border: int) -> np.ndarray:
        return cv2.warpAffine(np.ascontiguousarray(a, dtype=np.float32), m, (nw, nh), flags=cv2.INTER_LINEAR,
                              borderMode=border, borderValue=0)

    patch_t = warp(patch, cv2.BORDER_REFLECT101)
    core_t = warp(core, cv2.BORDER_CONSTANT) >= 0.5
    ring_t = warp(ring, cv2.BORDER_CONSTANT) >= 0.5
    alpha_t = np.clip(warp(alpha, cv2.BORDER_CONSTANT), 0.0, 1.0)
    return patch_t, core_t, ring_t, alpha_t, flip, angle


def _place(core: np.ndarray, shape: tuple[int, int], weight: np.ndarray | None, rng: np.random.Generator,
           params: CopyPasteParams) -> tuple[int, int]:
    """Top-left corner (x, y) in the target of the best of ``params.candidates`` random positions.

    A position scores the share of the scratch inside the image (at least ``min_inside``), times the
    mean ink weight under it when ``weight`` is given (printed codes: scratches cross print).
    """
    H, W = shape
    h, w = core.shape
    ys, xs = np.nonzero(core)
    best, best_score = (0, 0), -math.inf
    for _ in range(max(1, params.candidates)):
        x0 = int(round(rng.uniform(0, W) - w / 2))
        y0 = int(round(rng.uniform(0, H) - h / 2))
        X, Y = xs + x0, ys + y0
        inside = (X >= 0) & (X < W) & (Y >= 0) & (Y < H)
        frac = float(inside.mean()) if inside.size else 0.0
        if frac < params.min_inside:
            score = frac - 2.0
        elif weight is not None:
            score = frac * (0.05 + float(weight[Y[inside], X[inside]].mean()))
        else:
            score = frac
        if score > best_score:
            best, best_score = (x0, y0), score
    return best


def print_weight(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft weight of printed ink (0-1) and the paper level, from ``find_ink``; dark regions that
    touch two image borders (an object behind the label's corner, a frame) or fill over 15% of the
    image are not print and get weight 0."""
    ink, paper = app.find_ink(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32))
    dark = (ink > 0.2).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    h, w = dark.shape
    drop = np.zeros(n, bool)
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        borders = (x == 0) + (y == 0) + (x + bw == w) + (y + bh == h)
        drop[i] = borders >= 2 or area > 0.15 * h * w
    if drop.any():
        near = cv2.dilate(drop[labels].astype(np.uint8), _DISK3, iterations=2) > 0
        ink = np.where(near, 0.0, ink).astype(np.float32)
    return ink, paper


def _is_gray(image: np.ndarray) -> bool:
    return bool((image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all())


def paste_scratches(target: np.ndarray, bank: ScratchBank, rng: np.random.Generator, appearance: str = "ink",
                    params: CopyPasteParams | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Paste 1+ real scratches into an RGB uint8 ``target``.

    Returns the new image, its mask (0/255: the pixels that changed by more than ``change_tol``,
    dilated by 1 px) and one record per paste (source image, cut box, flip, angle, top-left corner
    ``at`` and the per-channel ``shift``). The mask is empty when the pastes changed nothing.
    """
    params = params or CopyPasteParams()
    if appearance not in app.APPEARANCES:
        raise ConfigError(f"unknown scratch appearance {appearance!r}; use one of {list(app.APPEARANCES)}")
    if target.dtype != np.uint8 or target.ndim != 3 or target.shape[2] != 3:
        raise DataError(f"paste_scratches needs an RGB uint8 image, got {target.dtype} {target.shape}")
    H, W = target.shape[:2]
    gray_target = _is_gray(target)
    weight = paper = None
    if appearance == "ink":
        weight, paper = print_weight(target)
        weight = weight if float(weight.max()) > 0 else None
    out = target.astype(np.float32)
    records = []
    for _ in range(int(rng.integers(params.components[0], params.components[1] + 1))):
        piece = bank.pieces[int(rng.integers(len(bank.pieces)))]
        patch, core, ring, alpha, flip, angle = _transform(piece, rng, params)
        if gray_target:
            patch = np.repeat(cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
        x0, y0 = _place(core, (H, W), weight, rng, params)
        h, w = core.shape
        tx0, ty0, tx1, ty1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
        if tx1 <= tx0 or ty1 <= ty0:
            continue
        sub = np.s_[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0]
        src, dst, ring_in, core_in = patch[sub], out[ty0:ty1, tx0:tx1], ring[sub], core[sub]
        shift = np.zeros(3, np.float32)
        if paper is not None and core_in.any():  # scraped ink shows the paper: match the target's paper
            shift[:] = float(paper[ty0:ty1, tx0:tx1][core_in].mean()) - piece.paper
        elif int(ring_in.sum()) >= 5:  # a scratch in a surface: match the surface around it
            shift = np.median(dst[ring_in], axis=0) - np.median(src[ring_in], axis=0)
        shift = np.clip(np.rint(shift), -params.max_shift, params.max_shift).astype(np.float32)
        if params.feather > 0:
            alpha = np.maximum(alpha, cv2.GaussianBlur(alpha, (0, 0), params.feather))
        a = alpha[sub][:, :, None]
        change = np.clip(src + shift, 0, 255) - dst
        if appearance == "ink":  # scraping only ever removes ink: never darken the target
            change = np.maximum(change, 0.0)
        out[ty0:ty1, tx0:tx1] = dst + a * change
        records.append({"source": str(piece.source), "component": piece.component, "box": list(piece.box),
                        "flip": flip, "angle": round(angle, 3), "at": [x0, y0],
                        "shift": [int(v) for v in shift]})
    pasted = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    diff = np.abs(pasted.astype(np.int16) - target.astype(np.int16)).max(axis=2)
    changed = diff > params.change_tol
    image = np.where(changed[:, :, None], pasted, target)
    mask = change_mask(target, image, params.change_tol, 1)
    return image, mask, records
