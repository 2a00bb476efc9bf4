"""Config -> objects: the one place that knows how data, model, loss and task fit together."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scratchlab.checkpoints import Checkpoint, ModelSpec, read_checkpoint
from scratchlab.data.datamodule import ScratchDataModule
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.models import build_model
from scratchlab.postprocess import DecisionParams
from scratchlab.tasks import BaseTask, ClassificationTask, SegmentationTask, task_class
from scratchlab.tasks.instance import InstanceSegmentationTask
from scratchlab.tasks.two_stage import TwoStageTask


def preprocess_from_config(cfg: DictConfig) -> Preprocess:
    size = cfg.model.get("image_size")
    return Preprocess(image_size=None if size is None else int(size), resize=cfg.data.resize)


def model_task(cfg: DictConfig) -> str:
    """``model.task``; a model config without one is a config error, not a shape error later."""
    name = cfg.model.get("task") if cfg.get("model") is not None else None
    if not name:
        raise ConfigError("the model config has no task: add task: classification | segmentation | instance | "
                          "two_stage to it (or pick a base: defaults: [timm] / [smp])")
    task_class(str(name))
    return str(name)


def build_datamodule(cfg: DictConfig) -> ScratchDataModule:
    d = cfg.data
    augment = OmegaConf.to_container(d.augment, resolve=True) if d.get("augment") else None
    return ScratchDataModule(
        source=instantiate(d.source), preprocess=preprocess_from_config(cfg), split=d.split, augment=augment,
        batch_size=d.batch_size, num_workers=d.num_workers, pin_memory=d.pin_memory,
        mask_threshold=d.mask_threshold, check=d.check, seed=cfg.seed,
        synthetic_fraction=d.get("synthetic_fraction", 0.0), synthetic_appearance=d.get("synthetic_appearance", "ink"),
        synthetic_dir=d.get("synthetic_dir"), cache_images=d.get("cache_images", "auto"),
        cache_max_gb=d.get("cache_max_gb", 2.0))


class TrainCounts(NamedTuple):
    """What the training split holds, for "auto" loss weights: images per class, (background, scratch) pixels."""

    classes: list[int] | None = None
    pixels: tuple[int, int] | None = None


def build_task(cfg: DictConfig, class_names: list[str], class_counts: list[int] | None = None,
               pixel_counts: tuple[int, int] | None = None) -> BaseTask:
    """The LightningModule for ``cfg.model.task``; the training split's ``class_counts`` (classifiers) or
    (background, scratch) ``pixel_counts`` (segmenters) resolve "auto" loss weights."""
    task = model_task(cfg)
    decision = DecisionParams.from_config(OmegaConf.to_container(cfg.decision, resolve=True))
    spec = ModelSpec(task=task, class_names=tuple(class_names), preprocess=preprocess_from_config(cfg),
                     decision=decision)
    common = {"optimizer": instantiate(cfg.optimizer),
              "scheduler": instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
              "config": OmegaConf.to_container(cfg, resolve=True)}
    return TASK_BUILDERS[task](cfg, spec, TrainCounts(class_counts, pixel_counts), common)


def _classification(cfg: DictConfig, spec: ModelSpec, counts: TrainCounts, common: dict[str, Any]) -> BaseTask:
    loss = instantiate(cfg.loss)
    if not hasattr(loss, "num_outputs"):
        raise ConfigError(f"loss={cfg.loss._target_.rsplit('.', 1)[-1]} is a segmentation loss; "
                          f"classification models take loss=bce or loss=ce")
    if counts.classes is not None:
        loss.fit_class_counts(counts.classes)
    net = build_model(cfg.model, num_outputs=loss.num_outputs(len(spec.class_names)))
    return ClassificationTask(net=net, loss=loss, spec=spec, class_counts=counts.classes, **common)


def _binary(spec: ModelSpec, what: str) -> None:
    if len(spec.class_names) != 2:
        raise ConfigError(f"{what} needs a binary data set (good/bad with masks), got {len(spec.class_names)} classes")


def _segmentation(cfg: DictConfig, spec: ModelSpec, counts: TrainCounts, common: dict[str, Any]) -> BaseTask:
    _binary(spec, "segmentation")
    loss = instantiate(cfg.loss)
    if getattr(loss, "pos_weight_spec", None) == "auto" and counts.pixels is not None:
        loss.fit_pixel_counts(*counts.pixels)
    return SegmentationTask(net=build_model(cfg.model, num_outputs=1), loss=loss, spec=spec, **common)


def _instance(cfg: DictConfig, spec: ModelSpec, counts: TrainCounts, common: dict[str, Any]) -> BaseTask:
    _binary(spec, "Mask R-CNN")
    if spec.preprocess.resize != "pad":
        raise ConfigError("model=maskrcnn takes images at their own size: keep data.resize=pad")
    spec = ModelSpec(**{**spec.__dict__, "options": {"score_threshold": float(cfg.model.score_threshold)}})
    return InstanceSegmentationTask(net=build_model(cfg.model, num_outputs=2), loss=None, spec=spec,
                                    min_instance_area=cfg.model.min_instance_area, **common)


def _two_stage(cfg: DictConfig, spec: ModelSpec, counts: TrainCounts, common: dict[str, Any]) -> BaseTask:
    classifier, segmenter = load_task(cfg.model.classifier_ckpt), load_task(cfg.model.segmenter_ckpt)
    return assemble_two_stage(classifier, segmenter, spec.decision, cfg.model.get("gate_threshold"),
                              preprocess=spec.preprocess, config=common["config"])


def assemble_two_stage(classifier: BaseTask, segmenter: BaseTask, decision: DecisionParams | None = None,
                       gate_threshold: float | None = None, preprocess: Preprocess | None = None,
                       config: dict[str, Any] | None = None) -> TwoStageTask:
    """A classifier gating a segmenter; ``decision`` defaults to the segmenter's, ``gate_threshold`` to the
    classifier's threshold, and ``preprocess`` (the run's) must be the segmenter's."""
    if not isinstance(classifier, ClassificationTask) or type(segmenter) is not SegmentationTask:
        raise ConfigError("two-stage takes a classification checkpoint (model.classifier_ckpt) and a segmentation "
                          "one (model.segmenter_ckpt)")
    wanted = segmenter.preprocess
    if preprocess is not None and preprocess != wanted:
        raise ConfigError(f"the segmenter was trained on images prepared with image_size={wanted.image_size}, "
                          f"resize={wanted.resize}: set model.image_size={wanted.image_size} data.resize={wanted.resize}")
    spec = TwoStageTask.build_spec(classifier.spec, segmenter.spec, decision, gate_threshold)
    return TwoStageTask(classifier, segmenter, spec, config=config).eval()


TASK_BUILDERS: dict[str, Callable[..., BaseTask]] = {
    "classification": _classification,
    "segmentation": _segmentation,
    "instance": _instance,
    "two_stage": _two_stage,
}


def load_task(checkpoint: str | Path | Checkpoint) -> BaseTask:
    """The trained LightningModule of a checkpoint (a path or a read ``Checkpoint``), in eval mode on the CPU."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint)
    if ckpt.components:  # a model made of trained parts (two_stage): each part is rebuilt on its own
        parts = {name: load_task(part) for name, part in ckpt.components.items()}
        return task_class(ckpt.task).from_parts(parts, ckpt.spec, ckpt.config).eval()
    cfg = OmegaConf.create(ckpt.config)
    task = build_task(cfg, list(ckpt.spec.class_names), ckpt.class_counts)
    task.spec = ckpt.spec
    task.load_state_dict(ckpt.state_dict)
    return task.eval()
