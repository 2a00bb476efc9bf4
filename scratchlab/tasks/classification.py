"""Good/bad (or N-class) image classification as a LightningModule."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from scratchlab.metrics import ClassificationMetrics

STAGES = ("train", "val", "test")
PROGRESS_METRICS = ("acc", "f1_bad")


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1) logit of bad -> (B, 2) [P(good), P(bad)]; (B, n) logits -> softmax."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return logits.softmax(dim=1)


class ClassificationTask(pl.LightningModule):
    """Trains ``net`` with ``loss``; logs ``{stage}/loss`` and the metrics of ``ClassificationMetrics``.

    ``config`` (the resolved run config) is stored in the checkpoint so a model can be rebuilt from it alone.
    Test predictions are kept in ``test_outputs`` (probabilities, targets, paths) for reports.
    """

    def __init__(self, net: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable | None,
                 class_names: list[str], threshold: float = 0.5, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names)
        # ModuleDict keys cannot be "train" (a Module method), hence the suffix.
        self.metrics = nn.ModuleDict({f"{s}_metrics": ClassificationMetrics(class_names, threshold) for s in STAGES})
        self.test_outputs: dict[str, list] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["label"])
        probs = logits_to_probs(logits.detach().float())
        self.metrics[f"{stage}_metrics"].update(probs, batch["label"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=len(logits), sync_dist=True)
        return loss, probs

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, probs = self._step(batch, "test")
        self.test_outputs["probs"].append(probs.cpu())
        self.test_outputs["targets"].append(batch["label"].cpu())
        self.test_outputs["paths"].extend(batch["path"])

    def on_test_epoch_start(self) -> None:
        self.test_outputs = {"probs": [], "targets": [], "paths": []}

    def _log_epoch_metrics(self, stage: str) -> None:
        for key, value in self.metrics[f"{stage}_metrics"].compute().items():
            self.log(f"{stage}/{key}", value, prog_bar=stage == "val" and key in PROGRESS_METRICS, sync_dist=True)
        self.metrics[f"{stage}_metrics"].reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")
        if self.trainer.world_size > 1:  # every process saw a share of the test split: collect them all
            import torch.distributed as dist

            shards: list[dict] = [{} for _ in range(self.trainer.world_size)]
            dist.all_gather_object(shards, self.test_outputs)
            self.test_outputs = {k: [x for shard in shards for x in shard[k]] for k in self.test_outputs}

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch"}}
