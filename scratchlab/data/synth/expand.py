"""Data-set expansion: bad images made from good ones, by synthesis (``apply_scratches``) or copy-paste.

Two users: ``python -m scratchlab.synth`` (a folder of good images -> a ready-to-train ``good/ bad/
masks/`` data set, :func:`expand_folder`) and ``data.synthetic_fraction`` (extra bad images for the
training split only, cached on disk, :func:`synthesize_train`). Bad image ``i`` depends only on the
seed, ``i`` and the list of good images, so the output is the same on every run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from scratchlab.data.io import IMAGE_EXTENSIONS, list_images, read_image
from scratchlab.data.synth import appearance as app
from scratchlab.data.synth.copy_paste import CopyPasteParams, ScratchBank, paste_scratches
from scratchlab.data.synth.engine import annotate, apply_scratches
from scratchlab.data.synth.params import (
    MetalParams,
    ScratchParams,
    params_from_dict,
    params_to_dict,
    text_strokes,
    tile_cracks,
)
from scratchlab.data.synth.writer import move_into_place
from scratchlab.data.types import Box, Sample
from scratchlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MODES = ("synthetic", "copy_paste", "both")
EXPAND_VERSION = 1
"""Bumped whenever the same arguments would make different images (invalidates synthetic_train caches)."""
META_FILE = "expand.json"
ANNOTATIONS_FILE = "annotations.jsonl"
_TRIES = 8
"""Good images tried per bad image before giving up."""


def scratch_params(appearance: str) -> ScratchParams:
    """The scratch shapes matched to real data for each appearance (printed codes / metal / cracks)."""
    return {"metal": MetalParams().scratch, "crack": tile_cracks()}.get(appearance) or text_strokes()


def save_image(path: Path, image: np.ndarray) -> None:
    """PNG of an RGB uint8 image, as one gray channel when its three channels are equal."""
    if image.ndim == 3 and (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all():
        data = image[:, :, 0]
    else:
        data = image[:, :, ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
        raise DataError(f"could not write {path}; check that the folder is writable and has space")


@dataclass
class BadMaker:
    """Makes bad image ``i`` from the good images ``goods``, deterministically for ``seed``.

    ``mode``: ``synthetic`` (``apply_scratches``, the mask is the engine's: the changed pixels, with
    ``mask_span`` each stroke's path between them too, and no pixel outside it changes), ``copy_paste`` (real
    scratches from ``bank``) or ``both`` (even ``i`` synthetic, odd ``i`` copy-paste). Good images that cannot
    be scratched (unreadable, or without dark print for ``appearance=ink``) are remembered per mode and other
    ones are tried.
    """

    goods: Sequence[Path]
    mode: str = "synthetic"
    appearance: str = "ink"
    seed: int = 0
    bank: ScratchBank | None = None
    copy_paste: CopyPasteParams = field(default_factory=CopyPasteParams)
    scratch: ScratchParams | None = None
    failed: dict[tuple[str, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} is not one of {', '.join(MODES)}")
        if self.appearance not in app.APPEARANCES:
            raise ConfigError(f"appearance={self.appearance!r} is not one of {', '.join(app.APPEARANCES)}")
        if self.mode != "synthetic" and self.bank is None:
            raise ConfigError(f"mode={self.mode} needs source=DIR: a real bad set (bad/ + masks/) "
                              f"to cut scratches from")
        if not self.goods:
            raise DataError("there are no good images to make bad images from")
        self.scratch = self.scratch or scratch_params(self.appearance)

    @property
    def unusable(self) -> dict[int, str]:
        """Good images (index: why) that could not be scratched in some mode."""
        return {j: why for (_, j), why in sorted(self.failed.items(), key=lambda kv: kv[0][1])}

    def mode_of(self, i: int) -> str:
        return self.mode if self.mode != "both" else ("synthetic", "copy_paste")[i % 2]

    def make(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(RGB image, 0/255 mask, record with ``source`` index, ``mode`` and, for copy-paste, ``pastes``)."""
        mode = self.mode_of(i)
        for attempt in range(_TRIES * 4):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, i, attempt, 0x5C4A7C]))
            j = int(rng.integers(len(self.goods)))
            if (mode, j) in self.failed:
                continue
            try:
                good = read_image(self.goods[j])
                if mode == "synthetic":
                    result = apply_scratches(good, rng, self.scratch, self.appearance)
                    image = np.where(result.mask[:, :, None] > 0, result.image, good)
                    mask, record = result.mask, {}
                else:
                    image, mask, pastes = paste_scratches(good, self.bank, rng, self.appearance, self.copy_paste)
                    record = {"pastes": pastes}
            except DataError as e:
                why = str(e)
                self.failed[(mode, j)] = why if str(self.goods[j]) in why else f"{self.goods[j]}: {why}"
                continue
            if mask.any():
                return image, mask, {"source": j, "mode": mode, **record}
        failed = [why for (m, _), why in self.failed.items() if m == mode]
        if len(failed) == len(self.goods):
            hint = ("; they have no dark print to scrape: use appearance=metal (data.synthetic_appearance=metal)"
                    if self.appearance == "ink" and mode == "synthetic" else "")
            first = failed[0]
            raise DataError(f"none of the {len(self.goods)} good images can be scratched{hint} (first: {first})")
        raise DataError(f"bad image {i}: {_TRIES * 4} tries changed no pixel; the good images may be blank")


def _write_bad(folder: Path, maker: BadMaker, count: int, names: Sequence[str], desc: str,
               progress: bool) -> list[dict[str, Any]]:
    """Write ``count`` bad images and masks into ``folder/bad`` and ``folder/masks``; their records."""
    records = []
    quiet = not progress or count < 2 or not sys.stderr.isatty()  # no progress frames in logs
    bar = tqdm(range(count), desc=desc, unit="img", file=sys.stderr, disable=quiet,
               dynamic_ncols=True, mininterval=1.0)
    for i in bar:
        image, mask, rec = maker.make(i)
        name = f"{i:05d}_{Path(names[rec['source']]).stem}.png"
        save_image(folder / "bad" / name, image)
        save_image(folder / "masks" / name, mask)
        polygons, boxes = annotate(mask)
        records.append({"image": f"bad/{name}", "mask": f"masks/{name}", "good": names[rec["source"]],
                        "mode": rec["mode"], **({"pastes": rec["pastes"]} if "pastes" in rec else {}),
                        "polygons": [[[x, y] for x, y in poly] for poly in polygons],
                        "boxes": [[b.x1, b.y1, b.x2, b.y2] for b in boxes]})
    return records


def _new_tmp(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    for sub in ("good", "bad", "masks"):
        (tmp / sub).mkdir(parents=True)
    return tmp


def _write_meta(folder: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    with open(folder / ANNOTATIONS_FILE, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# --- python -m scratchlab.synth ---------------------------------------------------------------------------

@dataclass
class ExpandSummary:
    output: Path
    good: int
    bad: int
    skipped: list[tuple[str, str]]
    unusable: list[str]


def find_inputs(input_dir: str | Path) -> list[Path]:
    """Images directly in ``input_dir``, or in ``input_dir/good`` when it is a data set root."""
    folder = Path(str(input_dir)).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"input={input_dir} is not a folder; give the folder of good images")
    files = list_images(folder) or list_images(folder / "good")
    if not files:
        raise DataError(f"input={input_dir} holds no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}); "
                        f"give the folder of good images")
    return files


def count_bad(n_good: int, n: int | None, bad_fraction: float | None) -> int:
    """``n`` itself, or as many bad images as make ``bad_fraction`` of the output."""
    if (n is None) == (bad_fraction is None):
        raise ConfigError("give either n=N (bad images to make) or bad_fraction=F (their share of the output)")
    if n is not None:
        if int(n) < 1:
            raise ConfigError(f"n={n} must be at least 1")
        return int(n)
    f = float(bad_fraction)
    if not 0.0 < f < 1.0:
        raise ConfigError(f"bad_fraction={bad_fraction} must be between 0 and 1 (exclusive)")
    return max(1, int(round(n_good * f / (1.0 - f))))


OUTPUT_FOLDERS = ("good", "bad", "masks")
OUTPUT_FILES = (ANNOTATIONS_FILE, META_FILE)
"""Everything :func:`expand_folder` writes into its output folder."""


def _foreign_top_entry(out: Path) -> str | None:
    """The first entry of the folder ``out`` that is not one :func:`expand_folder` writes, as ``it holds X``."""
    for entry in sorted(out.iterdir(), key=lambda p: p.name):
        expected_dir = entry.name in OUTPUT_FOLDERS
        if entry.name not in OUTPUT_FOLDERS + OUTPUT_FILES or entry.is_symlink() \
                or not (entry.is_dir() if expected_dir else entry.is_file()):
            return f"it holds {entry.name}{'/' if entry.is_dir() else ''}"
    return None


def _earlier_meta(out: Path) -> dict[str, Any] | None:
    """``expand.json`` of an earlier :func:`expand_folder` output with its annotation ``records``; None when
    either file is missing, unreadable or not of that shape."""
    try:
        meta = json.loads((out / META_FILE).read_text())
        records = [json.loads(line) for line in (out / ANNOTATIONS_FILE).read_text().splitlines() if line]
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in ("n", "good")) \
            or not all(isinstance(r, dict) for r in records):
        return None
    return {**meta, "records": records}


def foreign_entry(out: Path) -> str | None:
    """Why the existing non-empty folder ``out`` is not an earlier output of :func:`expand_folder` (its first
    entry that run did not write, or a file count that differs from its ``expand.json``); None when it is one."""
    if not out.is_dir():
        return "it is a file"
    why = _foreign_top_entry(out)
    if why is not None:
        return why
    meta = _earlier_meta(out)
    if meta is None:
        return f"its {META_FILE} and {ANNOTATIONS_FILE} are missing or were not written by scratchlab.synth"
    written = {"good": meta["good"], "bad": meta["n"], "masks": meta["n"]}
    listed = {"bad": {r.get("image") for r in meta["records"]}, "masks": {r.get("mask") for r in meta["records"]}}
    for sub in OUTPUT_FOLDERS:
        if not (out / sub).is_dir():
            return f"it lacks {sub}/"
        files = sorted((out / sub).iterdir(), key=lambda p: p.name)
        for f in files:
            name = f"{sub}/{f.name}"
            if f.is_symlink() or not f.is_file() or f.name.startswith(".") \
                    or f.suffix.lower() not in IMAGE_EXTENSIONS or (sub in listed and name not in listed[sub]):
                return f"it holds {name}{'/' if f.is_dir() else ''}"
        if len(files) != written[sub]:
            return f"{sub}/ holds {len(files)} files where its {META_FILE} records {written[sub]}"
    return None


def check_output(out: Path, output: str | Path, input_dir: str | Path, overwrite: bool) -> None:
    """ConfigError unless ``out`` may be written: outside the input folder, and new, empty or (with
    ``overwrite``) an earlier output of :func:`expand_folder` and nothing else."""
    inp = Path(str(input_dir)).expanduser().resolve()
    if inp == out or out in inp.parents:
        raise ConfigError(f"input={input_dir} is or lies inside output={output}; choose an output folder "
                          "outside the input")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise ConfigError(f"output={output} exists and is not empty; choose a new folder or add overwrite=true")
    why = foreign_entry(out)
    if why is not None:
        raise ConfigError(f"output={output} is not an earlier scratchlab.synth output ({why}); overwrite=true "
                          "replaces only such a folder: choose a new or empty folder")


def expand_folder(input_dir: str | Path, output: str | Path, n: int | None = None, *, mode: str = "synthetic",
                  appearance: str = "ink", seed: int = 0, bad_fraction: float | None = None,
                  source: str | Path | None = None, mask_threshold: int = 128,
                  copy_paste: dict[str, Any] | None = None, overwrite: bool = False,
                  progress: bool = True) -> ExpandSummary:
    """Write ``output/good`` (the readable input images, copied), ``output/bad`` and ``output/masks``
    (``n`` scratched copies of randomly chosen good images and their 0/255 masks), ``annotations.jsonl``
    (per bad image: its good image, mode, copy-paste placements, polygons, boxes) and ``expand.json``.

    Written into a temporary sibling folder renamed to ``output`` at the end. ``output`` must not hold the
    input folder; an existing non-empty one is a ConfigError, and ``overwrite`` replaces it only when it is
    an earlier output of this function and holds nothing else (:func:`foreign_entry`). Unreadable inputs
    are skipped (returned in ``skipped``); none readable, or no image at all, is a DataError.
    """
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    if appearance not in app.APPEARANCES:
        raise ConfigError(f"appearance={appearance!r} is not one of {', '.join(app.APPEARANCES)}")
    cp = params_from_dict(CopyPasteParams, copy_paste) if not isinstance(copy_paste, CopyPasteParams) else copy_paste
    files = find_inputs(input_dir)
    out = Path(str(output)).expanduser().resolve()
    check_output(out, output, input_dir, overwrite)
    count_bad(len(files), n, bad_fraction)  # argument errors before any work
    bank = None
    if mode != "synthetic":
        if source is None:
            raise ConfigError(f"mode={mode} needs source=DIR: a real bad set (bad/ + masks/) to cut scratches from")
        bank = ScratchBank.from_folder(source, mask_threshold, cp, appearance)
        for path, why in bank.skipped:
            tqdm.write(f"warning: {why} (source image skipped)", file=sys.stderr)
    tmp = _new_tmp(out)
    try:
        goods, names, skipped = [], [], []
        quiet = not progress or len(files) < 2 or not sys.stderr.isatty()
        for path in tqdm(files, desc="good", unit="img", file=sys.stderr, disable=quiet,
                         dynamic_ncols=True, mininterval=1.0):
            try:
                read_image(path)
            except DataError as e:
                skipped.append((str(path), str(e)))
                tqdm.write(f"warning: {e} (skipped)", file=sys.stderr)
                continue
            shutil.copyfile(path, tmp / "good" / path.name)
            goods.append(tmp / "good" / path.name)
            names.append(f"good/{path.name}")
        if not goods:
            raise DataError(f"none of the {len(files)} images in input={input_dir} can be read; "
                            f"first: {skipped[0][1]}")
        n_bad = count_bad(len(goods), n, bad_fraction)
        maker = BadMaker(goods, mode, appearance, int(seed), bank, cp)
        records = _write_bad(tmp, maker, n_bad, names, f"bad ({mode})", progress)
        unusable = [names[j] for j in sorted(maker.unusable)]
        meta = {"version": EXPAND_VERSION, "input": str(Path(str(input_dir)).resolve()), "mode": mode,
                "appearance": appearance, "seed": int(seed), "n": n_bad, "good": len(goods),
                "source": str(Path(str(source)).resolve()) if source is not None else None,
                "copy_paste": params_to_dict(cp) if mode != "synthetic" else None,
                "scratch": params_to_dict(maker.scratch) if mode != "copy_paste" else None,
                "skipped": [p for p, _ in skipped], "unusable": unusable}
        _write_meta(tmp, records, meta)
        move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExpandSummary(out, len(goods), n_bad, skipped, unusable)


# --- data.synthetic_fraction ------------------------------------------------------------------------------

def train_key(goods: Sequence[Path], count: int, seed: int, appearance: str) -> str:
    """Hash of everything that decides the synthetic training images (the good images' paths, sizes
    and modification times, the count, seed, appearance, scratch parameters, crack constants and version)."""
    files = []
    for p in sorted(str(Path(g).resolve()) for g in goods):
        try:
            st = os.stat(p)
            files.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([p, None, None])
    spec = {"goods": files, "count": count, "seed": seed, "appearance": appearance, "version": EXPAND_VERSION,
            "scratch": params_to_dict(scratch_params(appearance))}
    if appearance == "crack":
        spec["crack"] = [app.CRACK_CONTRAST, app.CRACK_ALONG_GRAIN]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _load_train(folder: Path, count: int) -> list[Sample] | None:
    """The cached synthetic samples of ``folder``, or None when it is missing or incomplete."""
    try:
        records = [json.loads(line) for line in (folder / ANNOTATIONS_FILE).read_text().splitlines() if line]
        json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    samples = []
    for r in records:
        image, mask = folder / r["image"], folder / r["mask"]
        if not (image.is_file() and mask.is_file()):
            return None
        samples.append(Sample(image, 1, mask=mask, boxes=tuple(Box(*b) for b in r["boxes"]),
                              polygons=tuple(tuple((float(x), float(y)) for x, y in poly) for poly in r["polygons"]),
                              meta={"synthetic": True, "source": r["good"]}))
    return samples if len(samples) == count else None


def synthesize_train(goods: Sequence[Path], count: int, seed: int, appearance: str, root: str | Path,
                     progress: bool = True) -> list[Sample]:
    """``count`` bad samples scratched (``apply_scratches``) from ``goods``, cached in ``root/<key>``.

    The folder has the usual layout (``good/`` empty, ``bad/``, ``masks/``, ``annotations.jsonl``,
    ``expand.json``); it is written into a temporary sibling and renamed, so a second call (or a
    second process) reuses it. Samples carry ``meta["synthetic"] = True`` and their good image.
    """
    if count <= 0:
        return []
    goods = sorted((Path(g) for g in goods), key=str)
    folder = Path(root) / train_key(goods, count, seed, appearance)
    cached = _load_train(folder, count)
    if cached is not None:
        log.info("reusing %d synthetic training images from %s", count, folder)
        return cached
    log.info("making %d synthetic training images into %s", count, folder)
    tmp = _new_tmp(folder)
    try:
        maker = BadMaker(goods, "synthetic", appearance, seed)
        records = _write_bad(tmp, maker, count, [str(g) for g in goods], "synthetic train", progress)
        _write_meta(tmp, records, {"version": EXPAND_VERSION, "count": count, "seed": seed, "appearance": appearance,
                                   "goods": [str(g) for g in goods],
                                   "unusable": [str(goods[j]) for j in sorted(maker.unusable)]})
        if folder.exists():  # incomplete leftover, or another process just finished the same set
            if _load_train(folder, count) is None:
                old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(folder, old)
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # a complete folder appeared meanwhile: use it
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    samples = _load_train(folder, count)
    if samples is None:
        raise DataError(f"synthetic training images in {folder} are incomplete; delete the folder and run again")
    return samples
