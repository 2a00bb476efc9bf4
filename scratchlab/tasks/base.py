"""What every task shares: optimizer/scheduler from config factories, per-stage metrics logged per epoch."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from torch import nn

STAGES = ("train", "val", "test")


class BaseTask(pl.LightningModule):
    """Subclasses set ``self.metrics`` via ``init_metrics`` and call ``self.stage_metrics(stage).update``.

    Metric objects expose ``compute() -> dict`` and ``reset()``; each value is logged as ``{stage}/{key}``.
    """

    progress_metrics: tuple[str, ...] = ()

    def __init__(self, net: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable | None) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def init_metrics(self, make: Callable[[], nn.Module]) -> None:
        # ModuleDict keys cannot be "train" (a Module method), hence the suffix.
        self.metrics = nn.ModuleDict({f"{s}_metrics": make() for s in STAGES})

    def stage_metrics(self, stage: str) -> nn.Module:
        return self.metrics[f"{stage}_metrics"]

    def log_loss(self, stage: str, loss: Any, batch_size: int) -> None:
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=batch_size, sync_dist=True)

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self.stage_metrics(stage)
        for key, value in metrics.compute().items():
            self.log(f"{stage}/{key}", value, prog_bar=stage == "val" and key in self.progress_metrics,
                     sync_dist=True)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def log_test_artifacts(self, run: Any) -> None:
        """Write this task's test reports into the MLflow ``run`` (a ``TrackedRun``) after testing."""

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch"}}


def gather_test_outputs(task: pl.LightningModule, outputs: dict[str, list]) -> dict[str, list]:
    """Under DDP every process saw a share of the test split: return all shares (on every process)."""
    if task.trainer.world_size == 1:
        return outputs
    import torch.distributed as dist

    shards: list[dict] = [{} for _ in range(task.trainer.world_size)]
    dist.all_gather_object(shards, outputs)
    return {k: [x for shard in shards for x in shard[k]] for k in outputs}
