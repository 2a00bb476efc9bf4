"""Checkpoint ensembles: several trained models of one task, judged as one.

``model=ensemble model.members=[A.ckpt,B.ckpt,...]`` reads the members (same task, class names and
preprocessing) and builds the task's ensemble: classifiers average their class probabilities, segmenters their
scratch-probability maps, each member with its own flips (``model.tta``). Nothing is trained: the run saves one
checkpoint holding every network (``components``, one per member), which ``predict``, ``evaluate`` and ``export``
take like any other; the exported graph holds all members and returns the averaged output.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from scratchlab.checkpoints import KEY, Checkpoint, ModelSpec, read_checkpoint
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.tasks.base import BaseTask, TrainCounts, component_block
from scratchlab.tasks.classification import ClassificationTask
from scratchlab.tasks.segmentation import SegmentationTask

PREFIX = "members"
"""The members' weights in the state dict: ``members.0.``, ``members.1.``, ..."""


class MeanProbabilities(nn.Module):
    """The mean of several networks' probabilities (class probabilities or maps) for one input."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets]).mean(dim=0)


class _Ensemble(BaseTask):
    """What both ensembles share: the members as submodules, their averaged ``inference_network``s, and a
    checkpoint that describes each member (``components``)."""

    member_class: ClassVar[type[BaseTask]] = BaseTask
    needs_training = False
    pixel_weighted_loss = False
    takes_tta = False  # each member keeps the flips it was trained with

    def __init__(self, members: Sequence[BaseTask], spec: ModelSpec, config: dict[str, Any] | None = None) -> None:
        with warnings.catch_warnings():  # the parent's hyperparameters see the members; replaced just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            super().__init__(None, None, optimizer=None, scheduler=None, spec=spec, config=config)
        self.save_hyperparameters(ignore=["members", "spec"], logger=False)  # plain data only
        self.members = nn.ModuleList(members)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> BaseTask:
        """Every member from the ensemble's checkpoint itself (its ``components``), not from other files."""
        if not ckpt.components:
            raise ConfigError(f"checkpoint {ckpt.path} is an ensemble without its members; "
                              "run python -m scratchlab.train model=ensemble again")
        members = [cls.member_class.from_checkpoint(part) for part in ckpt.components.values()]
        return cls(members, ckpt.spec, config=ckpt.config).eval()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The block also describes every member, so the checkpoint alone rebuilds the ensemble."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[KEY]["components"] = {f"member{i}": component_block(m, f"{PREFIX}.{i}.")
                                         for i, m in enumerate(self.members)}

    def export_network(self) -> nn.Module:
        return MeanProbabilities([m.inference_network() for m in self.members])


class ClassifierEnsemble(_Ensemble, ClassificationTask):
    """Classifiers averaging their class probabilities; its loss is the averaged probabilities' NLL."""

    name = "classification_ensemble"
    member_class = ClassificationTask

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.inference_network()(batch["image"]).float()
        return F.nll_loss(probs.clamp_min(1e-7).log(), batch["label"]), probs


class SegmenterEnsemble(_Ensemble, SegmentationTask):
    """Segmenters averaging their scratch-probability maps; its loss is the averaged map's binary cross-entropy."""

    name = "segmentation_ensemble"
    member_class = SegmentationTask

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.inference_network()(batch["image"]).float()
        return F.binary_cross_entropy(probs, batch["mask"].float()), probs


ENSEMBLES: dict[str, type[_Ensemble]] = {e.member_class.name: e for e in (ClassifierEnsemble, SegmenterEnsemble)}


def _differences(a: Preprocess, b: Preprocess) -> str:
    return ", ".join(f"{f.name}={getattr(a, f.name)} vs {getattr(b, f.name)}" for f in fields(Preprocess)
                     if getattr(a, f.name) != getattr(b, f.name))


def _members(paths: Any) -> list[Checkpoint]:
    """The members' checkpoints, which must share task, class names and preprocessing."""
    if not paths or isinstance(paths, str) or len(paths) < 2:
        raise ConfigError("model=ensemble needs two or more checkpoints: model.members=[A.ckpt,B.ckpt]")
    ckpts = [read_checkpoint(p) for p in paths]
    first = ckpts[0]
    if first.task not in ENSEMBLES:
        raise ConfigError(f"model.members[0]={first.path} is a {first.task} model; an ensemble takes "
                          f"{' or '.join(ENSEMBLES)} checkpoints")
    for i, c in enumerate(ckpts[1:], 1):
        if c.task != first.task or c.spec.class_names != first.spec.class_names:
            raise ConfigError(f"model.members[{i}]={c.path} is a {c.task} model of classes "
                              f"{list(c.spec.class_names)}, members[0] a {first.task} one of "
                              f"{list(first.spec.class_names)}; give members of one task")
        if c.spec.preprocess != first.spec.preprocess:
            raise ConfigError(f"model.members[{i}]={c.path} prepares images otherwise than members[0] "
                              f"({_differences(c.spec.preprocess, first.spec.preprocess)}); give members trained alike")
    return ckpts


class EnsembleTask(BaseTask):
    """``model=ensemble``: builds the ensemble of its members' task (``ENSEMBLES``)."""

    name = "ensemble"
    needs_training = False
    takes_tta = False

    @classmethod
    def from_config(cls, cfg: DictConfig, spec: ModelSpec, counts: TrainCounts, common: dict[str, Any]) -> BaseTask:
        ckpts = _members(cfg.model.get("members"))
        wanted = ckpts[0].spec.preprocess
        if spec.preprocess != wanted:
            raise ConfigError(f"the members were trained on images prepared with image_size={wanted.image_size}, "
                              f"resize={wanted.resize}: set model.image_size={wanted.image_size} "
                              f"data.resize={wanted.resize}")
        kind = ENSEMBLES[ckpts[0].task]
        members = [kind.member_class.from_checkpoint(c) for c in ckpts]
        return kind(members, replace(spec, task=kind.name, class_names=ckpts[0].spec.class_names),
                    config=common["config"]).eval()
