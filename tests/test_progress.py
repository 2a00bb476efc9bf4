"""One log line per epoch when output goes to a file or pipe: each line shows that epoch's own training and
validation metrics, including the last epoch's, with or without validation."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from scratchlab.progress import EpochLine
from tests.conftest import run_cli, tiny_overrides


class _Counting(pl.LightningModule):
    """Logs values that tell epochs apart: train/loss from the steps, train/acc in ``on_train_epoch_end`` (as
    the tasks do), val/loss from validation."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.log("train/loss", float(self.current_epoch + 1), on_step=False, on_epoch=True, batch_size=2)
        return self.layer(batch[0]).sum()

    def on_train_epoch_end(self) -> None:
        self.log("train/acc", 10.0 * (self.current_epoch + 1))

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", 100.0 + self.current_epoch, batch_size=2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _epoch_lines(caplog: pytest.LogCaptureFixture, **trainer_args) -> dict[int, dict[str, float]]:
    """The metrics of each epoch line of a tiny fit, by epoch number."""
    data = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[EpochLine()], **trainer_args)
    with caplog.at_level(logging.INFO, logger="scratchlab"):
        trainer.fit(_Counting(), train_dataloaders=data, val_dataloaders=data)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    return {int(line.split()[1].split("/")[0]): {k: float(v) for k, v in re.findall(r"(\S+)=(\S+)", line)}
            for line in lines}


def test_each_epoch_line_shows_that_epochs_metrics(caplog: pytest.LogCaptureFixture) -> None:
    lines = _epoch_lines(caplog, max_epochs=3, num_sanity_val_steps=0)
    assert lines == {e: {"train/loss": e, "train/acc": 10 * e, "val/loss": 99 + e} for e in (1, 2, 3)}


def test_epoch_lines_without_validation(caplog: pytest.LogCaptureFixture) -> None:
    assert _epoch_lines(caplog, max_epochs=1, limit_val_batches=0) == {1: {"train/loss": 1, "train/acc": 10}}
    caplog.clear()
    lines = _epoch_lines(caplog, max_epochs=2, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    assert lines == {1: {"train/loss": 1, "train/acc": 10}, 2: {"train/loss": 2, "train/acc": 20, "val/loss": 101}}


def test_logged_epoch_lines_match_the_runs_history(tmp_path: Path, tiny_dataset: Path) -> None:
    result = run_cli("scratchlab.train", tiny_overrides(tmp_path, tiny_dataset), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split(" - ", 1)[1] for line in (result.stdout + result.stderr).splitlines() if "] - epoch " in line]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run_id = mlflow.search_runs(experiment_names=["scratchlab"]).run_id.iloc[0]
    client = mlflow.tracking.MlflowClient()
    for key in ("train/loss", "train/acc", "val/loss"):
        logged = [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        shown = [float(re.search(rf"{key}=(\S+)", line).group(1)) for line in lines]
        assert shown == pytest.approx(logged, abs=1e-4), key
