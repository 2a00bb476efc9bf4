"""Image classifiers: the earlier work's custom CNN and timm backbones with local-only weight loading."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from scratchlab.errors import ConfigError


class ScratchCNN(nn.Module):
    """conv32 3x3 -> max-pool -> conv64 3x3 -> max-pool -> dense ``hidden`` -> ``num_outputs`` logits.

    Unpadded ("valid") convolutions as in the earlier work, so a 100x100 input flattens to 64x23x23.
    """

    def __init__(self, num_outputs: int = 1, image_size: int = 100, hidden: int = 64, dropout: float = 0.0,
                 in_chans: int = 3) -> None:
        super().__init__()
        side = ((image_size - 2) // 2 - 2) // 2
        if side < 1:
            raise ConfigError(f"model.image_size={image_size} is too small for the custom CNN; use at least 10")
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _cached_pretrained_file(name: str) -> Path | None:
    """The local file timm would load ImageNet weights from, if it is already cached on this machine."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    if cfg is None:
        cfg = timm.create_model(name, pretrained=False).pretrained_cfg
        cfg = timm.models.PretrainedCfg(**cfg) if isinstance(cfg, dict) else cfg
    if getattr(cfg, "file", None) and Path(cfg.file).is_file():
        return Path(cfg.file)
    if getattr(cfg, "hf_hub_id", None):
        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in (cfg.hf_hub_filename or "model.safetensors", "model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(hit, str):
                return Path(hit)
    if getattr(cfg, "url", None):
        hit = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if hit.is_file():
            return hit
    return None


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the weight hub answers within ``timeout`` seconds (DNS included)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    def connect() -> bool:
        with socket.create_connection((host, 443), timeout=timeout):
            return True

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(connect).result(timeout=timeout)
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)


def timm_classifier(name: str, num_outputs: int = 1, image_size: int = 224, pretrained: bool = False,
                    weights_path: str | None = None, drop_rate: float = 0.0, in_chans: int = 3,
                    timm_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A timm model with a ``num_outputs`` head.

    Weights never come from the network: ``weights_path`` names a local file, and ``pretrained=True``
    uses timm's own loading: from the local Hugging Face / torch hub cache, or a download when the
    hub is reachable. Either way timm adapts the classifier head and input channels.
    """
    if not timm.is_model(name):
        raise ConfigError(f"model.name={name!r} is not a timm model; list them with timm.list_models('{name[:4]}*')")
    file: Path | None = None
    if weights_path:
        file = Path(weights_path).expanduser()
        if not file.is_file():
            raise ConfigError(f"model.weights_path={weights_path} does not exist; give the path of a local weights file")
    elif pretrained:
        file = _cached_pretrained_file(name)
        if file is None and not _hub_reachable():
            raise ConfigError(
                f"model.pretrained=true but weights for {name!r} are not in the local cache and the hub cannot "
                f"be reached: pass model.weights_path=FILE (.safetensors/.pth) or model.pretrained=false")
    kwargs = dict(timm_kwargs or {})
    kwargs.update(num_classes=num_outputs, drop_rate=drop_rate, in_chans=in_chans)
    if file is not None:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs)
    return timm.create_model(name, pretrained=pretrained, **kwargs)
