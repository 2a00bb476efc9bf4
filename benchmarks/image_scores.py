"""Which per-image number separates bad images from good ones best, given a segmenter's probability maps?
On one split, the AUROC of candidate image scores of each map at the original image size: ``topK``, the mean of
its K most probable pixels (the image score ``decision.score_top_k=K`` gives; ``top1`` is the maximum, the
default), ``area@T``, its pixels at or over T, and ``largest@T``, the largest connected region of them (the area
rule's ``decision.area_mode=max``): a long crack against scattered hot pixels. Choose a score on a validation
split; confirm it on the test split. The maps are the evaluation's cached predictions (the model runs once per
split, then they are reused).

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

import cv2
import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from scratchlab.config import compose
from scratchlab.evaluation.cache import ModelSource, get_predictions
from scratchlab.evaluation.job import evaluation_config
from scratchlab.evaluation.rescoring import bad_labels
from scratchlab.postprocess import map_score
from scratchlab.tasks import task_class

TOP_K = (1, 10, 50, 200)
"""The ``decision.score_top_k`` values compared (1: the maximum probability)."""
AREA_THRESHOLDS = (0.5, 0.7, 0.9)


def scores(prob_map: np.ndarray) -> dict[str, float]:
    """Every candidate image score of one (H, W) probability map."""
    out = {f"top{k}": map_score(prob_map, k)[0] for k in TOP_K}
    for t in AREA_THRESHOLDS:
        on = (prob_map >= t).astype(np.uint8)
        out[f"area@{t}"] = float(on.sum())
        n, _, stats, _ = cv2.connectedComponentsWithStats(on, connectivity=8)
        out[f"largest@{t}"] = float(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0.0
    return out


def aurocs(per_image: list[dict[str, float]], bad: np.ndarray) -> dict[str, float]:
    """AUROC of each score (``scores`` of each image) for ``bad`` (bool per image)."""
    if bad.all() or not bad.any():
        raise ValueError("the split holds only one class; AUROC needs good and bad images")
    columns: dict[str, np.ndarray] = {name: np.array([s[name] for s in per_image]) for name in per_image[0]}
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
    judge = task_class(source.kind).judge  # each map at its image's original size, one at a time
    per_image = [scores(judge(raw, tuple(size), source.spec).probability)
                 for raw, size in zip(preds.raws, preds.sizes.tolist())]
    try:
        result = aurocs(per_image, bad)
    except ValueError as err:
        parser.error(f"{cfg.split} split: {err}")
    print(f"{cfg.split} split: {int(bad.sum())} bad, {int((~bad).sum())} good images")
    for name, value in sorted(result.items(), key=lambda item: -item[1]):
        print(f"{name:>8}  AUROC {value:.4f}")
    print("image_scores: " + " ".join(f"{name}={value:.4f}" for name, value in result.items()))


if __name__ == "__main__":
    sys.exit(main())
