"""After an Optuna sweep: the study's best trial is printed and shown on the sweep's MLflow parent run.

Hydra builds this callback for every command, so the module imports nothing heavy at load time.
"""
from __future__ import annotations

import shlex
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from scratchlab.resume import override_key, run_overrides, setting_overrides

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def fixed_overrides(task_overrides: list[str], search_keys: Collection[str]) -> list[str]:
    """The overrides every trial of a sweep shares: its settings without the searched keys."""
    return setting_overrides(task_overrides, leave_out=search_keys)


def rerun_overrides(task_overrides: list[str], best_params: dict[str, Any]) -> list[str]:
    """A trial's overrides with the search removed and the best trial's values in place."""
    return fixed_overrides(task_overrides, best_params) + [f"{key}={value}" for key, value in best_params.items()]


def replaced_by_search(task_overrides: list[str], search_keys: Collection[str]) -> list[str]:
    """The plain ``key=value`` overrides of keys that the search space samples: the sweeper drops them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([o for o in task_overrides if override_key(o) in search_keys])
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def mixed_settings(runs: list[Run], fixed: list[str], sweep_dir: str, search_keys: Collection[str]) -> str | None:
    """A one-line warning when trials of earlier sweeps of the study ran with other fixed overrides than
    ``fixed`` (this sweep's); None when they all match."""
    own, trials, theirs, ours = set(fixed), [], set(), set()
    for run in runs:
        if run.data.tags.get("hydra.sweep_dir") == sweep_dir or (overrides := run_overrides(run)) is None:
            continue  # this sweep's own trials, and runs that kept no overrides
        other = set(fixed_overrides(overrides, search_keys))
        if other != own:
            trials.append(int(run.data.tags.get("optuna.trial", -1)))
            theirs, ours = theirs | (other - own), ours | (own - other)
    if not trials:
        return None
    return (f"warning: the study mixes trials of different settings: earlier trials "
            f"{', '.join(map(str, sorted(trials)))} ran with [{' '.join(sorted(theirs))}] where this sweep has "
            f"[{' '.join(sorted(ours))}]")


def _study_runs(config: DictConfig) -> tuple[MlflowClient, str, list[Run]] | None:
    """The MLflow client, the study's parent run and its trials' runs (newest first); None before any run."""
    from mlflow.tracking import MlflowClient

    from scratchlab.tracking import experiment_name, sweep_parent_run, tracking_uri

    from mlflow.exceptions import MlflowException

    context = {"sweep_dir": config.hydra.sweep.dir, "study": config.hydra.sweeper.get("study_name") or ""}
    name = experiment_name(config, context)
    client = MlflowClient(tracking_uri(config))
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return None
        parent = sweep_parent_run(client, experiment.experiment_id, name)
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                                  order_by=["attributes.start_time DESC"], max_results=50000)
    except MlflowException as err:  # the study's summary is printed all the same
        print(f"warning: the sweep's MLflow runs cannot be read ({str(err).splitlines()[0]}); its summary uses "
              "this sweep's overrides")
        return None
    return client, parent, runs


class SweepSummary(Callback):
    """Hydra callback: before an Optuna sweep, create the folder of its SQLite study and warn about given
    values that the search replaces; after it, show the study's best trial (over every run of the study,
    resumed or not) on the sweep's MLflow parent run (tags ``best.<param>``, metric ``best/<metric>``,
    ``optimization_results.yaml``) and print how to re-run it, with the overrides that trial ran with."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from scratchlab.tracking import sqlite_path

        storage = config.hydra.sweeper.get("storage")
        db = sqlite_path(storage) if isinstance(storage, str) else None
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        replaced = replaced_by_search(list(config.hydra.overrides.task), list(config.hydra.sweeper.get("params") or {}))
        if replaced:
            print(f"warning: {' '.join(replaced)} not used: the search space (hydra.sweeper.params) samples "
                  f"{'these keys' if len(replaced) > 1 else 'this key'} in every trial")

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
        found = _study_runs(config)
        runs = found[2] if found is not None else []
        search_keys = set(best_params) | set(config.hydra.sweeper.get("params") or {})
        own = list(config.hydra.overrides.task)
        mixed = mixed_settings(runs, fixed_overrides(own, search_keys), config.hydra.sweep.dir, search_keys)
        if mixed:
            print(mixed)
        best_run = next((r for r in runs if r.data.tags.get("optuna.trial") == str(results.best_trial)), None)
        best_overrides = run_overrides(best_run) if best_run is not None else None
        command = ["python", "-m", f"scratchlab.{config.hydra.job.name}",
                   *rerun_overrides(own if best_overrides is None else best_overrides, best_params)]
        print(f"best trial {results.best_trial} of study {results.study_name} ({metric} = {results.best_value:.4f}; "
              f"{results.n_complete} complete, {results.n_pruned} pruned): "
              + " ".join(f"{k}={v}" for k, v in best_params.items()))
        print(f"  re-run it: {shlex.join(command)}")
        if found is None:
            return
        if best_overrides is None:
            print(f"  (trial {results.best_trial} has no MLflow run here: the command repeats this sweep's overrides)")
        _show_on_parent(found[0], found[1], results_file, results, metric, command)


def _show_on_parent(client: MlflowClient, parent: str, results_file: Path, results: DictConfig, metric: str,
                    command: list[str]) -> None:
    """The best trial on the sweep's parent run: tags, metric, results file and re-run command."""
    client.log_artifact(parent, str(results_file))
    client.log_text(parent, shlex.join(command) + "\n", "best_trial_command.txt")
    client.log_metric(parent, f"best/{metric}", float(results.best_value), step=int(results.n_trials))
    for key, value in {**{f"best.{k}": v for k, v in results.best_params.items()}, "best.trial": results.best_trial,
                       "optuna.study": results.study_name, "optuna.n_pruned": results.n_pruned}.items():
        client.set_tag(parent, key, str(value))
