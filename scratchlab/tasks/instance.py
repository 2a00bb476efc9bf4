"""Mask R-CNN scratch instances as a LightningModule: the segmentation task's metrics and pictures on the
union of instance masks, plus box and mask mAP (torchmetrics MeanAveragePrecision)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from scratchlab.models.instance_targets import build_target, instances_from_mask
from scratchlab.tasks.segmentation import SegmentationTask

MAP_KEYS = {"map": "map", "map_50": "map50"}


class InstanceSegmentationTask(SegmentationTask):
    """Trains on torchvision's loss dict; evaluates the instances kept at ``score_threshold``."""

    progress_metrics = ("dice", "f1_bad", "map_segm")

    def __init__(self, net: nn.Module, loss: nn.Module | None, optimizer: Callable, scheduler: Callable | None,
                 decision: Mapping[str, Any], score_threshold: float = 0.5, min_instance_area: int = 4,
                 class_names: list[str] | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__(net, loss, optimizer, scheduler, decision, pad_mode=True, class_names=class_names,
                         config=config)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.score_threshold = score_threshold
        self.min_instance_area = min_instance_area
        self.map_metrics = nn.ModuleDict({s: MeanAveragePrecision(iou_type=["bbox", "segm"]) for s in ("val", "test")})

    def _inputs(self, batch: dict) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        images, targets = [], []
        for image, mask, (h, w) in zip(batch["image"], batch["mask"], batch["size"].tolist()):
            images.append(image[:, :h, :w])
            target = build_target(instances_from_mask(mask[:h, :w].cpu().numpy(), self.min_instance_area))
            targets.append({k: v.to(image.device) for k, v in target.items()})
        return images, targets

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self._inputs(batch)
        probs = torch.zeros(batch["mask"].shape, device=batch["image"].device)
        if stage == "train":
            losses = self.net(images, targets)
            for key, value in losses.items():
                self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=len(images))
            return sum(losses.values()), probs
        with torch.no_grad():  # torchvision gives losses only in train mode; its batch norms are frozen
            self.net.train()
            loss = sum(self.net(images, targets).values())
            self.net.eval()
            outputs = self.net(images)
        for i, (out, (h, w)) in enumerate(zip(outputs, batch["size"].tolist())):
            kept = out["scores"] >= self.score_threshold
            if kept.any():
                probs[i, :h, :w] = out["masks"][kept, 0].max(dim=0).values
        self.map_metrics[stage].update(
            [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"],
              "masks": (o["masks"][:, 0] >= self.decision.mask_threshold)} for o in outputs],
            [{**t, "masks": t["masks"].bool()} for t in targets])
        return loss, probs

    def _log_epoch_metrics(self, stage: str) -> None:
        super()._log_epoch_metrics(stage)
        if stage in self.map_metrics:
            values = self.map_metrics[stage].compute()
            for iou_type in ("bbox", "segm"):
                for key, name in MAP_KEYS.items():
                    self.log(f"{stage}/{name}_{iou_type}", values[f"{iou_type}_{key}"], sync_dist=True)
            self.map_metrics[stage].reset()
