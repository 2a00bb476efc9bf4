"""Config -> objects: the data module of a run config, and its task (each task class builds itself:
``BaseTask.build`` / ``from_checkpoint``)."""
from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scratchlab.checkpoints import Checkpoint, read_checkpoint
from scratchlab.data.datamodule import ScratchDataModule
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.tasks import BaseTask, task_class
from scratchlab.tasks.base import TrainCounts


def model_task(cfg: DictConfig) -> str:
    """``model.task``; a model config without one is a config error, not a shape error later."""
    name = cfg.model.get("task") if cfg.get("model") is not None else None
    if not name:
        raise ConfigError("the model config has no task: add task: classification | segmentation | instance | "
                          "two_stage | ensemble to it (or pick a base: defaults: [timm] / [smp])")
    task_class(str(name))
    return str(name)


def build_datamodule(cfg: DictConfig) -> ScratchDataModule:
    d = cfg.data
    augment = OmegaConf.to_container(d.augment, resolve=True) if d.get("augment") else None
    return ScratchDataModule(
        source=instantiate(d.source), preprocess=Preprocess.from_run_config(cfg), split=d.split, augment=augment,
        batch_size=d.batch_size, num_workers=d.num_workers, pin_memory=d.pin_memory,
        mask_threshold=d.mask_threshold, check=d.check, seed=cfg.seed,
        synthetic_fraction=d.get("synthetic_fraction", 0.0), synthetic_appearance=d.get("synthetic_appearance", "ink"),
        synthetic_dir=d.get("synthetic_dir"), cache_images=d.get("cache_images", "auto"),
        cache_max_gb=d.get("cache_max_gb", 2.0), **task_class(model_task(cfg)).loader_options(cfg))


def build_task(cfg: DictConfig, class_names: list[str], class_counts: list[int] | None = None,
               pixel_counts: tuple[int, int] | None = None) -> BaseTask:
    """The LightningModule for ``cfg.model.task``; the training split's ``class_counts`` (classifiers) or
    (background, scratch) ``pixel_counts`` (segmenters) resolve "auto" loss weights."""
    return task_class(model_task(cfg)).build(cfg, class_names, TrainCounts(class_counts, pixel_counts))


def load_task(checkpoint: str | Path | Checkpoint) -> BaseTask:
    """The trained LightningModule of a checkpoint (a path or a read ``Checkpoint``), in eval mode on the CPU."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint)
    return task_class(ckpt.task).from_checkpoint(ckpt)
