"""Config -> objects: the one place that knows how data, model, loss and task fit together."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scratchlab.data.datamodule import ScratchDataModule
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.models import build_model
from scratchlab.tasks.classification import ClassificationTask


def preprocess_from_config(cfg: DictConfig) -> Preprocess:
    return Preprocess(image_size=int(cfg.model.image_size), resize=cfg.data.get("resize", "stretch"))


def build_datamodule(cfg: DictConfig) -> ScratchDataModule:
    d = cfg.data
    augment = OmegaConf.to_container(d.augment, resolve=True) if d.get("augment") else None
    return ScratchDataModule(
        source=instantiate(d.source), preprocess=preprocess_from_config(cfg), split=d.split, augment=augment,
        batch_size=d.batch_size, num_workers=d.num_workers, pin_memory=d.pin_memory,
        mask_threshold=d.mask_threshold, check=d.check, seed=cfg.seed)


def build_task(cfg: DictConfig, class_names: list[str], class_counts: list[int] | None = None) -> pl.LightningModule:
    """The LightningModule for ``cfg.model.task``; ``class_counts`` (training split) resolves "auto" weights."""
    task = cfg.model.get("task", "classification")
    if task != "classification":
        raise ConfigError(f"model.task={task!r} is not supported; use a classification model")
    loss = instantiate(cfg.loss)
    if class_counts is not None:
        loss.fit_class_counts(class_counts)
    net = build_model(cfg.model, num_outputs=loss.num_outputs(len(class_names)))
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    return ClassificationTask(net=net, loss=loss, optimizer=instantiate(cfg.optimizer), scheduler=scheduler,
                              class_names=class_names, threshold=cfg.decision.threshold, config=config)
