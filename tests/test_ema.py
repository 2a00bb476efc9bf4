"""callbacks=ema: the best checkpoint holds the averaged weights, and the run's own test step judges with them."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from scratchlab.builders import build_datamodule, load_task
from scratchlab.checkpoints import load_file
from scratchlab.config import compose
from scratchlab.training import run_training
from tests.conftest import tiny_overrides


def _test_loss(task: pl.LightningModule, overrides: list[str]) -> float:
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(task, datamodule=build_datamodule(compose("train", overrides)), verbose=False)
    return float(trainer.callback_metrics["test/loss"])


def test_best_checkpoint_holds_the_average(tmp_path: Path, tiny_dataset: Path) -> None:
    overrides = tiny_overrides(tmp_path, tiny_dataset) + ["callbacks=ema", "callbacks.ema.decay=0.5",
                                                          "logger.log_checkpoint=false"]
    metrics = run_training(compose("train", overrides))
    raw = load_file(tmp_path / "logs" / "run" / "checkpoints" / "best.ckpt")
    averaged, current = raw["state_dict"], raw["current_model_state"]
    assert averaged.keys() == current.keys()
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged), "the average is not the last weights"

    task = load_task(tmp_path / "logs" / "run" / "checkpoints" / "best.ckpt")  # what evaluate / predict / export load
    assert all(torch.equal(v, averaged[k]) for k, v in task.state_dict().items() if k in averaged)
    assert metrics["test/loss"] == _test_loss(task, overrides), "the run tested the averaged weights"
    task.load_state_dict(current)
    assert metrics["test/loss"] != _test_loss(task, overrides), "the raw weights judge differently"


def test_ema_is_off_by_default(tmp_path: Path) -> None:
    cfg = compose("train", tiny_overrides(tmp_path))
    assert "ema" not in cfg.callbacks
    cfg = compose("train", tiny_overrides(tmp_path) + ["callbacks=ema", "callbacks.early_stopping=null"])
    assert cfg.callbacks.ema.decay == 0.999 and cfg.callbacks.early_stopping is None
    assert "model_checkpoint" in cfg.callbacks
