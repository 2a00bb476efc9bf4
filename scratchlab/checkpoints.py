"""Checkpoints carry their run's resolved config, so any task can be rebuilt from the file alone."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from scratchlab.errors import ConfigError


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; pass the path of a scratchlab .ckpt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"checkpoint {path} cannot be read ({err.__class__.__name__}); is it a .ckpt file?") from err
    if "config" not in ckpt.get("hyper_parameters", {}):
        raise ConfigError(f"checkpoint {path} was not written by scratchlab.train (no config inside)")
    return ckpt


def load_task(path: str | Path) -> pl.LightningModule:
    """The trained LightningModule of a checkpoint, in eval mode on the CPU."""
    from scratchlab.builders import build_task

    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    cfg: DictConfig = OmegaConf.create(hp["config"])
    task = build_task(cfg, hp.get("class_names") or ["good", "bad"], hp.get("class_counts"))
    task.load_state_dict(ckpt["state_dict"])
    return task.eval()
