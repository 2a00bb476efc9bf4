"""Instance segmentation: torchvision's Mask R-CNN (ResNet50-FPN) for two classes, background and scratch."""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet50_Weights
from torchvision.models.detection import maskrcnn_resnet50_fpn

from scratchlab.errors import ConfigError

log = logging.getLogger(__name__)


def maskrcnn(num_outputs: int = 2, min_size: int = 320, max_size: int = 640, weights_path: str | None = None,
             box_detections_per_img: int = 50, box_score_thresh: float = 0.05, pretrained: bool = False) -> nn.Module:
    """Mask R-CNN, randomly initialised or (``pretrained``) on torchvision's ImageNet ResNet-50 backbone, as
    "ResNet50 + Mask R-CNN" of the earlier work, from torch's local hub cache (downloaded only where
    download.pytorch.org is reachable); ``weights_path`` loads a local state dict (e.g. COCO weights),
    skipping the tensors whose shapes differ (the class-specific heads).

    Inputs are expected already normalized by scratchlab's preprocessing, so the model's own
    normalization is switched off; ``min_size``/``max_size`` bound its internal rescaling;
    detections scoring under ``box_score_thresh`` are dropped inside the network.
    """
    backbone = _imagenet_backbone() if pretrained else None
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=backbone, num_classes=num_outputs, min_size=min_size,
                                  max_size=max_size, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
                                  box_detections_per_img=box_detections_per_img, box_score_thresh=box_score_thresh)
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.weights_path={weights_path} does not exist; give the path of a local weights file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        own = model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ConfigError(f"model.weights_path={weights_path} holds no Mask R-CNN ResNet50-FPN weights")
        model.load_state_dict(usable, strict=False)
        log.info("loaded %d of %d tensors from %s", len(usable), len(own), path)
    return model


def _imagenet_backbone() -> ResNet50_Weights:
    """torchvision's ImageNet ResNet-50 weights, when they are in torch's hub cache or can be downloaded."""
    from scratchlab.models.classifiers import _hub_reachable

    weights = ResNet50_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not cached.is_file() and not _hub_reachable(urlparse(weights.url).hostname or ""):
        raise ConfigError(f"model.pretrained=true but the ImageNet ResNet-50 weights are not in {cached} and "
                          f"{urlparse(weights.url).hostname} cannot be reached: put the file there, pass "
                          f"model.weights_path=FILE, or model.pretrained=false (random init)")
    return weights
