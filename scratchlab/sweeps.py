"""Around a Hydra multirun: the Optuna study's storage is prepared, its best trial printed and logged."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from scratchlab.tracking import experiment_name, sweep_parent_run, tracking_uri

log = logging.getLogger(__name__)


def best_trial_overrides(results: DictConfig) -> list[str]:
    """``key=value`` overrides of the best trial in ``optimization_results.yaml``."""
    return [f"{k}={v}" for k, v in results.best_params.items()]


class SweepSummary(Callback):
    """Hydra callback: before an Optuna sweep, create the folder of its SQLite study; after it, log
    ``optimization_results.yaml``, the best value and the best trial's overrides to the sweep's MLflow
    parent run, and print how to re-run it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = config.hydra.sweeper.get("storage")
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        results_file = Path(config.hydra.sweep.dir) / "optimization_results.yaml"
        if not results_file.is_file() or "best_params" not in (results := OmegaConf.load(results_file)):
            return
        context = {"sweep_dir": config.hydra.sweep.dir, "study": config.hydra.sweeper.get("study_name") or ""}
        name = experiment_name(config, context)
        client = MlflowClient(tracking_uri(config))
        experiment = client.get_experiment_by_name(name)
        overrides = best_trial_overrides(results)
        print(f"best trial ({config.get('optimized_metric')} = {results.best_value:.4f}): {' '.join(overrides)}")
        print(f"  re-run it: python -m scratchlab.{config.hydra.job.name} {' '.join(overrides)}")
        if experiment is None:
            return
        parent = sweep_parent_run(client, experiment.experiment_id, name)
        client.log_artifact(parent, str(results_file))
        client.log_text(parent, "\n".join(overrides) + "\n", "best_trial_overrides.txt")
        client.log_metric(parent, f"best/{config.get('optimized_metric') or 'value'}", float(results.best_value))
        for key, value in results.best_params.items():
            client.log_param(parent, f"best.{key}", value)
