"""Two-stage inspection: a trained classifier gates, and only the images it calls bad are segmented.

The final decision is the segmenter's area rule on the gated images (an image the classifier passes
is good), so it is reported with the same metrics as any segmentation model. Nothing is trained.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.tasks.classification import ClassificationTask, logits_to_probs
from scratchlab.tasks.segmentation import SegmentationTask


def resize_for(pre: Preprocess, image: torch.Tensor) -> torch.Tensor:
    """A normalized (3, H, W) image brought to a classifier's input geometry (stretch or letterbox)."""
    size = pre.image_size
    if pre.resize == "stretch":
        return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    h, w = image.shape[1:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    top, left = (size - nh) // 2, (size - nw) // 2
    fill = torch.tensor(pre.mean, device=image.device).neg().div(torch.tensor(pre.std, device=image.device))
    return F.pad(resized - fill[:, None, None], (left, size - nw - left, top, size - nh - top)) + fill[:, None, None]


class TwoStageTask(SegmentationTask):
    """``classifier`` (a ClassificationTask) gates ``segmenter`` (a SegmentationTask trained with resize=pad).

    An image goes to the segmenter when P(bad) >= ``gate_threshold`` (default: the classifier's threshold).
    """

    needs_training = False

    def __init__(self, classifier: ClassificationTask, segmenter: SegmentationTask,
                 decision: Mapping[str, Any] | None = None, gate_threshold: float | None = None,
                 config: dict[str, Any] | None = None) -> None:
        if not segmenter.pad_mode:
            raise ConfigError("the two-stage segmenter must be trained with data.resize=pad (native image size)")
        from scratchlab.builders import preprocess_from_config

        super().__init__(segmenter.net, segmenter.loss, optimizer=None, scheduler=None,
                         decision=decision or segmenter.hparams.decision, pad_mode=True,
                         class_names=segmenter.class_names, config=config)
        self.classifier = classifier
        self.classifier_pre = preprocess_from_config(OmegaConf.create(classifier.hparams.config))
        self.gate_threshold = float(classifier.hparams.threshold if gate_threshold is None else gate_threshold)

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        crops = [resize_for(self.classifier_pre, img[:, :h, :w]) for img, (h, w) in zip(batch["image"],
                                                                                    batch["size"].tolist())]
        gate = logits_to_probs(self.classifier(torch.stack(crops)))[:, 1] >= self.gate_threshold
        probs = torch.zeros(batch["mask"].shape, device=batch["image"].device)
        if gate.any():
            probs[gate] = torch.sigmoid(self.net(batch["image"][gate]).float()[:, 0])
        self.log(f"{stage}/gate_rate", gate.float().mean(), on_step=False, on_epoch=True, batch_size=len(gate))
        return torch.zeros((), device=probs.device), probs
