"""Scratch segmentation as a LightningModule: pixel metrics, the area rule for the image decision, pictures."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn

from scratchlab.data.io import read_image
from scratchlab.data.transforms import Preprocess, restore_geometry
from scratchlab.metrics import SegmentationMetrics
from scratchlab.postprocess import DecisionParams, decide_from_area, decide_from_probability, image_scores_from_masks
from scratchlab.tasks.base import BaseTask, gather_test_outputs
from scratchlab.visualize import draw_overlay, make_grid

N_PICTURES = 8


def valid_pixels(batch: Mapping[str, Any], shape: tuple[int, ...], pad_mode: bool) -> torch.Tensor:
    """(B, H, W) bool: the pixels of each image, without the padding added to reach the network's size."""
    valid = torch.zeros(shape, dtype=torch.bool, device=batch["image"].device)
    if not pad_mode:
        return valid.fill_(True)
    for i, (h, w) in enumerate(batch["size"].tolist()):
        valid[i, :h, :w] = True
    return valid


class SegmentationTask(BaseTask):
    """Trains a one-channel scratch segmenter; the image is bad when the scratch area passes ``decision``.

    Per validation epoch a fixed grid of validation images (truth outlined green, prediction red,
    boxes yellow) is logged; at test the worst false negatives and false positives.
    """

    progress_metrics = ("dice", "f1_bad")

    def __init__(self, net: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable | None,
                 decision: Mapping[str, Any], pad_mode: bool = True, class_names: list[str] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(net, loss, optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.decision = DecisionParams.from_config(decision)
        self.pad_mode = pad_mode
        self.class_names = list(class_names or ["good", "bad"])
        self.init_metrics(lambda: SegmentationMetrics(self.decision.mask_threshold))
        self.pictures: list[dict] = []
        self.test_outputs: dict[str, list] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss and (B, H, W) scratch probabilities of a batch."""
        logits = self(batch["image"])
        return self.loss(logits, batch["mask"][:, None]), torch.sigmoid(logits.detach().float()[:, 0])

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, probs = self.loss_and_probs(batch, stage)
        valid = valid_pixels(batch, probs.shape, self.pad_mode)
        areas = image_scores_from_masks(probs * valid, self.decision)
        sizes = batch["size"].tolist() if self.pad_mode else [probs.shape[1:]] * len(probs)
        image_bad = torch.tensor([bool(decide_from_area(float(a), self.decision, h, w))
                                  for a, (h, w) in zip(areas.tolist(), sizes)], device=probs.device)
        self.stage_metrics(stage).update(probs, batch["mask"], valid, image_bad, batch["label"] > 0)
        self.log_loss(stage, loss, len(probs))
        return loss, probs, areas, image_bad

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, probs, _, _ = self._step(batch, "val")
        if len(self.pictures) < N_PICTURES:
            self.pictures += self._records(batch, probs)[: N_PICTURES - len(self.pictures)]

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, probs, areas, image_bad = self._step(batch, "test")
        for record, area, bad in zip(self._records(batch, probs), areas.tolist(), image_bad.tolist()):
            self.test_outputs["records"].append({**record, "area": area, "pred_bad": bad})

    def _records(self, batch: dict, probs: torch.Tensor) -> list[dict]:
        """Per image: path, label, and the probability (uint8) and truth maps cropped to the image."""
        out = []
        for i, path in enumerate(batch["path"]):
            h, w = batch["size"][i].tolist() if self.pad_mode else probs.shape[1:]
            out.append({"path": path, "label": int(batch["label"][i]),
                        "prob": (probs[i, :h, :w] * 255).round().byte().cpu().numpy(),
                        "mask": batch["mask"][i, :h, :w].byte().cpu().numpy()})
        return out

    def on_validation_epoch_start(self) -> None:
        self.pictures = []

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.pictures and not self.trainer.sanity_checking:
            self._log_picture(self.pictures, f"val_overlays/epoch_{self.current_epoch:03d}.png")

    def on_test_epoch_start(self) -> None:
        self.test_outputs = {"records": []}

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.test_outputs = gather_test_outputs(self, self.test_outputs)
        records = self.test_outputs["records"]
        misses = sorted((r for r in records if r["label"] > 0 and not r["pred_bad"]), key=lambda r: r["area"])
        false_alarms = sorted((r for r in records if r["label"] == 0 and r["pred_bad"]), key=lambda r: -r["area"])
        for name, chosen in (("test_worst_false_negatives.png", misses), ("test_worst_false_positives.png",
                                                                           false_alarms)):
            if chosen:
                self._log_picture(chosen[:N_PICTURES], name)

    @cached_property
    def preprocess(self) -> Preprocess:
        """How this model's inputs were prepared (from the run config stored with it)."""
        from scratchlab.builders import preprocess_from_config

        return preprocess_from_config(OmegaConf.create(self.hparams.config))

    def overlay(self, record: dict) -> np.ndarray:
        """The image with its true scratches outlined and the predicted ones tinted and boxed."""
        image = read_image(record["path"])
        h, w = image.shape[:2]
        prob = record["prob"].astype(np.float32) / 255
        if prob.shape != (h, w):  # scaled input: bring the maps back to the image's size
            if self.pad_mode:  # records are already cropped to the image's part of the input
                prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
                truth = cv2.resize(record["mask"], (w, h), interpolation=cv2.INTER_NEAREST)
            else:
                prob = restore_geometry(prob, self.preprocess, h, w)
                truth = (restore_geometry(record["mask"].astype(np.float32), self.preprocess, h, w) >= 0.5
                         ).astype(np.uint8)
            record = {**record, "mask": truth}
        decision = decide_from_probability(prob, self.decision)
        verdict = "bad" if decision.is_bad else "good"
        truth = self.class_names[record["label"]] if record["label"] < len(self.class_names) else record["label"]
        return draw_overlay(image, pred_mask=decision.mask, gt_mask=record["mask"], boxes=decision.components,
                            label=f"true {truth} / pred {verdict}")

    def _log_picture(self, records: list[dict], artifact_file: str) -> None:
        if not isinstance(self.logger, MLFlowLogger) or not self.trainer.is_global_zero:
            return
        grid = make_grid([self.overlay(r) for r in records], ncols=4, tile=320)
        self.logger.experiment.log_image(self.logger.run_id, grid, artifact_file)
