"""Optuna through Hydra's sweeper: trials are child runs of one MLflow parent, and a study resumes."""
from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from scratchlab.config import compose
from tests.conftest import run_cli, tiny_overrides


def _sweep(tmp_path: Path, data: Path, trials: int):
    overrides = [o for o in tiny_overrides(tmp_path, data) if not o.startswith("hydra.run")]
    return run_cli("scratchlab.train", ["hparams_search=lr_wd", f"hydra.sweeper.n_trials={trials}", "name=sweeptest",
                                        "trainer.max_epochs=1", *overrides], cwd=tmp_path, timeout=600)


def test_optuna_sweep_has_parent_with_child_trials_and_resumes(tmp_path: Path, tiny_dataset: Path) -> None:
    first = _sweep(tmp_path, tiny_dataset, 3)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "best trial (val/f1_bad = " in first.stdout and "optimizer.lr=" in first.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["sweeptest-lr_wd"])
    parents = runs[runs["tags.scratchlab.role"] == "sweep"]
    children = runs[runs["tags.scratchlab.role"] != "sweep"]
    assert len(parents) == 1 and len(children) == 3
    parent_id = parents.run_id.iloc[0]
    assert set(children["tags.mlflow.parentRunId"]) == {parent_id}
    assert children["params.optimizer.lr"].nunique() == 3, "each trial tries its own learning rate"
    parent = MlflowClient().get_run(parent_id)
    assert "best.optimizer.lr" in parent.data.params and "best/val/f1_bad" in parent.data.metrics
    storage = f"sqlite:///{tmp_path}/logs/optuna.db"
    assert len(optuna.load_study(study_name="sweeptest-lr_wd", storage=storage).trials) == 3

    second = _sweep(tmp_path, tiny_dataset, 1)  # the same command again continues the stored study
    assert second.returncode == 0, second.stderr[-2000:]
    assert len(optuna.load_study(study_name="sweeptest-lr_wd", storage=storage).trials) == 4
    runs = mlflow.search_runs(experiment_names=["sweeptest-lr_wd"])
    assert (runs["tags.mlflow.parentRunId"] == parent_id).sum() == 4


def test_search_configs_compose(tmp_path: Path) -> None:
    for name in ("lr_wd", "threshold"):
        cfg = compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", f"hparams_search={name}"])
        assert cfg.optimized_metric == "val/f1_bad"
    cfg = compose("evaluate", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", "run_id=abc",
                               "hparams_search=eval_threshold"])
    assert cfg.split == "val" and cfg.optimized_metric == "val/f1_bad", "thresholds are tuned on validation"
