"""Judge a file or folder of images and write the results: the library behind ``python -m scratchlab.predict``.

Per image: ``<stem>_mask.png`` (models with maps; 0/255 at the image's own size), ``<stem>_overlay.png``
(scratches tinted, boxes with their areas, the decision as label) and one JSON line in
``DIR/predictions.jsonl``. Unreadable files get a warning line and an ``error`` JSON line and are skipped.
``run_predict`` returns 0 when every image was judged, 1 when some were skipped.

Outputs go through ``scratchlab.safe_output``: never through a symbolic link, each file atomically, and
over existing files only with ``overwrite=true``; then the files an earlier run listed in
``predictions.jsonl`` and this run did not write again are removed. Those listed files are never judged
as inputs (an output folder inside, or equal to, the input folder).
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
from omegaconf import DictConfig, OmegaConf

from scratchlab.cli import report_skipped
from scratchlab.config import require_complete
from scratchlab.data.io import IMAGE_EXTENSIONS, list_images, low_bits_advice, low_bits_max
from scratchlab.errors import ConfigError, DataError
from scratchlab.postprocess import given_overrides
from scratchlab.safe_output import atomic_path, checked_target, output_folder, refuse_existing, write_png

PREDICTIONS_FILE = "predictions.jsonl"


def collect_inputs(input_path: str | Path, recursive: bool = False) -> tuple[list[Path], Path | None]:
    """The image files to judge and the folder they are named relative to (None for a single file)."""
    path = Path(str(input_path)).expanduser()
    if path.is_file():
        return [path], None
    if not path.is_dir():
        raise ConfigError(f"input={input_path} does not exist; give an image file or a folder of images")
    files = list_images(path, recursive=recursive)
    if not files:
        hint = "" if recursive else " (add recursive=true for subfolders)"
        raise ConfigError(f"input={input_path} holds no images ({', '.join(IMAGE_EXTENSIONS)}){hint}")
    return files, path


def output_stems(paths: Sequence[Path], root: Path | None) -> dict[str, str]:
    """Output name stem per input: its path below ``root`` without suffix; ``a.png`` and ``a.jpg`` in one
    folder become ``a`` and ``a_jpg``."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for p in paths:
        stem = str(p.relative_to(root).with_suffix("")) if root is not None else p.stem
        if stem in used:
            stem = f"{stem}_{p.suffix.lstrip('.').lower()}"
        n = 1
        while stem in used:
            n, stem = n + 1, f"{stem}_{n}"
        used.add(stem)
        out[str(p)] = stem
    return out


def earlier_outputs(output: Path) -> set[Path]:
    """The mask and overlay files that ``output/predictions.jsonl`` of an earlier run lists (those inside
    ``output`` with no link on the way; lines that are not such records are ignored)."""
    listed = checked_target(output, PREDICTIONS_FILE)
    if not listed.is_file():
        return set()
    found: set[Path] = set()
    for line in listed.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        for key in ("mask_file", "overlay_file"):
            name = record.get(key) if isinstance(record, dict) else None
            if isinstance(name, str) and name:
                try:
                    found.add(checked_target(output, name))
                except ConfigError:
                    continue
    return found


def claim_outputs(output: Path, names: Sequence[str], inputs: set[Path], overwrite: bool) -> None:
    """Check the files named ``names`` in ``output`` before anything is written: each stays inside the folder
    with no link on the way (``checked_target``), replaces no input image, and is new unless ``overwrite``."""
    targets = [checked_target(output, name) for name in names]
    clash = next((p for p in targets if p in inputs), None)
    if clash is not None:
        raise ConfigError(f"writing {clash} would replace an input image; give another output folder")
    refuse_existing(targets, overwrite)


def _label(pred) -> str:
    """Short overlay caption: the decision, P(bad) or the max scratch probability, and the scratch area."""
    if pred.details is None:  # a classifier: no map, no area
        name = "P(bad)" if pred.score_name == "p_bad" else f"P({pred.extra.get('label')})"
        return f"{pred.decision} {name}={pred.score:.2f}"
    area = pred.details.scratch_area if pred.details is not None else 0
    return f"{pred.decision} p={pred.score:.2f} {area}px"


def _low_bits_max(path: str) -> int | None:
    """``low_bits_max`` of an image just judged (opens only the header of 8-bit files); None if it is gone."""
    try:
        return low_bits_max(path)
    except DataError:
        return None


def run_predict(cfg: DictConfig) -> int:
    """Judge ``cfg.input`` with ``cfg.ckpt`` or ``cfg.model_path``; returns the exit code (0 or 1)."""
    require_complete(cfg)
    if bool(cfg.get("ckpt")) == bool(cfg.get("model_path")):
        raise ConfigError("give exactly one of ckpt=PATH (a scratchlab .ckpt) or model_path=FILE "
                          "(.onnx / .pt from scratchlab.export)")
    for key, what in (("ckpt", "a scratchlab .ckpt file"), ("model_path", "an .onnx / .pt file from scratchlab.export")):
        path = Path(str(cfg.get(key) or "")).expanduser()
        if cfg.get(key) and not path.exists():  # before the slow imports
            raise ConfigError(f"{key}={cfg[key]} does not exist; pass the path of {what}")
        if cfg.get(key) and key == "model_path" and path.is_dir():  # a ckpt= folder: the checkpoint reader says more
            raise ConfigError(f"{key}={cfg[key]} is a folder; pass the path of {what}")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} must be at least 1")
    files, root = collect_inputs(cfg.input, bool(cfg.get("recursive", False)))
    output = output_folder(cfg.output)
    earlier = earlier_outputs(output)
    if root is not None:  # an earlier run's outputs in the input folder are not images to judge
        files = [p for p in files if p.resolve() not in earlier]
        if not files:
            raise ConfigError(f"input={cfg.input} holds only the outputs of an earlier prediction")
    stems = output_stems(files, root)
    overlays, overwrite = bool(cfg.get("overlays", True)), bool(cfg.get("overwrite", False))
    inputs = {p.resolve() for p in files}
    claim_outputs(output, [PREDICTIONS_FILE] + [f"{stem}_overlay.png" for stem in stems.values() if overlays],
                  inputs, overwrite)
    overrides = given_overrides(OmegaConf.to_container(cfg.decision, resolve=True))
    from tqdm import tqdm  # the heavy imports (torch) only once the arguments are known to be usable

    from scratchlab.predictor import Predictor
    from scratchlab.visualize import draw_overlay

    if cfg.get("ckpt"):
        predictor = Predictor.from_checkpoint(cfg.ckpt, overrides, device=str(cfg.get("device", "cpu")))
    else:
        predictor = Predictor.from_exported(cfg.model_path, overrides)
    if predictor.task_class.localizes:  # models with maps write masks too
        claim_outputs(output, [f"{stem}_mask.png" for stem in stems.values()], inputs, overwrite)
    written: set[Path] = set()
    counts: Counter[str] = Counter()
    skipped: list[tuple[str, str]] = []
    dark: list[str] = []  # unscaled 12-bit images, which read nearly black
    quiet = len(files) < 2 or not sys.stderr.isatty()  # no progress frames in logs
    bar = tqdm(total=len(files), desc="predict", unit="img", file=sys.stderr, disable=quiet,
               dynamic_ncols=True)
    with atomic_path(output / PREDICTIONS_FILE) as tmp, open(tmp, "w") as jsonl, bar:
        for pred in predictor.predict_paths(files, int(cfg.batch_size), skip_errors=True, keep_images=overlays):
            record = pred.to_json()
            if pred.ok:
                counts[pred.decision] += 1
                if (top := _low_bits_max(pred.path)) is not None:
                    record["warning"] = f"{pred.path} is {low_bits_advice(top)}"
                    if not dark:
                        tqdm.write(f"warning: {record['warning']}; its verdict means little", file=sys.stderr)
                    dark.append(pred.path)
                stem = stems[pred.path]
                if pred.mask is not None:
                    written.add(write_png(output / f"{stem}_mask.png", pred.mask))
                    record["mask_file"] = f"{stem}_mask.png"
                if overlays:
                    overlay = draw_overlay(pred.image, pred_mask=pred.mask, boxes=pred.components,
                                           label=_label(pred))
                    bgr = cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)
                    written.add(write_png(output / f"{stem}_overlay.png", bgr))
                    record["overlay_file"] = f"{stem}_overlay.png"
                    pred.image = None
            else:
                skipped.append((pred.path, pred.error))
                tqdm.write(f"warning: {pred.error} (skipped)", file=sys.stderr)
            jsonl.write(json.dumps(record) + "\n")
            bar.update()
    if len(dark) > 1:
        print(f"warning: {len(dark)} images read nearly black like {dark[0]} (each has a \"warning\" in "
              f"{PREDICTIONS_FILE})", file=sys.stderr)
    for stale in earlier - written:
        stale.unlink(missing_ok=True)
    print(f"{sum(counts.values())} of {len(files)} images judged: {counts['bad']} bad, {counts['good']} good"
          f"{f', {len(skipped)} skipped' if skipped else ''} -> {output / PREDICTIONS_FILE}")
    return report_skipped(skipped)
