"""The Optuna sweeper: ask a batch of trials, launch them as Hydra jobs, tell Optuna what they returned."""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.scratchlab_optuna_sweeper import trial_handoff
from hydra_plugins.scratchlab_optuna_sweeper.search_space import distribution, grid_values, split_overrides

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Hydra sweeper over an Optuna study (see ``OptunaSweeperConf`` for the keys)."""

    def __init__(self, sampler: Any, pruner: Any, direction: Any, storage: Optional[str], study_name: Optional[str],
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: Optional[DictConfig],
                 custom_search_space: Optional[str]) -> None:
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.direction = list(direction) if OmegaConf.is_list(direction) or isinstance(direction, list) else direction
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), max(1, int(n_jobs)), max_failure_rate
        self.params = params
        self.custom_search_space = custom_search_space
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    # -- search space -------------------------------------------------------------------------------
    def _overrides(self, arguments: list[str]) -> tuple[dict, list[str]]:
        lines = [f"{key}={value}" for key, value in (self.params or {}).items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        sweeps, fixed = split_overrides(parser.parse_overrides(lines))
        fixed = [line for line in fixed if line.split("=", 1)[0].lstrip("+~") not in sweeps]
        return sweeps, fixed

    def _sampler(self, sweeps: dict) -> Any:
        cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True) if self.sampler_cfg is not None else None
        if not cfg:
            return None
        if cfg.get("_target_", "").endswith("GridSampler") and cfg.get("search_space") is None:
            cfg["search_space"] = {key: grid_values(override) for key, override in sweeps.items()}
        return instantiate(cfg)

    def _study(self, sweeps: dict) -> Any:
        import optuna

        pruner = instantiate(self.pruner_cfg) if self.pruner_cfg is not None else optuna.pruners.NopPruner()
        directions = self.direction if isinstance(self.direction, list) else [self.direction]
        return optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self._sampler(sweeps),
                                   pruner=pruner, directions=[str(d) for d in directions], load_if_exists=True)

    # -- the loop ---------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        import optuna

        sweeps, fixed = self._overrides(arguments)
        distributions = {key: distribution(override) for key, override in sweeps.items()}
        study = self._study(sweeps)
        self.study_name = study.study_name
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        custom = get_method(self.custom_search_space) if self.custom_search_space else None
        log.info(f"Optuna study {study.study_name!r}: {len(study.trials)} earlier trials, {self.n_trials} to run")
        failures, done = 0, 0
        while done < self.n_trials and not _grid_exhausted(study):
            size = min(self.n_jobs, self.n_trials - done)
            trials = [study.ask(fixed_distributions=distributions) for _ in range(size)]
            batch = []
            for trial in trials:
                if custom is not None:
                    custom(self.config, trial)
                batch.append(tuple(f"{key}={value}" for key, value in trial.params.items())
                             + tuple(fixed) + tuple(trial_handoff.job_env(trial, study.study_name, self.storage)))
                trial_handoff.register_live(trial)
            self.validate_batch_is_legal(batch)
            try:
                returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            finally:
                for trial in trials:
                    trial_handoff.forget_live(trial)
            self.job_idx += len(batch)
            for trial, ret in zip(trials, returns):
                failures += self._record(study, trial, ret)
            done += len(trials)
            if failures and failures / done > self.max_failure_rate:
                self._raise_first_failure(returns)
        self._write_results(study)

    def _record(self, study: Any, trial: Any, ret: JobReturn) -> int:
        """Record one finished job in the study; returns 1 when it failed."""
        from optuna.trial import TrialState

        if ret.status == JobStatus.FAILED:
            if _is_pruned(ret._return_value):
                _tell(study, trial, state=TrialState.PRUNED)
                log.info(f"trial {trial.number} pruned")
                return 0
            _tell(study, trial, state=TrialState.FAIL)
            return 1
        values = ret.return_value
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            log.warning(f"trial {trial.number} returned {ret.return_value!r}: recorded as failed")
            _tell(study, trial, state=TrialState.FAIL)
            return 1
        _tell(study, trial, [float(v) for v in values] if len(values) > 1 else float(values[0]))
        return 0

    @staticmethod
    def _raise_first_failure(returns: Sequence[JobReturn]) -> None:
        for ret in returns:
            if ret.status == JobStatus.FAILED and not _is_pruned(ret._return_value):
                _ = ret.return_value  # re-raises the job's exception
        raise RuntimeError("trials returned no usable value (see the warnings above)")

    def _write_results(self, study: Any) -> None:
        """``optimization_results.yaml`` in the sweep folder: the best trial of the whole study."""
        from optuna.trial import TrialState

        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name,
                                   "n_trials": len(study.trials), "n_complete": len(complete),
                                   "n_pruned": sum(t.state == TrialState.PRUNED for t in study.trials)}
        if complete and len(study.directions) == 1:
            best = study.best_trial
            results.update(best_params=dict(best.params), best_value=float(best.value), best_trial=best.number)
            log.info(f"Best parameters: {best.params}  value: {best.value}")
        elif complete:
            results["solutions"] = [{"params": dict(t.params), "values": list(t.values), "trial": t.number}
                                    for t in study.best_trials]
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")


def _tell(study: Any, trial: Any, values: Any = None, state: Any = None) -> None:
    """``study.tell``; a grid sampler that finishes its grid calls ``study.stop()``, which Optuna allows only
    inside ``optimize`` -- the trial is stored before that, and the loop ends on the exhausted grid."""
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def _grid_exhausted(study: Any) -> bool:
    import optuna

    return isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study)


def _is_pruned(value: Any) -> bool:
    import optuna

    return isinstance(value, optuna.TrialPruned)
