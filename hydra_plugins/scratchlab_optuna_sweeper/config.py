"""Structured configs of the sweeper, its samplers and pruners, registered in Hydra's ConfigStore."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # real types: OmegaConf reads these annotations

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SAMPLERS: Dict[str, Dict[str, Any]] = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 10,
            "multivariate": False},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "grid": {"_target_": "optuna.samplers.GridSampler", "search_space": None, "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None, "n_startup_trials": 1,
              "sigma0": None, "restart_strategy": None},
}
PRUNERS: Dict[str, Dict[str, Any]] = {
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 1,
               "interval_steps": 1, "n_min_trials": 1},
    "percentile": {"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0, "n_startup_trials": 5,
                   "n_warmup_steps": 0},
    "successive_halving": {"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": "auto",
                           "reduction_factor": 4},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "max_resource": "auto",
                  "reduction_factor": 3},
    "none": {"_target_": "optuna.pruners.NopPruner"},
}


@dataclass
class OptunaSweeperConf:
    """``hydra/sweeper=optuna``: the same keys as hydra-optuna-sweeper, plus ``pruner``."""

    _target_: str = "hydra_plugins.scratchlab_optuna_sweeper.sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds sampler and pruner itself (a grid needs the search space)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING  # filled by the defaults above: hydra/sweeper/sampler=tpe|random|grid|cmaes
    pruner: Any = MISSING   # hydra/sweeper/pruner=median|percentile|successive_halving|hyperband|none
    direction: Any = "minimize"  # or maximize, or a list of both for several objectives
    storage: Optional[str] = None  # e.g. sqlite:///optuna.db: the study persists and resumes
    study_name: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 1  # trials per batch handed to the launcher
    max_failure_rate: float = 0.0
    params: Optional[Dict[str, Any]] = None  # key -> override string, e.g. optimizer.lr: tag(log, interval(1e-5, 1e-2))
    custom_search_space: Optional[str] = None  # dotted path of fn(cfg, trial) suggesting conditional params


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="scratchlab")
    for name, node in SAMPLERS.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="scratchlab")
    for name, node in PRUNERS.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="scratchlab")


register()
