"""Render a grid of synthetic images (good and bad, mask outlines in red) for a human to look at.

    python scripts/preview_synth.py /tmp/synth_text.png --kind text
    python scripts/preview_synth.py /tmp/synth_metal.png --kind metal --n 12 --seed 7
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from scratchlab.data.synth import render_metal, render_text

def _outlined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    vis = image.copy()
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(vis, contours, -1, (255, 0, 0), 1)
    return vis


def _row(images: list[np.ndarray], titles: list[str], width: int) -> np.ndarray:
    height = max(im.shape[0] for im in images) + 22
    row = np.full((height, width * len(images), 3), 40, np.uint8)
    for k, (im, title) in enumerate(zip(images, titles)):
        h, w = im.shape[:2]
        row[20 : 20 + h, k * width + 4 : k * width + 4 + w] = im[:, : width - 8]
        cv2.putText(row, title, (k * width + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--kind", choices=["text", "metal"], default="text")
    parser.add_argument("--n", type=int, default=12, help="images (half good, half bad)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cols", type=int, default=3)
    args = parser.parse_args()
    render = render_text if args.kind == "text" else render_metal
    images, titles = [], []
    for i in range(args.n):
        bad = i % 2 == 1
        r = render(args.seed + i, bad)
        title = f"seed {args.seed + i} {'BAD' if bad else 'good'} {r.image.shape[1]}x{r.image.shape[0]}"
        if bad:
            title += f" mask {100 * float((r.mask > 0).mean()):.1f}% {len(r.boxes)} reg"
        images.append(_outlined(r.image, r.mask))
        titles.append(title)
    width = max(im.shape[1] for im in images) + 8
    rows = [_row(images[i : i + args.cols], titles[i : i + args.cols], width) for i in range(0, args.n, args.cols)]
    grid = np.vstack([np.pad(r, ((0, 0), (0, width * args.cols - r.shape[1]), (0, 0))) for r in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), grid[:, :, ::-1])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
