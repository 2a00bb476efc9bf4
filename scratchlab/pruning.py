"""Optuna pruning inside a training job: the trial reports its metric every epoch and stops when told."""
from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from hydra_plugins.scratchlab_optuna_sweeper import current_trial
from omegaconf import DictConfig
from pytorch_lightning.trainer.states import TrainerFn

log = logging.getLogger(__name__)


class TrialPruning(pl.Callback):
    """Report ``monitor`` to the Optuna trial after every validation; stop training when the pruner says so.

    Training ends at the end of that epoch (``pruned`` is set); the job then raises ``optuna.TrialPruned``.
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor, self.pruned = trial, monitor, False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or value is None:
            return  # epochs of training only, not the final validation of the best checkpoint
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True
            log.info(f"pruned at epoch {trainer.current_epoch}: {self.monitor}={float(value):.4f}")


def pruning_callback(cfg: DictConfig) -> TrialPruning | None:
    """The pruning callback of this job when it is an Optuna trial with an ``optimized_metric``."""
    trial = current_trial()
    if trial is None or not cfg.get("optimized_metric"):
        return None
    return TrialPruning(trial, str(cfg.optimized_metric))
