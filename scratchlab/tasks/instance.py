"""Mask R-CNN scratch instances as a LightningModule: the segmentation task's metrics and pictures on the
union of instance masks, plus box and mask mAP (torchmetrics MeanAveragePrecision)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import nn
from omegaconf import DictConfig
from torchmetrics.detection import MeanAveragePrecision

from scratchlab.checkpoints import ModelSpec
from scratchlab.data.dataset import instance_target
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.models import build_model
from scratchlab.tasks.base import Raw, TrainCounts, require_binary
from scratchlab.tasks.segmentation import SegmentationTask

MAP_KEYS = {"map": "map", "map_50": "map50"}


def union_map(output: dict[str, torch.Tensor], score_threshold: float, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) pixel-wise max of the mask probabilities of the instances scoring >= ``score_threshold``."""
    kept = output["scores"] >= score_threshold
    if not kept.any():
        return torch.zeros(size, device=output["scores"].device)
    return output["masks"][kept, 0].float().max(dim=0).values


class UnionMap(nn.Module):
    """Mask R-CNN on one normalized (1, 3, H, W) image -> (1, H, W) ``union_map``, in a form ONNX can trace:
    masks of instances under the score threshold are multiplied by 0, and a zero map joins the max."""

    def __init__(self, net: nn.Module, score_threshold: float) -> None:
        super().__init__()
        self.net = net
        self.score_threshold = score_threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net([x[0]])[0]
        kept = (out["scores"] >= self.score_threshold).to(out["masks"].dtype)
        masks = out["masks"][:, 0] * kept[:, None, None]
        return torch.cat([torch.zeros_like(x[0, :1]), masks]).max(dim=0).values[None]


class InstanceSegmentationTask(SegmentationTask):
    """Trains on torchvision's loss dict; judges the union of the instances kept at ``score_threshold``
    (``spec.options``) with the segmentation task's area rule."""

    name = "instance"
    pixel_weighted_loss = False
    progress_metrics = ("dice", "f1_bad", "map_segm")
    one_image_per_forward = True  # torchvision batches images padded to the largest: results would depend on it
    takes_tta = False
    export_outputs = {"prob_map": {1: "height", 2: "width"}}

    def __init__(self, net: nn.Module, loss: nn.Module | None, optimizer: Callable, scheduler: Callable | None,
                 spec: ModelSpec, min_instance_area: int = 4, config: dict[str, Any] | None = None) -> None:
        super().__init__(net, loss, optimizer, scheduler, spec, config=config)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "spec"], logger=False)  # params: the flat config
        self.score_threshold = float(spec.options["score_threshold"])
        self.min_instance_area = min_instance_area
        self.map_metrics = nn.ModuleDict({s: MeanAveragePrecision(iou_type=["bbox", "segm"]) for s in ("val", "test")})

    @classmethod
    def loader_options(cls, cfg: DictConfig) -> dict[str, Any]:
        return {**super().loader_options(cfg), "instance_min_area": int(cfg.model.min_instance_area)}

    @classmethod
    def from_config(cls, cfg: DictConfig, spec: ModelSpec, counts: TrainCounts,
                    common: dict[str, Any]) -> InstanceSegmentationTask:
        require_binary(spec, "Mask R-CNN")
        if spec.preprocess.resize != "pad":
            raise ConfigError("model=maskrcnn takes images at their own size: keep data.resize=pad")
        spec = replace(spec, options={"score_threshold": float(cfg.model.score_threshold)})
        return cls(net=build_model(cfg.model, num_outputs=2), loss=None, spec=spec,
                   min_instance_area=cfg.model.min_instance_area, **common)

    def raw_outputs(self, x: torch.Tensor, content_sizes: Sequence[tuple[int, int]],
                    images: Sequence[np.ndarray] | None = None) -> list[Raw]:
        outputs = self.net([im[:, :h, :w] for im, (h, w) in zip(x, content_sizes)])
        return [{"prob_map": union_map(o, self.score_threshold, s).cpu().numpy()} for o, s in zip(outputs, content_sizes)]

    def export_network(self) -> nn.Module:
        return UnionMap(self.net, self.score_threshold)

    @classmethod
    def export_geometry(cls, pre: Preprocess) -> list[Any]:
        """Mask R-CNN takes the image without padding (as ``raw_outputs`` cuts it to its content)."""
        return [t for t in pre.geometry() if not isinstance(t, A.PadIfNeeded)]

    def _inputs(self, batch: dict) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Images cut to their content, and their targets: built by the loader workers
        (``ImageDataset.instance_min_area``), or here for batches that come without them."""
        sizes = batch["size"].tolist()
        images = [image[:, :h, :w] for image, (h, w) in zip(batch["image"], sizes)]
        targets = batch.get("instances")
        if targets is None:
            targets = [{k: v.to(image.device) for k, v in
                        instance_target(mask.cpu(), size, self.min_instance_area).items()}
                       for image, mask, size in zip(batch["image"], batch["mask"], sizes)]
        return images, targets

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self._inputs(batch)
        probs = torch.zeros(batch["mask"].shape, device=batch["image"].device)
        if stage == "train":
            losses = self.net(images, targets)
            for key, value in losses.items():
                self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=len(images))
            return sum(losses.values()), probs
        with torch.no_grad():
            loss = sum(self._evaluation_losses(images, targets).values())
            outputs = self.net(images)
        for i, (out, (h, w)) in enumerate(zip(outputs, batch["size"].tolist())):
            probs[i, :h, :w] = union_map(out, self.score_threshold, (h, w))
        self._update_map(stage, outputs, targets)
        return loss, probs

    def _evaluation_losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        """torchvision gives losses only in train mode; batch norms stay in eval mode meanwhile, so evaluating
        never changes their running statistics (a randomly initialised backbone has real batch norms)."""
        self.net.train()
        for module in self.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        try:
            return self.net(images, targets)
        finally:
            self.net.eval()

    def _update_map(self, stage: str, outputs: list[dict], targets: list[dict]) -> None:
        self.map_metrics[stage].update(
            [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"],
              "masks": (o["masks"][:, 0] >= self.decision.mask_threshold)} for o in outputs],
            [{**t, "masks": t["masks"].bool()} for t in targets])

    def reset_evaluation_metrics(self) -> None:
        self.map_metrics["test"].reset()

    @torch.no_grad()
    def update_evaluation_metrics(self, batch: dict) -> None:
        images, targets = self._inputs(batch)
        self._update_map("test", self.net(images), targets)

    def compute_evaluation_metrics(self) -> dict[str, float]:
        values = self.map_metrics["test"].compute()
        return {f"{name}_{iou}": float(values[f"{iou}_{key}"]) for iou in ("bbox", "segm") for key, name in
                MAP_KEYS.items()}

    def _log_epoch_metrics(self, stage: str) -> None:
        super()._log_epoch_metrics(stage)
        if stage in self.map_metrics:
            values = self.map_metrics[stage].compute()
            for iou_type in ("bbox", "segm"):
                for key, name in MAP_KEYS.items():
                    self.log(f"{stage}/{name}_{iou_type}", values[f"{iou_type}_{key}"], sync_dist=True)
            self.map_metrics[stage].reset()
