"""What pruning saves: the same Optuna learning-rate sweep with the median pruner and without.

    python benchmarks/pruning.py                      # 20 trials x 6 epochs each way, built-in data
    python benchmarks/pruning.py --trials 8 --epochs 3

Each sweep runs in a folder of its own (its own MLflow store and Optuna study). Prints wall time, epochs
trained, trials pruned and the best validation value of both, and the saving as a ratio.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState


def run_sweep(root: Path, pruner: str, args: argparse.Namespace) -> dict[str, float]:
    """One sweep as a user would type it; returns its figures from the stored study."""
    command = [sys.executable, "-m", "scratchlab.train", "hparams_search=lr_wd", f"hydra/sweeper/pruner={pruner}",
               f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.sampler.seed=0", f"paths.root_dir={root}",
               f"paths.data_dir={args.data_dir}", f"data.source.count={args.images}", "model=cnn",
               f"model.image_size={args.image_size}", f"trainer.max_epochs={args.epochs}", "data.num_workers=0",
               "callbacks=no_early_stopping", "name=pruning"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"sweep failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - start
    storage = f"sqlite:///{root}/logs/optuna.db"
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    return {"wall_s": wall, "epochs": epochs, "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
            "best": study.best_value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=600, help="built-in text_scratch images")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.data_dir = Path(tmp) / "data"  # rendered once before timing, shared by both sweeps
        subprocess.run([sys.executable, "-m", "scratchlab.data.check", f"paths.root_dir={tmp}",
                        f"paths.data_dir={args.data_dir}", f"data.source.count={args.images}"],
                       cwd=tmp, check=False, capture_output=True)
        results = {}
        for pruner in ("median", "none"):
            root = Path(tmp) / pruner
            root.mkdir()
            results[pruner] = run_sweep(root, pruner, args)
            r = results[pruner]
            print(f"pruner={pruner:6s} wall {r['wall_s']:7.1f} s  epochs trained {r['epochs']:4d}  "
                  f"pruned {r['pruned']:2d}/{args.trials}  best val/f1_bad {r['best']:.4f}", flush=True)
    pruned, full = results["median"], results["none"]
    print(f"pruning: wall_ratio={pruned['wall_s'] / full['wall_s']:.2f} epochs_ratio={pruned['epochs'] / full['epochs']:.2f} "
          f"best_delta={pruned['best'] - full['best']:+.4f}")


if __name__ == "__main__":
    main()
