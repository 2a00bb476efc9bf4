"""Which per-image number separates bad images from good ones best, given a segmenter's probability maps?
On one split, the AUROC of: the maximum scratch probability at the original image size (scratchlab's image
score, ``max``), and from the map at network geometry the mean of its k most probable pixels (``top1_mean`` is
the maximum there) and the scratch area (pixels at or over a mask threshold; under ``pad`` or ``letterbox`` it
follows the image's aspect). Choose a score on a validation split; confirm it on the test split. The maps are
the evaluation's cached predictions (the model runs once per split, then they are reused).

    # a sim2real.py --workdir W model: choose on its synthetic validation split, then look at the real test split
    python benchmarks/image_scores.py CKPT paths.root_dir=W split=val
    python benchmarks/image_scores.py CKPT paths.root_dir=W data=magnetic_tile data.root=PATH \
        data.task=crack_vs_free split=test

Any argument after the checkpoint is a ``scratchlab.evaluate`` override (``split=``, ``data=...``). Prints
one row per score and ends with one line:

    image_scores: <score>=<auroc> ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from scratchlab.config import compose
from scratchlab.evaluation.cache import ModelSource, get_predictions
from scratchlab.evaluation.job import evaluation_config
from scratchlab.evaluation.rescoring import bad_labels
from scratchlab.tasks import task_class

TOP_K = (1, 10, 50, 200)
"""Pixels averaged by the top-k scores (at network geometry; k=1 is the maximum there)."""
AREA_THRESHOLDS = (0.5, 0.7, 0.9)


def scores(prob_map: np.ndarray) -> dict[str, float]:
    """Every candidate image score of one (H, W) probability map."""
    flat = np.sort(prob_map.reshape(-1))[::-1]
    out = {f"top{k}_mean": float(flat[:k].mean()) for k in TOP_K}
    out.update({f"area@{t}": float((flat >= t).sum()) for t in AREA_THRESHOLDS})
    return out


def aurocs(maps: list[np.ndarray], bad: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """AUROC of each score (``scores``, and the ``extra`` ones given per image) for ``bad`` (bool per image)."""
    if bad.all() or not bad.any():
        raise ValueError("the split holds only one class; AUROC needs good and bad images")
    per_image = [scores(m) for m in maps]
    columns: dict[str, np.ndarray] = {name: np.array([s[name] for s in per_image]) for name in per_image[0]}
    columns.update(extra or {})
    target = torch.from_numpy(bad.astype(np.int64))
    return {name: float(binary_auroc(torch.from_numpy(values).double(), target)) for name, values in columns.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path, help="a segmenter's scratchlab checkpoint")
    args, overrides = parser.parse_known_args(argv)
    cfg = compose("evaluate", [f"ckpt={args.ckpt}", *overrides])
    source = ModelSource.from_checkpoint(args.ckpt)
    if not task_class(source.kind).localizes:
        parser.error(f"{args.ckpt} is a {source.kind} model; image scores from maps need a model with "
                     "probability maps")
    preds = get_predictions(source, evaluation_config(source, cfg), str(cfg.split), str(cfg.cache_dir),
                            device=str(cfg.device), refresh=bool(cfg.refresh))
    bad = bad_labels(preds)
    extra = {"max (scratchlab)": np.array([v.score for v in preds.verdicts(source.spec.decision)])}
    try:
        result = aurocs([preds.prob_map(i) for i in range(len(preds))], bad, extra)
    except ValueError as err:
        parser.error(f"{cfg.split} split: {err}")
    print(f"{cfg.split} split: {int(bad.sum())} bad, {int((~bad).sum())} good images")
    for name, value in sorted(result.items(), key=lambda item: -item[1]):
        print(f"{name:>18}  AUROC {value:.4f}")
    print("image_scores: " + " ".join(f"{name.split(' ')[0]}={value:.4f}" for name, value in result.items()))


if __name__ == "__main__":
    sys.exit(main())
