"""Write a synthetic data set to disk (``good/ bad/ masks/`` + annotations) and read it back."""
from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from scratchlab.data.synth.engine import SynthResult
from scratchlab.data.synth.metal import render_metal
from scratchlab.data.synth.params import MetalParams, TextParams, params_from_dict, params_to_dict
from scratchlab.data.synth.text import render_text
from scratchlab.data.types import BINARY_CLASSES, Box, Sample, SampleIndex
from scratchlab.errors import ConfigError, DataError

GENERATOR_VERSION = 6
"""Bumped whenever the same arguments would render different images (invalidates caches)."""

KINDS: dict[str, tuple[Callable[..., SynthResult], type]] = {
    "text": (render_text, TextParams),
    "metal": (render_metal, MetalParams),
}


def resolve_params(kind: str, params: dict[str, Any] | None) -> TextParams | MetalParams:
    """The full parameter dataclass of ``kind`` with ``params`` applied over its defaults."""
    if kind not in KINDS:
        raise ConfigError(f"unknown synthetic data kind {kind!r}; use one of {sorted(KINDS)}")
    return params_from_dict(KINDS[kind][1], params)


_BAD_TRIES = 8
"""Draws of a bad image before its damage is called invisible."""
_STRONGER = {"text": "data.source.params.scratch.strength", "metal": "data.source.params.contrast"}
"""The setting that makes each generator's damage show more."""


def image_seed(seed: int, index: int, attempt: int = 0) -> int:
    """Seed of image ``index`` of a data set generated with ``seed`` (``attempt``: a bad image drawn again)."""
    return int(np.random.SeedSequence([seed, index] + ([attempt] if attempt else [])).generate_state(1)[0])


def render_image(kind: str, seed: int, index: int, bad: bool, params: TextParams | MetalParams) -> SynthResult:
    """Image ``index`` of a data set. A bad image whose damage changed no pixel (too faint to show, or hidden
    beyond a part's edge) is drawn again, from a seed derived from (seed, index, attempt): a bad image always has
    a non-empty mask."""
    render = KINDS[kind][0]
    for attempt in range(_BAD_TRIES if bad else 1):
        result = render(image_seed(seed, index, attempt), bad, params)
        if not bad or result.mask.any():
            return result
    raise ConfigError(f"{kind} generator: {_BAD_TRIES} draws of bad image {index} changed no pixel; "
                      f"the damage is too faint to see: raise {_STRONGER[kind]}")


def bad_indices(count: int, bad_fraction: float, seed: int) -> set[int]:
    """Which of the ``count`` images are bad: ``round(count * bad_fraction)`` of them, spread at random."""
    n_bad = int(round(count * bad_fraction))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C2A7C4]))
    return {int(i) for i in rng.permutation(count)[:n_bad]}


def _write_png(path: Path, array: np.ndarray) -> None:
    data = array[:, :, ::-1] if array.ndim == 3 else array
    if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
        raise DataError(f"could not write {path}; check that the folder is writable and has space")


def move_into_place(tmp: Path, target: Path) -> None:
    """Rename a finished folder ``tmp`` to ``target``, replacing any old ``target`` only at the very end."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def write_synthetic_dataset(
    root: Path,
    kind: str,
    count: int,
    bad_fraction: float,
    seed: int,
    params: dict[str, Any] | None = None,
    progress: bool = False,
) -> SampleIndex:
    """Render ``count`` images (``bad_fraction`` of them scratched) into ``root`` and index them.

    Layout: ``good/NNNNN.png``, ``bad/NNNNN.png``, ``masks/NNNNN.png`` (0/255, named like its bad
    image), ``annotations.jsonl`` (polygons and boxes per bad image) and ``synth.json`` (the
    arguments). Everything is written to a temporary sibling folder that is renamed to ``root`` at the
    end (replacing an existing ``root``), so an interrupted run leaves no half-written data set.
    The same arguments always give byte-identical files.
    """
    root = Path(root)
    p = resolve_params(kind, params)
    if count < 0 or not 0.0 <= bad_fraction <= 1.0:
        raise ConfigError(f"need count >= 0 and 0 <= bad_fraction <= 1, got count={count}, bad_fraction={bad_fraction}")
    bad = bad_indices(count, bad_fraction, seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for sub in ("good", "bad", "masks"):
            (tmp / sub).mkdir(parents=True)
        with open(tmp / "annotations.jsonl", "w") as ann:
            quiet = not progress or not sys.stderr.isatty()  # no progress frames in logs
            for i in tqdm(range(count), desc=f"{kind} images", disable=quiet, leave=False, mininterval=2.0):
                is_bad = i in bad
                result = render_image(kind, seed, i, is_bad, p)
                name = f"{i:05d}.png"
                _write_png(tmp / ("bad" if is_bad else "good") / name, result.image)
                if is_bad:
                    _write_png(tmp / "masks" / name, result.mask)
                    record = {
                        "image": f"bad/{name}",
                        "mask": f"masks/{name}",
                        "polygons": [[[x, y] for x, y in poly] for poly in result.polygons],
                        "boxes": [[b.x1, b.y1, b.x2, b.y2] for b in result.boxes],
                    }
                    ann.write(json.dumps(record) + "\n")
        meta = {"kind": kind, "count": count, "bad_fraction": bad_fraction, "seed": seed,
                "version": GENERATOR_VERSION, "params": params_to_dict(p)}
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        move_into_place(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_synthetic_index(root)


def load_synthetic_index(root: Path) -> SampleIndex:
    """Index a folder written by ``write_synthetic_dataset`` (good = 0, bad = 1, sorted by file name)."""
    root = Path(root)
    try:
        meta = json.loads((root / "synth.json").read_text())
        records = [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError) as exc:
        raise DataError(f"{root} is not a complete synthetic data set ({exc}); delete it to regenerate") from exc
    ann = {r["image"]: r for r in records}
    info = {"source": "synthetic", "kind": meta.get("kind")}
    samples = [Sample(p, 0, meta=dict(info)) for p in sorted((root / "good").glob("*.png"))]
    for path in sorted((root / "bad").glob("*.png")):
        mask = root / "masks" / path.name
        rec = ann.get(f"bad/{path.name}")
        if not mask.is_file() or rec is None:
            raise DataError(f"{path} has no mask or annotation in {root}; delete the folder to regenerate it")
        boxes = tuple(Box(*b) for b in rec["boxes"])
        polygons = tuple(tuple((float(x), float(y)) for x, y in poly) for poly in rec["polygons"])
        samples.append(Sample(path, 1, mask=mask, boxes=boxes, polygons=polygons, meta=dict(info)))
    samples.sort(key=lambda s: (s.image.name, s.image.parent.name))
    return SampleIndex(samples, list(BINARY_CLASSES))
