"""Does scratchlab add nothing to the science? One recipe, trained by scratchlab and by a plain PyTorch loop
(benchmarks/bare_loop.py) on the same split, with the same seed and epochs; test quality and images/s.

    python benchmarks/parity.py                                     # built-in text_scratch_easy: cnn and unet, seeds 0 1 2
    python benchmarks/parity.py --recipes cnn data=neu data.root=/work/shared/data/neu_det data.task=scratch_vs_rest
    python benchmarks/parity.py --recipes cnn --epochs 20 --seeds 0 1 2 3 4 data=folder data.root=PATH

Recipes: ``cnn`` is experiment=custom_cnn (100x100, conv32-pool-conv64-pool-fc64, BCE, Adam 1e-3, batch 32,
earlier_work augmentation, best validation loss), scored by test accuracy; ``unet`` is a small smp U-Net
(BCE + Dice, AdamW, images scaled to 64 px on the longest side and padded), scored by test pixel Dice. It
needs masks, so it is skipped on data without them (NEU). Any other argument is a Hydra override of the
scratchlab side; the bare side reads its settings (sizes, batch, learning rate, epochs, workers) from the
same composed config. scratchlab runs in this process through ``run_training``, as ``python -m
scratchlab.train`` would, with its own data split; the bare loop trains on that split (its ``split.csv``).

Throughput is training images per second from the end of the first epoch to the end of the last one
(each epoch's validation included, on both sides; the first epoch holds worker start-up and is left out).
Printed per seed, per recipe, and last as exactly one line:

    parity: quality_delta=<mean over seeds of |scratchlab - bare|, worst recipe> throughput_ratio=<scratchlab / bare images/s, worst recipe>

Data, runs and logs go to a temporary folder, removed at the end (``--workdir`` to choose and keep one).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import train_and_test  # noqa: E402

from scratchlab.config import compose  # noqa: E402
from scratchlab.training import run_training  # noqa: E402

RECIPES: dict[str, list[str]] = {
    "cnn": ["experiment=custom_cnn"],
    "unet": ["model=unet", "model.encoder_name=tu-mobilenetv3_small_050", "model.image_size=64",
             "loss=bce_dice", "optimizer=adamw", "optimizer.weight_decay=1e-4", "augment=none", "data.batch_size=16"],
}
QUALITY = {"cnn": "test/acc", "unet": "test/dice"}
DEFAULT_EPOCHS = {"cnn": 6, "unet": 3}
# Built-in data when no data= is given: the bold-scratch variant (on the realistic text_scratch both recipes stay
# at the majority class for much longer), sized so that the default run takes minutes on 2 cores; the recipes start
# to learn with more (--images 3000 --epochs 10).
BUILTIN_DATA = "text_scratch_easy"
BUILTIN_IMAGES = 1000


def scratchlab_side(recipe: str, overrides: list[str], workdir: Path, seed: int, epochs: int) -> dict:
    """Train with scratchlab; its test quality, images/s from the epoch-end log times, and what ran."""
    uri = f"sqlite:///{workdir}/mlruns/mlflow.db"
    run_dir = f"{workdir}/logs/{recipe}-{seed}-{time.time_ns()}"
    cfg = compose("train", [f"paths.root_dir={workdir}", f"hydra.run.dir={run_dir}", *overrides,
                            f"seed={seed}", f"trainer.max_epochs={epochs}", "name=parity",
                            f"logger.tracking_uri={uri}", "callbacks.progress_bar.refresh_rate=0"])
    metrics = run_training(cfg)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("parity")
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    split = pd.read_csv(client.download_artifacts(run.info.run_id, "split.csv", str(workdir)))
    history = client.get_metric_history(run.info.run_id, "val/loss")
    ends = sorted((m.step, m.timestamp) for m in history)
    n_train = int((split.split == "train").sum())
    batch = int(cfg.data.batch_size)
    per_epoch = (n_train // batch) * batch if n_train > batch else n_train
    seconds = (ends[-1][1] - ends[0][1]) / 1000 if len(ends) > 1 else 0.0
    return {"quality": float(metrics[QUALITY.get(recipe, "test/acc")]), "val_loss": min(m.value for m in history),
            "images_per_s": per_epoch * (len(ends) - 1) / seconds
            if seconds > 0 else float("nan"), "epochs": len(ends), "cfg": cfg, "split": split,
            "trained": len(client.get_metric_history(run.info.run_id, "train/loss")) > 0}


def bare_split(cfg, split: pd.DataFrame) -> dict[str, tuple[list, list, list]]:
    """scratchlab's split as (paths, labels, mask paths) per split name, masks found by the data source."""
    masks = {str(s.image): (str(s.mask) if s.mask else None) for s in instantiate(cfg.data.source).load().samples}
    out = {}
    for name in ("train", "val", "test"):
        rows = split[split.split == name]
        out[name] = (rows.path.tolist(), rows.label.astype(int).tolist(), [masks.get(p) for p in rows.path])
    return out


def compare(recipe: str, user: list[str], workdir: Path, seeds: list[int], epochs: int,
            images: int | None = None) -> tuple[float, float] | None:
    """Both sides for every seed, printed; returns (mean |quality delta|, images/s ratio) or None if skipped.
    Without a ``data=`` override: the built-in data, ``images`` of them (default ``BUILTIN_IMAGES``)."""
    builtin = [f"data={BUILTIN_DATA}", f"data.source.count={images or BUILTIN_IMAGES}"]
    overrides = RECIPES[recipe] + ([] if any(o.startswith("data=") for o in user) else builtin) + user
    deltas, fast, bare_fast = [], [], []
    split = cfg = None
    for i, seed in enumerate(seeds):
        order = ("bare", "scratchlab") if i % 2 and split is not None else ("scratchlab", "bare")
        result = {}
        for side in order:  # alternating which side goes first spreads drift in machine load over both
            if side == "bare":
                result[side] = train_and_test(recipe, split, cfg, seed)
                continue
            result[side] = scratchlab_side(recipe, overrides, workdir, seed, epochs)
            if split is None:
                cfg, split = result[side]["cfg"], bare_split(result[side]["cfg"], result[side]["split"])
                if recipe == "unet" and not any(split["train"][2]):
                    print(f"{recipe}: skipped, the data has no masks")
                    return None
        sl, bare = result["scratchlab"], result["bare"]
        deltas.append(abs(sl["quality"] - bare.quality))
        fast.append(sl["images_per_s"])
        bare_fast.append(bare.images_per_s)
        name = QUALITY[recipe].split("/")[1]
        print(f"{recipe} seed {seed}: bare {name} {bare.quality:.4f} best val loss {bare.val_loss:.6f} "
              f"{bare.images_per_s:.1f} images/s ({bare.epochs} epochs, {bare.steps} steps, best epoch "
              f"{bare.best_epoch}) | scratchlab {name} {sl['quality']:.4f} best val loss {sl['val_loss']:.6f} "
              f"{sl['images_per_s']:.1f} images/s ({sl['epochs']} epochs, trained={sl['trained']})", flush=True)
    sizes = {k: len(v[0]) for k, v in split.items()}
    delta, ratio = statistics.mean(deltas), statistics.mean(fast) / statistics.mean(bare_fast)
    print(f"{recipe}: train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']} images, {epochs} epochs, "
          f"seeds {seeds}: quality_delta={delta:.4f} throughput_ratio={ratio:.3f} "
          f"(bare {statistics.mean(bare_fast):.1f}, scratchlab {statistics.mean(fast):.1f} images/s)", flush=True)
    return delta, ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["cnn", "unet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="both recipes (default: cnn 6, unet 3); at least 2")
    parser.add_argument("--images", type=int, default=None, help="size of the built-in data (default: 1000 for each recipe)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of both sides (default: torch's own)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data, runs and logs here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the scratchlab side, e.g. data=neu")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        parser.error("--epochs must be at least 2 (images/s is measured after the first epoch)")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # runs go to the work folder, never to a configured server
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scratchlab-parity-"))
    workdir = workdir.resolve()
    results = []
    try:
        for recipe in args.recipes:
            epochs = args.epochs or DEFAULT_EPOCHS[recipe]
            outcome = compare(recipe, args.overrides, workdir, args.seeds, epochs, args.images)
            if outcome is not None:
                results.append(outcome)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if not results:
        raise SystemExit("error: no recipe could run on this data; use --recipes cnn for data without masks")
    print(f"parity: quality_delta={max(d for d, _ in results):.4f} "
          f"throughput_ratio={min(r for _, r in results):.3f}")


if __name__ == "__main__":
    main()
