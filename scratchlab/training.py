"""The training job behind ``python -m scratchlab.train``: build, fit, test, log everything to MLflow."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import optuna
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from scratchlab.builders import build_datamodule, build_task, model_task
from scratchlab.checkpoints import save_checkpoint
from scratchlab.config import require_complete
from scratchlab.evaluation.after_fit import check_choice, choose_after_fit
from scratchlab.progress import console_callbacks
from scratchlab.figures import training_curves_figure
from scratchlab.resume import (
    LAST_CHECKPOINT_TAG,
    Interrupted,
    ResumeState,
    check_same_settings,
    resume_command,
    resume_point,
    signals_interrupt,
)
from scratchlab.pruning import pruning_callback
from scratchlab.data.datamodule import ScratchDataModule
from scratchlab.tasks import task_class
from scratchlab.tasks.base import BaseTask
from scratchlab.tracking import TrackedRun, flatten_config, mlflow_run, new_params, tracking_uri

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN: Intel AMX or AVX512-BF16), so bf16 autocast is fast."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def warn_emulated_bf16(cfg: DictConfig) -> None:
    """Warn when a CPU run asks for bf16 that this CPU can only emulate (it then trains slower than fp32)."""
    precision = str(cfg.trainer.get("precision", "32"))
    if cfg.trainer.get("accelerator") == "cpu" and precision.startswith("bf16") and not native_cpu_bf16():
        log.warning("trainer.precision=%s on a CPU without native bf16 (AMX or AVX512-BF16) trains slower than "
                    "fp32; use trainer=cpu", precision)


def _log_training_curves(run: TrackedRun) -> None:
    mlflow.flush_async_logging()  # the metrics queued so far, written before they are read back
    keys = [k for k in run.client.get_run(run.run_id).data.metrics if k.startswith(("train/", "val/"))]
    history = {k: [(m.step, m.value) for m in run.client.get_metric_history(run.run_id, k)] for k in keys}
    if history:
        fig = training_curves_figure(history)
        run.log_figure(fig, "training_curves.png")
        plt.close(fig)


def _log_last_checkpoint(run: TrackedRun, checkpoint: ModelCheckpoint | None, err: Interrupted) -> None:
    """After an interrupt: log ``last.ckpt`` (the last finished epoch) and say how to continue."""
    last = checkpoint.last_model_path if checkpoint is not None else ""
    if last and Path(last).is_file():
        run.log_artifact(last, "checkpoints")
        run.set_tags({LAST_CHECKPOINT_TAG: last})
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        print(f"interrupted by {err}: run {run.run_id} is KILLED; continue it with\n"
              f"  {resume_command(overrides, run.run_id)}   (or ckpt_path={last} instead of resume=)",
              file=sys.stderr)
    else:
        print(f"interrupted by {err} before the first epoch ended: run {run.run_id} is KILLED, "
              "nothing to continue from", file=sys.stderr)


def _scalars(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def _data_and_task(cfg: DictConfig) -> tuple[ScratchDataModule, BaseTask]:
    """The data, set up and checked, and the task built on its training split."""
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    pixel_weighted = task_class(model_task(cfg)).pixel_weighted_loss and cfg.loss.get("pos_weight") == "auto"
    pixel_counts = datamodule.mask_pixel_counts("train") if pixel_weighted else None
    return datamodule, build_task(cfg, datamodule.class_names, datamodule.class_counts("train"), pixel_counts)


def run_training(cfg: DictConfig) -> dict[str, float]:
    """Train and test one configuration; returns the last validation and the test metrics (also in MLflow).

    SIGINT / SIGTERM end the run as KILLED with ``last.ckpt`` logged, and raise :class:`Interrupted`;
    ``ckpt_path=`` / ``resume=`` continue an interrupted run.
    """
    require_complete(cfg)
    check_choice(cfg)
    warn_emulated_bf16(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    client = MlflowClient(tracking_uri(cfg))
    point = resume_point(cfg, client)
    if point is not None and point.checkpoint.parent.name == "checkpoints" and "model_checkpoint" in cfg.callbacks:
        with open_dict(cfg):  # keep writing next to the interrupted run's checkpoints, so its best one counts
            cfg.callbacks.model_checkpoint.dirpath = str(point.checkpoint.parent)
    settings = flatten_config(cfg)
    if point is not None and point.run_id is not None:  # before the run is reopened: it stays KILLED
        derived = {k for k, v in flatten_config(cfg, resolve=False).items() if isinstance(v, str) and "${" in v}
        check_same_settings(settings, derived, client, point.run_id)
    with signals_interrupt():
        datamodule, task = _data_and_task(cfg)  # before the run: a mistake in either is one error line, no FAILED run
        with mlflow_run(cfg, resume_run_id=point.run_id if point else None) as run:
            logger = MLFlowLogger(experiment_name=run.experiment_name, tracking_uri=run.tracking_uri,  # written in
                                  run_id=run.run_id, log_model=False, synchronous=False)  # the background
            logger.log_hyperparams(new_params(run, settings))
            callbacks, progress_bar = console_callbacks(build_callbacks(cfg))
            pruning = pruning_callback(cfg)
            extra = [ResumeState(run.run_id)] + ([pruning] if pruning else [])
            trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks + extra,
                                              default_root_dir=str(output_dir), enable_progress_bar=progress_bar)
            checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
            if task.needs_training:
                try:
                    trainer.fit(task, datamodule=datamodule, ckpt_path=str(point.checkpoint) if point else None,
                                weights_only=True)
                except (Interrupted, SIGTERMException) as caught:  # Lightning's own, once a deferred SIGTERM waits
                    err = caught if isinstance(caught, Interrupted) else Interrupted(signal.SIGTERM)
                    _log_last_checkpoint(run, checkpoint, err)
                    raise err from None
            if pruning is not None and pruning.pruned:
                _log_training_curves(run)
                raise optuna.TrialPruned(f"pruned after epoch {trainer.current_epoch}")
            best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
            reload = best if task.needs_training else None
            if not task.needs_training:  # Lightning saves nothing here: the model as assembled is the checkpoint
                best = str(save_checkpoint(task, output_dir / "checkpoints" / "best.ckpt"))
            if cfg.get("choose") and best:  # chosen once, on rank 0; every rank tests with it
                chosen = choose_after_fit(cfg, best, run) if trainer.is_global_zero else None
                chosen = trainer.strategy.broadcast(chosen, src=0)
                if chosen is not None:
                    task.use_decision(chosen)
            if cfg.get("optimized_metric") and reload:  # sweeps compare models at their best checkpoint
                loggers, trainer.loggers = trainer.loggers, []  # returned, and logged as best/val/*: not one more epoch
                try:
                    trainer.validate(task, datamodule=datamodule, ckpt_path=reload, verbose=False)
                finally:
                    trainer.loggers = loggers
                run.log_metrics({f"best/{k}": v for k, v in _scalars(trainer, "val/").items()})
            metrics = _scalars(trainer, "val/")
            if cfg.test_after_fit:
                trainer.test(task, datamodule=datamodule, ckpt_path=reload, verbose=False)
                metrics.update(_scalars(trainer, "test/"))
            if trainer.is_global_zero:
                run.log_text(datamodule.split_frame().to_csv(index=False), "split.csv")
                task.log_test_artifacts(run)
                _log_training_curves(run)
                if best and cfg.logger.get("log_checkpoint", True):
                    run.log_artifact(best, "checkpoints")
                run.set_tags({"best_checkpoint": best or "", "world_size": trainer.world_size})
                from scratchlab.run_summary import print_summary

                print_summary(metrics, run, best)
            return metrics
