"""Config -> objects: the one place that knows how data, model, loss and task fit together."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scratchlab.data.datamodule import ScratchDataModule
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.models import build_model
from scratchlab.tasks.classification import ClassificationTask
from scratchlab.tasks.instance import InstanceSegmentationTask
from scratchlab.tasks.segmentation import SegmentationTask


def preprocess_from_config(cfg: DictConfig) -> Preprocess:
    size = cfg.model.get("image_size")
    return Preprocess(image_size=None if size is None else int(size), resize=cfg.data.resize)


def build_datamodule(cfg: DictConfig) -> ScratchDataModule:
    d = cfg.data
    augment = OmegaConf.to_container(d.augment, resolve=True) if d.get("augment") else None
    return ScratchDataModule(
        source=instantiate(d.source), preprocess=preprocess_from_config(cfg), split=d.split, augment=augment,
        batch_size=d.batch_size, num_workers=d.num_workers, pin_memory=d.pin_memory,
        mask_threshold=d.mask_threshold, check=d.check, seed=cfg.seed,
        synthetic_fraction=d.get("synthetic_fraction", 0.0), synthetic_appearance=d.get("synthetic_appearance", "ink"),
        synthetic_dir=d.get("synthetic_dir"))


def build_task(cfg: DictConfig, class_names: list[str], class_counts: list[int] | None = None,
               pixel_counts: tuple[int, int] | None = None) -> pl.LightningModule:
    """The LightningModule for ``cfg.model.task``; the training split's ``class_counts`` (classifiers) or
    (background, scratch) ``pixel_counts`` (segmenters) resolve "auto" loss weights."""
    task = cfg.model.get("task", "classification")
    if task not in TASK_BUILDERS:
        raise ConfigError(f"model.task={task!r} is not one of {', '.join(TASK_BUILDERS)}")
    loss = instantiate(cfg.loss)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    common = {"loss": loss, "optimizer": instantiate(cfg.optimizer), "scheduler": scheduler,
              "config": OmegaConf.to_container(cfg, resolve=True)}
    return TASK_BUILDERS[task](cfg, class_names, TrainCounts(class_counts, pixel_counts), common)


class TrainCounts(NamedTuple):
    """What the training split holds, for "auto" loss weights: images per class, (background, scratch) pixels."""

    classes: list[int] | None = None
    pixels: tuple[int, int] | None = None


def _classification(cfg: DictConfig, class_names: list[str], counts: TrainCounts,
                    common: dict[str, Any]) -> pl.LightningModule:
    loss = common["loss"]
    if not hasattr(loss, "num_outputs"):
        raise ConfigError(f"loss={cfg.loss._target_.rsplit('.', 1)[-1]} is a segmentation loss; "
                          f"classification models take loss=bce or loss=ce")
    if counts.classes is not None:
        loss.fit_class_counts(counts.classes)
    net = build_model(cfg.model, num_outputs=loss.num_outputs(len(class_names)))
    return ClassificationTask(net=net, class_names=class_names, threshold=cfg.decision.threshold,
                              class_counts=counts.classes, **common)


def _segmentation(cfg: DictConfig, class_names: list[str], counts: TrainCounts,
                  common: dict[str, Any]) -> pl.LightningModule:
    if len(class_names) != 2:
        raise ConfigError(f"segmentation needs a binary data set (good/bad with masks), got {len(class_names)} classes")
    loss = common["loss"]
    if getattr(loss, "pos_weight_spec", None) == "auto" and counts.pixels is not None:
        loss.fit_pixel_counts(*counts.pixels)
    net = build_model(cfg.model, num_outputs=1)
    decision = OmegaConf.to_container(cfg.decision, resolve=True)
    return SegmentationTask(net=net, decision=decision, pad_mode=preprocess_from_config(cfg).resize == "pad",
                            class_names=class_names, **common)


def _instance(cfg: DictConfig, class_names: list[str], counts: TrainCounts,
              common: dict[str, Any]) -> pl.LightningModule:
    if len(class_names) != 2:
        raise ConfigError(f"Mask R-CNN needs a binary data set (good/bad with masks), got {len(class_names)} classes")
    if preprocess_from_config(cfg).resize != "pad":
        raise ConfigError("model=maskrcnn takes images at their own size: keep data.resize=pad")
    net = build_model(cfg.model, num_outputs=2)
    decision = OmegaConf.to_container(cfg.decision, resolve=True)
    return InstanceSegmentationTask(net=net, decision=decision, score_threshold=cfg.model.score_threshold,
                                    min_instance_area=cfg.model.min_instance_area, class_names=class_names,
                                    **{**common, "loss": None})


def _two_stage(cfg: DictConfig, class_names: list[str], counts: TrainCounts,
               common: dict[str, Any]) -> pl.LightningModule:
    from scratchlab.checkpoints import load_task
    from scratchlab.tasks.two_stage import TwoStageTask

    classifier, segmenter = load_task(cfg.model.classifier_ckpt), load_task(cfg.model.segmenter_ckpt)
    if not isinstance(classifier, ClassificationTask) or not isinstance(segmenter, SegmentationTask):
        raise ConfigError("model.classifier_ckpt must be a classification checkpoint and model.segmenter_ckpt "
                          "a segmentation one")
    wanted = preprocess_from_config(OmegaConf.create(segmenter.hparams.config))
    if preprocess_from_config(cfg) != wanted:
        raise ConfigError(f"the segmenter was trained on images prepared with image_size={wanted.image_size}, "
                          f"resize={wanted.resize}: set model.image_size={wanted.image_size} data.resize={wanted.resize}")
    return TwoStageTask(classifier, segmenter, decision=OmegaConf.to_container(cfg.decision, resolve=True),
                        gate_threshold=cfg.model.get("gate_threshold"), config=common["config"])


TASK_BUILDERS: dict[str, Callable[..., pl.LightningModule]] = {
    "classification": _classification,
    "segmentation": _segmentation,
    "instance": _instance,
    "two_stage": _two_stage,
}
