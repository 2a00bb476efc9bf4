"""Two-stage inspection: a trained classifier gates, and only the images it calls bad are segmented.

The classifier judges each original image through its own preprocessing; an image is segmented when its
P(bad) >= ``spec.options["gate_threshold"]``. The final decision is the segmenter's area rule on the gated
images (an image the classifier passes gets an empty map, so it is good), reported with the same metrics as
any segmentation model. Nothing is trained: the run saves one checkpoint holding both networks, which
``predict``, ``evaluate`` and ``export`` take like any other (the exported graph has one input per network;
``judge`` applies the gate, so every path gates alike).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from scratchlab.checkpoints import KEY, Checkpoint, ModelSpec, read_checkpoint
from scratchlab.data.io import read_image
from scratchlab.data.transforms import Preprocess
from scratchlab.postprocess import DecisionParams, Verdict
from scratchlab.errors import ConfigError
from scratchlab.tasks.base import BaseTask, Raw, TrainCounts, component_block
from scratchlab.tasks.classification import ClassificationTask
from scratchlab.tasks.segmentation import SegmentationTask
from scratchlab.tta import spec_flips, tta_options

CLASSIFIER = "classifier"
"""Prefix of the classifier's parts: its raw outputs (``classifier_probs``), its exported input
(``classifier_image``) and its weights in the state dict (``classifier.``)."""


def classifier_spec(spec: ModelSpec) -> ModelSpec:
    """The gating classifier's own spec, stored in the two-stage spec's options."""
    return ModelSpec.from_dict(spec.options[CLASSIFIER])


class _GateAndSegment(nn.Module):
    """The exported graph: (segmenter input, classifier input) -> (scratch-probability map, class probs)."""

    def __init__(self, segmenter: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.segmenter, self.classifier = segmenter, classifier

    def forward(self, image: torch.Tensor, classifier_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.segmenter(image), self.classifier(classifier_image)


def _part(path: Any, want: type[BaseTask]) -> BaseTask:
    """The trained task of checkpoint ``path``, which must be a ``want.name`` model."""
    key = "model.classifier_ckpt" if want is ClassificationTask else "model.segmenter_ckpt"
    if not path:
        raise ConfigError(f"model=two_stage needs {key}=PATH (a {want.name} checkpoint)")
    ckpt = read_checkpoint(path)
    if ckpt.task != want.name:
        raise ConfigError(f"{key}={path} is a {ckpt.task} checkpoint; two-stage takes a {want.name} one there")
    return want.from_checkpoint(ckpt)


class TwoStageTask(SegmentationTask):
    """``classifier`` (a ClassificationTask) gates ``segmenter`` (a SegmentationTask); ``spec`` carries the
    segmenter's preprocessing, the decision rule, the gate threshold and the classifier's spec."""

    name = "two_stage"
    needs_training = False
    pixel_weighted_loss = False
    takes_tta = False  # each network keeps the flips it was trained with
    export_outputs = {**SegmentationTask.export_outputs,
                      **{f"{CLASSIFIER}_{k}": v for k, v in ClassificationTask.export_outputs.items()}}

    def __init__(self, classifier: ClassificationTask, segmenter: SegmentationTask, spec: ModelSpec,
                 config: dict[str, Any] | None = None) -> None:
        with warnings.catch_warnings():  # the parent's hyperparameters see the parts; replaced just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            super().__init__(segmenter.net, segmenter.loss, optimizer=None, scheduler=None, spec=spec, config=config)
        self.save_hyperparameters(ignore=["classifier", "segmenter", "spec"], logger=False)  # plain data only
        self.classifier = classifier
        self.segmenter_parts = {"spec": segmenter.spec.to_dict(), "config": segmenter.hparams.get("config"),
                                "class_counts": segmenter.hparams.get("class_counts")}
        self.gate_threshold = float(spec.options["gate_threshold"])

    @classmethod
    def assemble(cls, classifier: BaseTask, segmenter: BaseTask, decision: DecisionParams | None = None,
                 gate_threshold: float | None = None, preprocess: Preprocess | None = None,
                 config: dict[str, Any] | None = None) -> TwoStageTask:
        """``classifier`` gating ``segmenter``; ``decision`` defaults to the segmenter's, ``gate_threshold`` to
        the classifier's threshold, and ``preprocess`` (the run's) must be the segmenter's."""
        if type(classifier) is not ClassificationTask or type(segmenter) is not SegmentationTask:
            raise ConfigError("two-stage takes a classification checkpoint (model.classifier_ckpt) and a "
                              "segmentation one (model.segmenter_ckpt)")
        wanted = segmenter.preprocess
        if preprocess is not None and preprocess != wanted:
            raise ConfigError(f"the segmenter was trained on images prepared with image_size={wanted.image_size}, "
                              f"resize={wanted.resize}: set model.image_size={wanted.image_size} "
                              f"data.resize={wanted.resize}")
        spec = cls.build_spec(classifier.spec, segmenter.spec, decision, gate_threshold)
        return cls(classifier, segmenter, spec, config=config).eval()

    @classmethod
    def from_config(cls, cfg: DictConfig, spec: ModelSpec, counts: TrainCounts, common: dict[str, Any]) -> TwoStageTask:
        """The two checkpoints of ``model.classifier_ckpt`` and ``model.segmenter_ckpt``, as trained."""
        parts = [_part(cfg.model.get(key), want) for key, want in (("classifier_ckpt", ClassificationTask),
                                                                   ("segmenter_ckpt", SegmentationTask))]
        return cls.assemble(*parts, spec.decision, cfg.model.get("gate_threshold"), preprocess=spec.preprocess,
                            config=common["config"])

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> TwoStageTask:
        """Both networks from the two-stage checkpoint itself (its ``components``), not from other files."""
        parts = ckpt.components
        if set(parts) != {"classifier", "segmenter"}:
            raise ConfigError(f"checkpoint {ckpt.path} is a two-stage model without both of its networks; "
                              "run python -m scratchlab.train model=two_stage again")
        task = cls(ClassificationTask.from_checkpoint(parts["classifier"]),
                   SegmentationTask.from_checkpoint(parts["segmenter"]), ckpt.spec, config=ckpt.config)
        return task.eval()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The block also describes both networks, so the checkpoint alone rebuilds the model."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[KEY]["components"] = {
            "classifier": component_block(self.classifier, f"{CLASSIFIER}."),
            "segmenter": {**self.segmenter_parts, "prefix": ""}}

    # -- the one inference path ------------------------------------------------------------------------------

    def raw_outputs(self, x: torch.Tensor, content_sizes: Sequence[tuple[int, int]],
                    images: Sequence[np.ndarray] | None = None) -> list[Raw]:
        if images is None:
            raise ValueError("two-stage inference needs the original images for its classifier")
        out = [{"prob_map": np.zeros(s if self.pad_mode else tuple(x.shape[-2:]), np.float32),
                **{f"{CLASSIFIER}_{k}": v for k, v in gate.items()}}
               for s, gate in zip(content_sizes, self.classifier.predict_raw(images))]
        idx = np.flatnonzero([self.gate_score(r, self.spec) >= self.gate_threshold for r in out])
        if len(idx):  # only gated images are segmented; ``judge`` ignores the map of the others anyway
            maps = super().raw_outputs(x[torch.from_numpy(idx).to(x.device)], [content_sizes[i] for i in idx])
            for i, raw in zip(idx, maps):
                out[i]["prob_map"] = raw["prob_map"]
        return out

    @classmethod
    def gate_score(cls, raw: Mapping[str, np.ndarray], spec: ModelSpec) -> float:
        """The classifier's P(bad) for one image's raw output."""
        prefix = f"{CLASSIFIER}_"
        own = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
        return ClassificationTask.judge(own, (1, 1), classifier_spec(spec)).score

    @classmethod
    def judge(cls, raw: Mapping[str, np.ndarray], size: tuple[int, int], spec: ModelSpec) -> Verdict:
        gate_score = cls.gate_score(raw, spec)
        gated = gate_score >= float(spec.options["gate_threshold"])
        verdict = super().judge(raw if gated else {"prob_map": np.zeros_like(raw["prob_map"])}, size, spec)
        verdict.extra.update(gate_score=gate_score, gated=gated)
        return verdict

    # -- export ----------------------------------------------------------------------------------------------

    def export_module(self) -> nn.Module:
        return _GateAndSegment(super().export_module(), self.classifier.export_module())

    @classmethod
    def export_inputs(cls, spec: ModelSpec) -> dict[str, tuple[Preprocess, list[Any]]]:
        pre = classifier_spec(spec).preprocess
        return {**super().export_inputs(spec), f"{CLASSIFIER}_image": (pre, ClassificationTask.export_geometry(pre))}

    # -- building and evaluation -----------------------------------------------------------------------------

    @classmethod
    def build_spec(cls, classifier: ModelSpec, segmenter: ModelSpec, decision: DecisionParams | None,
                   gate_threshold: float | None) -> ModelSpec:
        """The spec of ``classifier`` gating ``segmenter``: the segmenter's preprocessing and (by default)
        rule and flips; the gate threshold defaults to the classifier's threshold."""
        gate = classifier.decision.threshold if gate_threshold is None else float(gate_threshold)
        return ModelSpec(task=cls.name, class_names=segmenter.class_names, preprocess=segmenter.preprocess,
                         decision=decision or segmenter.decision,
                         options={"gate_threshold": gate, CLASSIFIER: classifier.to_dict(),
                                  **tta_options(spec_flips(segmenter.options))})

    @classmethod
    def spec_from_config(cls, config: Mapping[str, Any]) -> tuple[ModelSpec, list[Checkpoint]]:
        """The spec of a two-stage run config, read from its two checkpoints (which are returned too)."""
        model = config.get("model") or {}
        classifier, segmenter = (read_checkpoint(model[k]) for k in ("classifier_ckpt", "segmenter_ckpt"))
        spec = cls.build_spec(classifier.spec, segmenter.spec, DecisionParams.from_config(config.get("decision") or {}),
                              model.get("gate_threshold"))
        return spec, [classifier, segmenter]

    def batch_images(self, batch: Mapping[str, Any]) -> list[np.ndarray]:
        """The classifier judges the original files with its own preprocessing."""
        return [read_image(p) for p in batch["path"]]

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Nothing is trained: no loss; the maps come from ``batch_verdicts``."""
        zeros = torch.zeros(batch["mask"].shape, device=batch["image"].device)
        return torch.zeros((), device=zeros.device), zeros

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor, list[Verdict]]:
        loss, probs, verdicts = super()._step(batch, stage)
        gated = torch.tensor([float(v.extra["gated"]) for v in verdicts])
        self.log(f"{stage}/gate_rate", gated.mean(), on_step=False, on_epoch=True, batch_size=len(gated))
        return loss, probs, verdicts
