"""How a job finds the Optuna trial it runs: the sweeper sets environment variables for each job
(through ``hydra.job.env_set``) and keeps the live trial objects of its own process."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import optuna

TRIAL_ID_ENV = "HYDRA_OPTUNA_TRIAL_ID"
TRIAL_NUMBER_ENV = "HYDRA_OPTUNA_TRIAL_NUMBER"
STUDY_ENV = "HYDRA_OPTUNA_STUDY"
STORAGE_ENV = "HYDRA_OPTUNA_STORAGE"
_LIVE: dict[int, "optuna.trial.Trial"] = {}


def register_live(trial: "optuna.trial.Trial") -> None:
    _LIVE[trial._trial_id] = trial


def forget_live(trial: "optuna.trial.Trial") -> None:
    _LIVE.pop(trial._trial_id, None)


def job_env(trial: "optuna.trial.Trial", study_name: str, storage: Optional[str]) -> list[str]:
    """``hydra.job.env_set`` overrides that tell a job which trial it runs."""
    env = {TRIAL_ID_ENV: trial._trial_id, TRIAL_NUMBER_ENV: trial.number, STUDY_ENV: study_name}
    if storage:
        env[STORAGE_ENV] = storage
    return [f"+hydra.job.env_set.{key}='{value}'" for key, value in env.items()]


def current_trial() -> Optional["optuna.trial.Trial"]:
    """The trial of the running job, or None outside an Optuna sweep. Works in the sweeper's process and,
    when the study has RDB storage, in launcher processes of their own."""
    trial_id = os.environ.get(TRIAL_ID_ENV)
    if trial_id is None:
        return None
    live = _LIVE.get(int(trial_id))
    if live is not None:
        return live
    storage = os.environ.get(STORAGE_ENV)
    if not storage:
        return None
    import optuna

    study = optuna.load_study(study_name=os.environ[STUDY_ENV], storage=storage)
    return optuna.trial.Trial(study, int(trial_id))
