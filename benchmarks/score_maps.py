"""Where does a segmenter fire? Score good and bad images with a checkpoint and draw the good images it scores
highest and the bad ones it scores lowest, each beside its scratch-probability map: the mistakes a zero-shot
model makes on real data, at a glance.

    python benchmarks/score_maps.py CKPT --good ../shared/data/magnetic_tile/MT_Free/Imgs \
        --bad ../shared/data/magnetic_tile/MT_Crack/Imgs --pattern '*.jpg' --every 8 --out maps.png

``sim2real.py --workdir W`` keeps its synthetic checkpoint (W/logs/synthetic-*/checkpoints/best.ckpt).
Prints the score percentiles (p10 p50 p90) of each group and the scores drawn.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from scratchlab.predictor import Prediction, Predictor

SIDE = 200  # px of each drawn tile


def _tile(pred: Prediction) -> np.ndarray:
    """The image and its probability map (jet colours), side by side."""
    image = cv2.resize(cv2.imread(str(pred.path)), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    heat = cv2.resize((pred.probability * 255).astype(np.uint8), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    return np.hstack([image, cv2.applyColorMap(heat, cv2.COLORMAP_JET)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path, help="a segmenter's scratchlab checkpoint")
    parser.add_argument("--good", type=Path, required=True, help="folder of good images")
    parser.add_argument("--bad", type=Path, required=True, help="folder of bad images")
    parser.add_argument("--pattern", default="*", help="file names to take from both folders (default: all)")
    parser.add_argument("--every", type=int, default=1, help="take every n-th good image (default 1)")
    parser.add_argument("--show", type=int, default=4, help="images drawn per group (default 4)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write; an existing file is an error")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out")
    predictor = Predictor.from_checkpoint(args.ckpt)
    if predictor.kind == "classification":
        parser.error(f"{args.ckpt} is a classifier; score maps need a model with probability maps")
    groups = {"good": sorted(args.good.glob(args.pattern))[:: args.every], "bad": sorted(args.bad.glob(args.pattern))}
    scored = {}
    for name, paths in groups.items():
        if not paths:
            parser.error(f"no files match {args.pattern!r} in the {name} folder")
        scored[name] = sorted(predictor.predict_paths(paths), key=lambda p: p.score, reverse=name == "good")
        scores = [p.score for p in scored[name]]
        print(f"{name}: {len(scores)} images, score p10/p50/p90 {np.percentile(scores, [10, 50, 90]).round(3)}; "
              f"drawn: {[round(p.score, 3) for p in scored[name][: args.show]]}")
    columns = [np.vstack([_tile(p) for p in scored[name][: args.show]]) for name in ("good", "bad")]
    height = max(c.shape[0] for c in columns)
    columns = [np.pad(c, ((0, height - c.shape[0]), (0, 0), (0, 0))) for c in columns]
    cv2.imwrite(str(args.out), np.hstack(columns))
    print(f"left: the highest-scored good images, right: the lowest-scored bad ones -> {args.out}")


if __name__ == "__main__":
    main()
