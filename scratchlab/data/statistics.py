"""Appearance statistics of a set of scratch images and masks, for matching synthetic data to real photos.

``measure`` returns per quantity the values of all images (or scratch regions); ``percentiles`` summarises
them at p5 p25 p50 p75 p95. ``PRINTED_CODE_REFERENCE`` holds those percentiles measured on a real set of
about 5,000 printed-code photos, the target of the built-in ``text`` generator; ``save_percentiles`` and
``load_reference`` keep the percentiles of your own photos as the reference instead.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from scratchlab.errors import ConfigError
from scratchlab.safe_output import write_text

PERCENTILES = (5, 25, 50, 75, 95)
MAX_REGIONS = 20

PRINTED_CODE_REFERENCE: dict[str, tuple[float, ...]] = {
    "width": (177, 273, 290, 312, 329),
    "height": (98, 113, 125, 170, 300),
    "mask_coverage": (0.005, 0.011, 0.026, 0.053, 0.114),
    "regions": (1, 1, 2, 4, 10),
    "region_width": (4, 7, 9, 13, 25),
    "region_length": (8, 14, 21, 42, 85),
    "ink_level": (29, 44, 70, 101, 139),
    "paper_level": (235, 255, 255, 255, 255),
    "masked_level": (101, 143, 174, 224, 255),
}
"""p5 p25 p50 p75 p95 of each quantity ``measure`` returns, on real printed-code photos."""
SCRATCH_QUANTITIES = ("mask_coverage", "regions", "region_width", "region_length", "masked_level")
"""The quantities that describe the scratches and their masks (the rest describe the scene)."""


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)


def _regions(mask: np.ndarray) -> tuple[int, list[float], list[float]]:
    """Number of connected regions (capped), and each region's width (short side of its rotated
    bounding box, in whole pixels) and length (area / width)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    widths, lengths = [], []
    for i in range(1, n):
        area = float(stats[i, cv2.CC_STAT_AREA])
        pts = cv2.findNonZero((labels == i).astype(np.uint8))
        (_, _), (a, b), _ = cv2.minAreaRect(pts)
        width = min(a, b) + 1.0  # the rectangle runs through pixel centres
        widths.append(width)
        lengths.append(area / width)
    return min(n - 1, MAX_REGIONS), widths, lengths


def measure(samples: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> dict[str, np.ndarray]:
    """Per-quantity values over ``(image, mask)`` pairs (mask None or empty for good images).

    Image size, ink and paper levels come from every image (ink and paper are the medians of the dark and
    light class of an Otsu threshold, outside the mask); mask coverage, region count and the median gray
    level inside the mask from bad images; region width and length from every scratch region.
    """
    out: dict[str, list[float]] = {k: [] for k in PRINTED_CODE_REFERENCE}
    for image, mask in samples:
        gray = _gray(image)
        h, w = gray.shape
        out["width"].append(w)
        out["height"].append(h)
        on = np.zeros(gray.shape, bool) if mask is None else mask > 0
        thr, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        dark, light = gray[(gray <= thr) & ~on], gray[(gray > thr) & ~on]
        if dark.size and light.size:
            out["ink_level"].append(float(np.median(dark)))
            out["paper_level"].append(float(np.median(light)))
        if not on.any():
            continue
        out["mask_coverage"].append(float(on.mean()))
        out["masked_level"].append(float(np.median(gray[on])))
        n, widths, lengths = _regions(on.astype(np.uint8))
        out["regions"].append(n)
        out["region_width"] += widths
        out["region_length"] += lengths
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def percentiles(values: dict[str, np.ndarray]) -> dict[str, tuple[float, ...]]:
    """p5 p25 p50 p75 p95 of every quantity that has values."""
    return {k: tuple(float(x) for x in np.percentile(v, PERCENTILES)) for k, v in values.items() if v.size}


LOG_RATIO_FLOOR = {"mask_coverage": 1e-4}
"""Values below which ``log_ratio`` compares as equal, per quantity (1 for pixels, counts and gray levels)."""


def log_ratio(measured: tuple[float, ...], reference: tuple[float, ...], floor: float = 1.0) -> float:
    """Mean absolute natural-log ratio of matching percentiles: 0 when equal, about 0.1 when 10% apart. Values
    are raised to ``floor`` first, so that a percentile of 0 (black ink, say) does not swamp the rest."""
    got, ref = (np.maximum(np.asarray(v, np.float64), floor) for v in (measured, reference))
    return float(np.mean(np.abs(np.log(got / ref))))


def _log_ratio_of(key: str, measured: tuple[float, ...], reference: tuple[float, ...]) -> float:
    return log_ratio(measured, reference, LOG_RATIO_FLOOR.get(key, 1.0))


def scratch_log_ratio(measured: dict[str, tuple[float, ...]],
                      reference: dict[str, tuple[float, ...]] = PRINTED_CODE_REFERENCE) -> float | None:
    """``log_ratio`` averaged over the scratch quantities (``SCRATCH_QUANTITIES``); None if one is missing."""
    if any(k not in measured or k not in reference for k in SCRATCH_QUANTITIES):
        return None
    return float(np.mean([_log_ratio_of(k, measured[k], reference[k]) for k in SCRATCH_QUANTITIES]))


def comparison_table(measured: dict[str, tuple[float, ...]],
                     reference: dict[str, tuple[float, ...]] = PRINTED_CODE_REFERENCE) -> str:
    """Markdown table of measured against reference percentiles and their ``log_ratio``, one row per quantity
    (``-`` where either side has no values), then the scratch quantities' mean log-ratio (when both have them)."""
    head = " | ".join(f"p{p}" for p in PERCENTILES)
    lines = [f"| quantity | {head} | reference {head} | log-ratio |", "|---" * (2 + 2 * len(PERCENTILES)) + "|"]

    def cells(values: tuple[float, ...] | None) -> str:
        return " | ".join(f"{v:.3g}" for v in values) if values else " | ".join("-" for _ in PERCENTILES)

    for key in PRINTED_CODE_REFERENCE:
        got, ref = measured.get(key), reference.get(key)
        ratio = f"{_log_ratio_of(key, got, ref):.3f}" if got and ref else "-"
        lines.append(f"| {key} | {cells(got)} | {cells(ref)} | {ratio} |")
    overall = scratch_log_ratio(measured, reference)
    if overall is not None:
        lines.append("")  # not a table row
        lines.append(f"mean log-ratio of the scratch quantities ({', '.join(SCRATCH_QUANTITIES)}): {overall:.3f}")
    return "\n".join(lines)


def save_percentiles(path: Path, measured: dict[str, tuple[float, ...]], images: int) -> Path:
    """Write ``measured`` percentiles of ``images`` images as JSON, for ``load_reference`` (atomically)."""
    payload = {"images": images, "percentiles": {k: list(v) for k, v in measured.items()}}
    return write_text(path, json.dumps(payload, indent=2) + "\n")


def load_reference(path: str | Path) -> dict[str, tuple[float, ...]]:
    """Percentiles written by ``save_percentiles`` (a data check's ``statistics_file``), checked: any of the
    quantities ``measure`` knows (a set without masks has no scratch quantities), each with five finite numbers."""
    hint = "give the statistics.json that a data check with statistics=N wrote"
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"reference={path} is not a file; {hint}")
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"reference={path} cannot be read ({err.strerror or err}); {hint}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"reference={path} is not JSON; {hint}") from None
    table = payload.get("percentiles") if isinstance(payload, dict) else None
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"reference={path} holds no 'percentiles'; {hint}")
    out: dict[str, tuple[float, ...]] = {}
    for key, values in table.items():
        if key not in PRINTED_CODE_REFERENCE:
            raise ConfigError(f"reference={path}: unknown quantity {key!r}; known: {', '.join(PRINTED_CODE_REFERENCE)}")
        if not (isinstance(values, list) and len(values) == len(PERCENTILES) and all(_finite(v) for v in values)):
            raise ConfigError(f"reference={path}: {key} needs {len(PERCENTILES)} numbers (p5 p25 p50 p75 p95)")
        out[key] = tuple(float(v) for v in values)
    return out


def _finite(value: object) -> bool:
    """A JSON number that is a finite float (no bool, NaN, infinity, or integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
