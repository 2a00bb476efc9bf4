"""Two-stage inspection: a trained classifier gates, and only the images it calls bad are segmented.

The classifier judges each original image through its own inference path (its own preprocessing); an
image goes to the segmenter when P(bad) >= ``spec.options["gate_threshold"]``. The final decision is the
segmenter's area rule on the gated images (an image the classifier passes has an empty map, so it is
good), reported with the same metrics as any segmentation model. Nothing is trained.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from scratchlab.checkpoints import Checkpoint, ModelSpec, read_checkpoint
from scratchlab.data.io import read_image
from scratchlab.postprocess import DecisionParams, Verdict
from scratchlab.tasks.base import Raw
from scratchlab.tasks.classification import ClassificationTask
from scratchlab.tasks.segmentation import SegmentationTask


class TwoStageTask(SegmentationTask):
    """``classifier`` (a ClassificationTask) gates ``segmenter`` (a SegmentationTask); ``spec`` carries the
    segmenter's preprocessing, the decision rule and the gate threshold."""

    name = "two_stage"
    needs_training = False
    export_outputs = {}

    def __init__(self, classifier: ClassificationTask, segmenter: SegmentationTask, spec: ModelSpec,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(segmenter.net, segmenter.loss, optimizer=None, scheduler=None, spec=spec, config=config)
        self.classifier = classifier
        self.gate_threshold = float(spec.options["gate_threshold"])

    def raw_outputs(self, x: torch.Tensor, content_sizes: Sequence[tuple[int, int]],
                    images: Sequence[np.ndarray] | None = None) -> list[Raw]:
        if images is None:
            raise ValueError("two-stage inference needs the original images for its classifier")
        gate_scores = np.array([v.score for v in self.classifier.predict_images(images)], np.float32)
        gate = gate_scores >= self.gate_threshold
        out = [{"prob_map": np.zeros(s if self.pad_mode else tuple(x.shape[-2:]), np.float32), "gate_score": g}
               for s, g in zip(content_sizes, gate_scores)]
        if gate.any():
            idx = np.flatnonzero(gate)
            maps = super().raw_outputs(x[torch.from_numpy(idx).to(x.device)], [content_sizes[i] for i in idx])
            for i, raw in zip(idx, maps):
                out[i]["prob_map"] = raw["prob_map"]
        return out

    @classmethod
    def spec_from_config(cls, config: Mapping[str, Any]) -> tuple[ModelSpec, list[Checkpoint]]:
        """The spec of a two-stage run config, read from its two checkpoints (which are returned too)."""
        model = config.get("model") or {}
        classifier, segmenter = (read_checkpoint(model[k]) for k in ("classifier_ckpt", "segmenter_ckpt"))
        gate = model.get("gate_threshold")
        spec = ModelSpec(task=cls.name, class_names=segmenter.spec.class_names, preprocess=segmenter.spec.preprocess,
                         decision=DecisionParams.from_config(config.get("decision") or {}),
                         options={"gate_threshold": classifier.spec.decision.threshold if gate is None else float(gate)})
        return spec, [classifier, segmenter]

    @classmethod
    def judge(cls, raw: Mapping[str, np.ndarray], size: tuple[int, int], spec: ModelSpec) -> Verdict:
        verdict = super().judge(raw, size, spec)
        gate_score = float(raw["gate_score"])
        verdict.extra.update(gate_score=gate_score, gated=gate_score >= float(spec.options["gate_threshold"]))
        return verdict

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
