"""LightningModules, one per task; each owns its inference path (see ``scratchlab.tasks.base``).

``task_class(name)`` is the one place a task name becomes a class; everything else asks the class.
"""
from __future__ import annotations

from scratchlab.errors import ConfigError
from scratchlab.tasks.base import BaseTask
from scratchlab.tasks.classification import ClassificationTask
from scratchlab.tasks.ensemble import ClassifierEnsemble, EnsembleTask, SegmenterEnsemble
from scratchlab.tasks.instance import InstanceSegmentationTask
from scratchlab.tasks.segmentation import SegmentationTask
from scratchlab.tasks.two_stage import TwoStageTask

TASK_CLASSES: dict[str, type[BaseTask]] = {
    cls.name: cls for cls in (ClassificationTask, SegmentationTask, InstanceSegmentationTask, TwoStageTask,
                              EnsembleTask, ClassifierEnsemble, SegmenterEnsemble)}


def task_class(name: str) -> type[BaseTask]:
    """The task class called ``name`` (``model.task`` of a config, ``task`` of a checkpoint's spec)."""
    if name not in TASK_CLASSES:
        raise ConfigError(f"model.task={name!r} is not one of {', '.join(TASK_CLASSES)}")
    return TASK_CLASSES[name]
