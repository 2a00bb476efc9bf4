"""After an Optuna sweep: the study's best trial is printed and shown on the sweep's MLflow parent run.

Hydra builds this callback for every command, so the module imports nothing heavy at load time.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def rerun_overrides(task_overrides: list[str], best_params: dict[str, Any]) -> list[str]:
    """The user's own overrides with the search removed and the best trial's values in place."""
    keep = [o for o in task_overrides
            if not o.startswith(("hparams_search=", "hydra.", "+hydra."))
            and o.split("=", 1)[0].lstrip("+~") not in best_params]
    return keep + [f"{key}={value}" for key, value in best_params.items()]


class SweepSummary(Callback):
    """Hydra callback: before an Optuna sweep, create the folder of its SQLite study; after it, show the
    study's best trial (over every run of the study, resumed or not) on the sweep's MLflow parent run
    (tags ``best.<param>``, metric ``best/<metric>``, ``optimization_results.yaml``) and print how to
    re-run it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from scratchlab.tracking import sqlite_path

        storage = config.hydra.sweeper.get("storage")
        db = sqlite_path(storage) if isinstance(storage, str) else None
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        results_file = Path(config.hydra.sweep.dir) / "optimization_results.yaml"
        if not results_file.is_file():
            return
        results = OmegaConf.load(results_file)
        if "best_params" not in results:
            print(f"study {results.study_name}: no trial completed yet ({results.n_pruned} pruned of "
                  f"{results.n_trials}); nothing to re-run")
            return
        best_params = dict(results.best_params)
        metric = config.get("optimized_metric") or "value"
        command = ["python", "-m", f"scratchlab.{config.hydra.job.name}",
                   *rerun_overrides(list(config.hydra.overrides.task), best_params)]
        print(f"best trial {results.best_trial} of study {results.study_name} ({metric} = {results.best_value:.4f}; "
              f"{results.n_complete} complete, {results.n_pruned} pruned): "
              + " ".join(f"{k}={v}" for k, v in best_params.items()))
        print(f"  re-run it: {shlex.join(command)}")
        from mlflow.tracking import MlflowClient

        from scratchlab.tracking import experiment_name, sweep_parent_run, tracking_uri

        context = {"sweep_dir": config.hydra.sweep.dir, "study": config.hydra.sweeper.get("study_name") or ""}
        name = experiment_name(config, context)
        client = MlflowClient(tracking_uri(config))
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return
        parent = sweep_parent_run(client, experiment.experiment_id, name)
        client.log_artifact(parent, str(results_file))
        client.log_text(parent, shlex.join(command) + "\n", "best_trial_command.txt")
        client.log_metric(parent, f"best/{metric}", float(results.best_value), step=int(results.n_trials))
        for key, value in {**{f"best.{k}": v for k, v in best_params.items()}, "best.trial": results.best_trial,
                           "optuna.study": results.study_name, "optuna.n_pruned": results.n_pruned}.items():
            client.set_tag(parent, key, str(value))
