"""Training images/s of one classifier: a plain PyTorch loop (benchmarks/bare_loop.py) against scratchlab,
same data, model, batch, epochs and device; prints both figures and their ratio.

    python benchmarks/throughput.py                                   # the custom CNN at 100 px, on the CPU
    python benchmarks/throughput.py --model resnet18 --image-size 64 --batch-size 16
    python benchmarks/throughput.py --model convnext_tiny --image-size 224 --device cuda --images 3600

``--model`` is ``cnn`` or any timm model name (random init). Images are the built-in text_scratch_easy set
(``--images`` of them, 80 % used for training), unless Hydra overrides name other data (``data=folder
data.root=PATH``). On CUDA both sides train in fp16 (``16-mixed``) with pinned memory. Images/s counts
training images from the end of the first epoch to the end of the last (validation included on both sides).
``--repeats N`` runs N pairs, the side that goes first alternating from pair to pair, and reports the
median of each side and the median of the N paired ratios: on a shared machine the load drifts, and the two
runs of a pair, back to back, see about the same load.
Data, runs and logs go to a temporary folder, removed at the end (``--workdir`` to keep one).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import train_and_test  # noqa: E402
from parity import BUILTIN_DATA, bare_split, scratchlab_side  # noqa: E402


def model_overrides(model: str, image_size: int) -> list[str]:
    """The scratchlab config of ``model`` (``cnn`` or a timm name) at ``image_size``."""
    if model == "cnn":
        return ["model=cnn", f"model.image_size={image_size}"]
    return ["model=resnet50", f"model.name={model}", f"model.image_size={image_size}", "model.pretrained=false"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn", help="cnn or a timm model name")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--image-size", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="at least 2 (the first epoch is not timed)")
    parser.add_argument("--images", type=int, default=1500, help="size of the built-in data set")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers of both sides")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of both sides (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating (scratchlab, bare) pairs (default 1)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides of the scratchlab side")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (images/s is measured after the first epoch)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    device = ["trainer.accelerator=gpu", "trainer.precision=16-mixed", "data.pin_memory=true"] \
        if args.device == "cuda" else ["trainer.accelerator=cpu"]
    data = [] if any(o.startswith("data=") for o in args.overrides) else \
        [f"data={BUILTIN_DATA}", f"data.source.count={args.images}"]
    overrides = [*model_overrides(args.model, args.image_size), *data, *device, "augment=none",
                 f"data.batch_size={args.batch_size}", f"data.num_workers={args.workers}",
                 "data.split.train=0.8", "data.split.val=0.1", "data.split.test=0.1",
                 "callbacks.early_stopping=null", "loss.pos_weight=null", *args.overrides]
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="scratchlab-throughput-"))).resolve()
    pairs: list[tuple[float, float]] = []
    try:
        first = scratchlab_side("classify", overrides, workdir, 0, args.epochs)  # also fixes the bare side's split
        cfg, split = first["cfg"], first["split"]
        for repeat in range(args.repeats):
            result: dict[str, float] = {}
            for side in (("bare", "scratchlab") if repeat % 2 else ("scratchlab", "bare")):  # order alternates
                if side == "bare":
                    result[side] = train_and_test("classify", bare_split(cfg, split), cfg, 0,
                                                  device=args.device).images_per_s
                else:
                    run = first if repeat == 0 else scratchlab_side("classify", overrides, workdir, 0, args.epochs)
                    result[side] = run["images_per_s"]
            pairs.append((result["scratchlab"], result["bare"]))
            if args.repeats > 1:
                print(f"pair {repeat + 1}/{args.repeats}: scratchlab {pairs[-1][0]:.1f}, bare {pairs[-1][1]:.1f} "
                      f"images/s, ratio {pairs[-1][0] / pairs[-1][1]:.3f}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"model {args.model} @ {args.image_size} px, batch {args.batch_size}, {args.device}, {args.workers} "
          f"workers, {args.epochs} epochs of {int((split.split == 'train').sum())} training images, "
          f"{args.repeats} pair(s)")
    print(f"bare loop:  {statistics.median(b for _, b in pairs):8.1f} images/s (median)")
    print(f"scratchlab: {statistics.median(s for s, _ in pairs):8.1f} images/s (median)")
    print(f"throughput: ratio={statistics.median(s / b for s, b in pairs):.3f} (scratchlab / bare, median of pairs)")


if __name__ == "__main__":
    main()
