"""Good/bad (or N-class) image classification as a LightningModule."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from hydra.utils import instantiate
from omegaconf import DictConfig

from scratchlab.checkpoints import ModelSpec
from scratchlab.errors import ConfigError
from scratchlab.models import build_model
from scratchlab.task_metrics import ClassificationMetrics
from scratchlab.postprocess import DecisionParams, Verdict, verdict_from_class_probs
from scratchlab.figures import classification_report, confusion_matrix_figure, precision_recall_figure
from scratchlab.tasks.base import STAGES, BaseTask, Raw, TrainCounts, full_precision, gather_test_outputs


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1) logit of bad -> (B, 2) [P(good), P(bad)]; (B, n) logits -> softmax."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return logits.softmax(dim=1)


class ClassProbabilities(nn.Module):
    """``net`` followed by ``logits_to_probs``: what an exported classifier computes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_to_probs(self.net(x).float())


class ClassificationTask(BaseTask):
    """Trains ``net`` with ``loss``; logs ``{stage}/loss`` and the metrics of ``ClassificationMetrics``.

    ``config`` (the resolved run config) and ``class_counts`` (training split, for "auto" loss weights)
    are stored in the checkpoint so a model can be rebuilt from it alone.
    Test predictions are kept in ``test_outputs`` (probabilities, targets, paths) for reports.
    """

    name = "classification"
    progress_metrics = ("acc", "f1_bad")
    export_outputs = {"probs": {0: "batch"}}

    def __init__(self, net: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable | None,
                 spec: ModelSpec, config: dict[str, Any] | None = None, class_counts: list[int] | None = None) -> None:
        super().__init__(net, loss, optimizer, scheduler, spec)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "spec"], logger=False)  # params: the flat config
        self.init_metrics(lambda stage: ClassificationMetrics(self.class_names, spec.decision.threshold))
        self.test_outputs: dict[str, list] = {}

    def use_decision(self, decision: DecisionParams) -> None:
        super().use_decision(decision)
        for stage in STAGES:
            self.stage_metrics(stage).threshold = decision.threshold

    @classmethod
    def from_config(cls, cfg: DictConfig, spec: ModelSpec, counts: TrainCounts,
                    common: dict[str, Any]) -> ClassificationTask:
        loss = instantiate(cfg.loss)
        if not hasattr(loss, "num_outputs"):
            raise ConfigError(f"loss={cfg.loss._target_.rsplit('.', 1)[-1]} is a segmentation loss; "
                              f"classification models take loss=bce or loss=ce")
        if counts.classes is not None:
            loss.fit_class_counts(counts.classes)
        net = build_model(cfg.model, num_outputs=loss.num_outputs(len(spec.class_names)))
        return cls(net=net, loss=loss, spec=spec, class_counts=counts.classes, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def raw_outputs(self, x: torch.Tensor, content_sizes: Sequence[tuple[int, int]],
                    images: Sequence[np.ndarray] | None = None) -> list[Raw]:
        return [{"probs": p} for p in self.inference_network()(x).float().cpu().numpy()]

    @classmethod
    def judge(cls, raw: Mapping[str, np.ndarray], size: tuple[int, int], spec: ModelSpec) -> Verdict:
        return verdict_from_class_probs(raw["probs"], spec.decision, list(spec.class_names))

    def export_network(self) -> nn.Module:
        return ClassProbabilities(self.net)

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss and (B, C) class probabilities of a batch; validation and test probabilities are
        averaged over the model's flips (``tta``), as every inference path's are."""
        logits = self(batch["image"])
        if self.tta and stage != "train":
            probs = self.inference_network()(batch["image"]).float()
        else:
            probs = logits_to_probs(logits.detach().float())
        return self.loss(logits, batch["label"]), probs

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        loss, probs = self.loss_and_probs(batch, stage)
        self.stage_metrics(stage).update(probs, batch["label"])
        self.log_loss(stage, loss, len(probs))
        return loss, probs

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    @full_precision
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    @full_precision
    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, probs = self._step(batch, "test")
        self.record_test_results(batch, self.batch_verdicts(batch)[1])
        self.test_outputs["probs"].append(probs.cpu())
        self.test_outputs["targets"].append(batch["label"].cpu())
        self.test_outputs["paths"].extend(batch["path"])

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.test_outputs = {"probs": [], "targets": [], "paths": []}

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.test_outputs = gather_test_outputs(self, self.test_outputs)

    def log_test_artifacts(self, run: Any) -> None:
        """classification_report.txt, confusion_matrix.png and precision_recall_curve.png of the test split."""
        if not self.test_outputs.get("probs"):
            return
        probs, targets = torch.cat(self.test_outputs["probs"]), torch.cat(self.test_outputs["targets"])
        threshold, names = self.decision.threshold, self.class_names
        run.log_text(classification_report(probs, targets, names, threshold), "classification_report.txt")
        for fig, name in ((confusion_matrix_figure(probs, targets, names, threshold), "confusion_matrix.png"),
                          (precision_recall_figure(probs, targets, names), "precision_recall_curve.png")):
            run.log_figure(fig, name)
            plt.close(fig)
