"""Does synthetic metal teach what holds on real steel? Train on the built-in synthetic metal (data=metal_scratch;
``--synthetic tile_crack``: ground tiles with cracks) and test on real NEU scratches (against the other five NEU
classes) and magnetic-tile cracks (against Free); as that model saw no real image, also on every real bad image
against the test split's good ones (``zero_shot_all_bad``);
then, on each real set, compare real-only training with synthetic pre-training + fine-tuning
(model.weights_path=<the synthetic checkpoint>) and with synthetic scratches added to the real training split
(data.synthetic_fraction: metal scratches on NEU, cracks on magnetic tile). A last regime, ``good_only``, never
sees a real bad image either: it trains on the real set's own good images (its train and val splits) and
synthetic bad copies of them (``scratchlab.synth``, the same damage), as a user who has only good parts
would; as it sees no real bad image, it is also scored on every real bad image against the test split's good
ones (``good_only_all_bad``). Every other number is test AUROC on the same real test split.

    python benchmarks/sim2real.py --neu ../shared/data/neu_det --magnetic-tile ../shared/data/magnetic_tile
    # a segmenter with flip TTA, zero-shot only (NEU AUROC 0.956 with 5,000 synthetic images):
    python benchmarks/sim2real.py model=unet model.encoder_name=tu-mobilenetv3_small_050 model.image_size=128 loss=bce_dice optimizer=adamw optimizer.lr=3e-3 "model.tta=[hflip,vflip]" --neu PATH --synthetic-count 5000 --only zero_shot
    # a segmenter on synthetic ground tiles, zero-shot on magnetic-tile cracks (AUROC 0.878, every real crack 0.869; seed=1: 0.767, 0.767):
    python benchmarks/sim2real.py model=unet model.encoder_name=tu-mobilenetv3_small_050 model.image_size=384 model.head_prior=0.01 loss=bce_dice optimizer=adamw optimizer.lr=3e-3 "model.tta=[hflip,vflip]" --magnetic-tile PATH --synthetic tile_crack --synthetic-count 2000 --only zero_shot --epochs 8
    # synthetic cracks on real good tiles, no real crack seen (magnetic tile AUROC 0.987; every real crack 0.967):
    python benchmarks/sim2real.py model=unet model.encoder_name=tu-mobilenetv3_small_050 model.image_size=256 model.head_prior=0.01 loss=bce_dice optimizer=adamw optimizer.lr=3e-3 "model.tta=[hflip,vflip]" --magnetic-tile PATH --only good_only --epochs 12
    # metal scratches on NEU's own non-scratch images, no real scratch seen (NEU AUROC 0.990; all 300 scratches 0.975):
    python benchmarks/sim2real.py model=unet model.encoder_name=tu-mobilenetv3_small_050 model.image_size=128 model.head_prior=0.01 loss=bce_dice optimizer=adamw optimizer.lr=3e-3 "model.tta=[hflip,vflip]" --neu PATH --only good_only --epochs 10

``--seeds 42 1 2`` trains the zero-shot model once per seed and scores each (rows ``zero_shot_seed42``, ...) and
their ensemble (``model=ensemble``: the seeds' probability maps averaged; rows ``zero_shot_ensemble``), as one
training seed moves a zero-shot figure by about 0.1.

Any other argument is a Hydra override of every training (the model, for one); put them before
``--only``, which takes the words after it up to the next option. Prints one table row per (real set,
regime) and ends with one line:

    sim2real: <set>_<regime>_auroc=<value> ...

Runs, data and logs go to a temporary folder, removed at the end (``--workdir`` to choose and keep one).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from scratchlab.builders import build_datamodule
from scratchlab.checkpoints import read_checkpoint
from scratchlab.config import compose
from scratchlab.data.synth.expand import expand_folder
from scratchlab.evaluation.job import evaluate
from scratchlab.training import run_training

REGIMES = ("zero_shot", "real_only", "finetune", "synthetic_fraction", "good_only")
REAL_SETS = {"neu": ["data=neu", "data.task=scratch_vs_rest"], "magnetic_tile": ["data=magnetic_tile",
                                                                                 "data.task=crack_vs_free"]}
DRAWN_APPEARANCE = {"neu": "metal", "magnetic_tile": "crack"}
"""The damage drawn onto each real set's good images (synthetic_fraction, good_only): scratches / cracks."""
SYNTHETIC = {
    # synthetic metal at the real sets' geometry: square images of about 200 px (NEU is 200x200)
    "metal_scratch": ["data.source.params.width_quantiles=[180,190,195,200,205,210,220]",
                      "data.source.params.height_quantiles=[180,190,195,200,205,210,220]"],
    "tile_crack": [],  # ground tiles with cracks, at the magnetic-tile photos' own sizes
}
"""The built-in synthetic sets that zero_shot and finetune train on (``--synthetic``), with their overrides."""


def _train(workdir: Path, name: str, overrides: list[str], epochs: int) -> tuple[dict, float, Path]:
    """One scratchlab training; its metrics, wall seconds and best checkpoint."""
    run_dir = workdir / "logs" / f"{name}-{time.time_ns()}"  # a fresh folder: never an older run's best.ckpt
    cfg = compose("train", [f"paths.root_dir={workdir}", f"hydra.run.dir={run_dir}", f"run_name={name}",
                            "name=sim2real", f"trainer.max_epochs={epochs}", "callbacks.progress_bar.refresh_rate=0",
                            *overrides])
    start = time.perf_counter()
    metrics = run_training(cfg)
    return metrics, time.perf_counter() - start, run_dir / "checkpoints" / "best.ckpt"


MODEL_GROUPS = ("model", "loss", "optimizer", "scheduler", "callbacks")
"""Override roots that describe a model's training, which an ensemble of trained models does not take."""


def _ensemble(workdir: Path, ckpts: list[Path], synthetic: list[str], overrides: list[str]) -> tuple[dict, Path]:
    """The synthetic models as one (``model=ensemble``, nothing trained): its synthetic test metrics and checkpoint.
    Every shared override applies but the training ones (``MODEL_GROUPS``); image size and resizing are the
    members' own."""
    preprocess = read_checkpoint(ckpts[0]).spec.preprocess
    members = ",".join(f"'{c}'" for c in ckpts)
    size = "null" if preprocess.image_size is None else preprocess.image_size
    kept = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] not in MODEL_GROUPS]
    metrics, _, ckpt = _train(workdir, "synthetic-ensemble",
                              [*synthetic, *kept, "model=ensemble", f"model.members=[{members}]",
                               f"model.image_size={size}", f"data.resize={preprocess.resize}"], 0)
    return metrics, ckpt


def _real_test_auroc(workdir: Path, ckpt: Path, real: list[str]) -> float:
    """Test AUROC of a checkpoint on the real set's test split (or the one a split file in ``real`` names)."""
    cfg = compose("evaluate", [f"paths.root_dir={workdir}", f"ckpt={ckpt}", "link_run=false", "log_predictions=never",
                               "name=sim2real", *real])
    return float(evaluate(cfg)["test/auroc"])


def _real_splits(workdir: Path, real: list[str]) -> dict[str, list]:
    """The real set's samples per split."""
    datamodule = build_datamodule(compose("train", [f"paths.root_dir={workdir}", *real]))
    datamodule.setup()
    return datamodule.splits


def _every_bad_split(workdir: Path, name: str, real: list[str], splits: dict[str, list]) -> list[str]:
    """``real`` with a split file whose test split holds every real bad image and the test split's good images
    (``splits``: the real set's): the test of a model that saw no real bad image."""
    unseen = workdir / f"{name}-unseen-split.csv"
    rows = [(str(Path(s.image).resolve()), "test" if s.label else split)
            for split, samples in splits.items() for s in samples]
    pd.DataFrame(rows, columns=["path", "split"]).to_csv(unseen, index=False)
    return [*real, f"data.split.file='{unseen}'"]


def _good_only_set(workdir: Path, name: str, splits: dict[str, list], bad_fraction: float) -> Path:
    """A good/bad/masks folder of the real set's (``splits``) train- and val-split good images and synthetic bad
    copies of them (the real test split's images are left out)."""
    goods = workdir / f"{name}-good"
    shutil.rmtree(goods, ignore_errors=True)  # a kept --workdir: start over
    goods.mkdir()
    for i, sample in enumerate(s for split in ("train", "val") for s in splits[split] if s.label == 0):
        (goods / f"{i:05d}-{Path(sample.image).name}").symlink_to(Path(sample.image).resolve())
    summary = expand_folder(goods, workdir / f"{name}-good-only", bad_fraction=bad_fraction,
                            appearance=DRAWN_APPEARANCE[name], overwrite=True, progress=False)
    print(f"{name} good_only: {summary.good} real good + {summary.bad} synthetic bad images", flush=True)
    return summary.output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neu", type=Path, help="NEU-DET folder (IMAGES/, ANNOTATIONS/)")
    parser.add_argument("--magnetic-tile", type=Path, help="magnetic tile folder (MT_Free/, MT_Crack/, ...)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every training (default 6)")
    parser.add_argument("--synthetic", choices=sorted(SYNTHETIC), default="metal_scratch",
                        help="built-in synthetic data of zero_shot and finetune (default metal_scratch)")
    parser.add_argument("--synthetic-count", type=int, default=3000, help="synthetic images (default 3000)")
    parser.add_argument("--synthetic-fraction", type=float, default=0.5,
                        help="data.synthetic_fraction of the mixed regime (default 0.5)")
    parser.add_argument("--good-only-fraction", type=float, default=0.5,
                        help="share of synthetic bad images in the good_only regime's training set (default 0.5)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="train the zero-shot model once per seed, then score each and their ensemble; "
                             "finetune starts from the first seed's (default: once, at the config's seed)")
    parser.add_argument("--only", nargs="+", choices=REGIMES, default=list(REGIMES))
    parser.add_argument("--workdir", type=Path, help="keep runs and data here (default: a temporary folder)")
    args, overrides = parser.parse_known_args()
    roots = {"neu": args.neu, "magnetic_tile": args.magnetic_tile}
    sets = {name: REAL_SETS[name] + [f"data.root={root.resolve()}"] for name, root in roots.items() if root}
    if not sets:
        parser.error("give --neu and/or --magnetic-tile")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sim2real-"))
    rows: list[tuple[str, str, float, float]] = []
    try:
        need_synthetic = {"zero_shot", "finetune"} & set(args.only)
        synthetic_ckpts: dict[str, Path] = {}  # zero-shot models by name: one per seed, then their ensemble
        if need_synthetic:
            synthetic = [f"data={args.synthetic}", *SYNTHETIC[args.synthetic],
                         f"data.source.count={args.synthetic_count}"]
            seeds = list(dict.fromkeys(args.seeds or [None]))  # in order, each once
            if "zero_shot" not in args.only:
                seeds = seeds[:1]  # fine-tuning starts from the first seed's model only
            for seed in seeds:
                seeded = [] if seed is None else [f"seed={seed}"]
                metrics, seconds, ckpt = _train(workdir, "synthetic", [*synthetic, *overrides, *seeded], args.epochs)
                synthetic_ckpts["zero_shot" if seed is None else f"zero_shot_seed{seed}"] = ckpt
                print(f"{args.synthetic}: {args.synthetic_count} images, {args.epochs} epochs, {seconds:.0f} s"
                      f"{'' if seed is None else f', seed {seed}'}; synthetic test AUROC "
                      f"{metrics['test/auroc']:.4f}", flush=True)
            if len(synthetic_ckpts) > 1:
                metrics, ensemble = _ensemble(workdir, list(synthetic_ckpts.values()), synthetic, overrides)
                synthetic_ckpts["zero_shot_ensemble"] = ensemble
                print(f"{args.synthetic}: the ensemble of the {len(seeds)} seeds' models, synthetic test AUROC "
                      f"{metrics['test/auroc']:.4f}", flush=True)
            synthetic_ckpt = next(iter(synthetic_ckpts.values()))  # fine-tuning starts from the first seed's model
        for name, real in sets.items():
            splits = _real_splits(workdir, real) if {"zero_shot", "good_only"} & set(args.only) else {}
            if "zero_shot" in args.only:
                every_bad = _every_bad_split(workdir, name, real, splits)
                for regime, ckpt in synthetic_ckpts.items():
                    rows.append((name, regime, _real_test_auroc(workdir, ckpt, real), 0.0))
                    rows.append((name, f"{regime}_all_bad", _real_test_auroc(workdir, ckpt, every_bad), 0.0))
            runs = {"real_only": [], "finetune": [f"model.weights_path={synthetic_ckpt}"] if need_synthetic else None,
                    "synthetic_fraction": [f"data.synthetic_fraction={args.synthetic_fraction}",
                                           f"data.synthetic_appearance={DRAWN_APPEARANCE[name]}"]}
            if "good_only" in args.only:
                root = _good_only_set(workdir, name, splits, args.good_only_fraction)
                _, seconds, ckpt = _train(workdir, f"{name}-good_only",
                                          ["data=folder", f"data.root='{root}'", *overrides], args.epochs)
                rows.append((name, "good_only", _real_test_auroc(workdir, ckpt, real), seconds))
                every_bad = _every_bad_split(workdir, name, real, splits)
                rows.append((name, "good_only_all_bad", _real_test_auroc(workdir, ckpt, every_bad), seconds))
            for regime, extra in runs.items():
                if regime in args.only and extra is not None:
                    metrics, seconds, _ = _train(workdir, f"{name}-{regime}", [*real, *extra, *overrides], args.epochs)
                    rows.append((name, regime, float(metrics["test/auroc"]), seconds))
            for row in rows:
                if row[0] == name:
                    print(f"{row[0]:>14} {row[1]:>26}  test AUROC {row[2]:.4f}  train {row[3]:.0f} s", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("sim2real: " + " ".join(f"{s}_{r}_auroc={a:.4f}" for s, r, a, _ in rows))


if __name__ == "__main__":
    sys.exit(main())
