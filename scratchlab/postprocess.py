"""One decision rule for every stage: model output -> scratch components -> good/bad.

Training, evaluation, prediction and exported models all call this module, so an image is judged
the same way everywhere. Areas are counted in pixels of the image the map is given at; the tasks
always hand over maps at the ORIGINAL image size, so ``min_area`` means original-image pixels. Segmentation probabilities are thresholded into a mask, specks are removed,
the remaining 8-connected components become boxes, and the image is bad when the scratch area
(summed, or of the largest component) reaches a pixel count or a share of the image area.
Only numpy and OpenCV are needed at run time; the torch helpers use tensor methods alone.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from scratchlab.data.types import Box
from scratchlab.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

AREA_MODES = ("sum", "max")

# Corners of a pixel square relative to its top-left corner, to measure pixels as 1x1 squares.
_PIXEL_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class DecisionParams:
    """Thresholds of the good/bad rule (see ``conf/decision/default.yaml``).

    ``threshold`` is the classifier's cut on P(bad); ``mask_threshold`` turns pixel probabilities
    into a mask (``prob >= mask_threshold``); components under ``min_component_area`` pixels are
    dropped; the image is bad when the scratch area (``area_mode``: ``"sum"`` of kept components or
    ``"max"``, the largest one) reaches ``min_area`` pixels, or ``min_area_ratio`` of the image
    area when that is set. An image without scratch pixels is never bad. ``score_top_k`` sets the image score
    of a probability map (its ranking, not the rule): the mean of its ``score_top_k`` most probable pixels at the
    original size, 1 being the maximum.
    """

    threshold: float = 0.5
    mask_threshold: float = 0.5
    min_component_area: int = 0
    min_area: float = 1
    min_area_ratio: float | None = None
    area_mode: str = "sum"
    score_top_k: int = 1

    def __post_init__(self) -> None:
        for name in ("threshold", "mask_threshold"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ConfigError(f"decision.{name}={value!r} is not a probability; set it between 0 and 1")
        if not _is_number(self.min_component_area) or self.min_component_area < 0 \
                or int(self.min_component_area) != self.min_component_area:
            raise ConfigError(f"decision.min_component_area={self.min_component_area!r} is not a pixel count; "
                              "set it to a whole number >= 0")
        self.min_component_area = int(self.min_component_area)
        if not _is_number(self.min_area) or not self.min_area >= 0:
            raise ConfigError(f"decision.min_area={self.min_area!r} is not an area; set it to a number of pixels >= 0")
        if self.min_area_ratio is not None and (not _is_number(self.min_area_ratio)
                                                or not 0 <= self.min_area_ratio <= 1):
            raise ConfigError(f"decision.min_area_ratio={self.min_area_ratio!r} is not a share of the image; "
                              "set it between 0 and 1, or null to use min_area")
        if self.area_mode not in AREA_MODES:
            raise ConfigError(f"decision.area_mode={self.area_mode!r} is unknown; use one of {', '.join(AREA_MODES)}")
        if not _is_number(self.score_top_k) or self.score_top_k < 1 or int(self.score_top_k) != self.score_top_k:
            raise ConfigError(f"decision.score_top_k={self.score_top_k!r} is not a pixel count; set it to a whole "
                              "number >= 1 (1: the maximum probability)")
        self.score_top_k = int(self.score_top_k)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DecisionParams:
        """Build from a dict or DictConfig; keys that are not fields (e.g. ``target_recall``) are ignored."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"decision config must be a mapping of DecisionParams fields, got {type(cfg).__name__}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})

    def area_threshold(self, height: int, width: int) -> float:
        """The scratch area in pixels at which an image of this size becomes bad."""
        if self.min_area_ratio is not None:
            return self.min_area_ratio * height * width
        return float(self.min_area)


@dataclass
class Component:
    """One 8-connected scratch region.

    ``length`` is the long side of ``cv2.minAreaRect`` around the component's pixels taken as 1x1
    squares, so a horizontal line of 20 pixels has length 20 and a 45-degree line of 10 pixels
    about 14.1. ``score`` is the mean probability inside (1.0 for binary input); ``contour`` is the
    outer border as ``(x, y)`` pixel points (``cv2.CHAIN_APPROX_SIMPLE``).
    """

    box: Box
    area: int
    length: float
    area_ratio: float
    score: float
    contour: list[tuple[int, int]]

    def to_json(self) -> dict[str, Any]:
        """Plain-type dict for JSON output."""
        b = self.box
        return {"box": [b.x1, b.y1, b.x2, b.y2], "area": self.area, "length": self.length,
                "area_ratio": self.area_ratio, "score": self.score, "contour": [list(p) for p in self.contour]}


@dataclass
class MaskDecision:
    """The outcome of the rule for one image.

    ``mask`` is the (H, W) uint8 {0, 1} mask after speck removal; ``scratch_area`` is the sum or the
    max of component areas per ``params.area_mode``; ``area_threshold`` the pixel area it was compared to.
    The decision needs only the components' areas; their outlines (``components``) and ``mask`` are
    worked out when first asked for, so judging a validation epoch draws no contours.
    """

    scratch_area: int
    scratch_area_ratio: float
    is_bad: bool
    area_threshold: float
    params: DecisionParams
    labels: np.ndarray = field(repr=False)
    """Connected-component labels of the thresholded map (OpenCV), ``stats`` their boxes and areas, ``kept``
    the ids that are not specks, ``prob`` the map the scores come from (None for binary input)."""
    stats: np.ndarray = field(repr=False)
    kept: list[int] = field(repr=False)
    prob: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def mask(self) -> np.ndarray:
        return np.isin(self.labels, self.kept).astype(np.uint8)

    @cached_property
    def components(self) -> list[Component]:
        return _components(self.labels, self.stats, self.kept, self.prob)

    def to_json(self) -> dict[str, Any]:
        """Plain-type dict: decision, areas, thresholds used and every component's box, area and length."""
        return {"is_bad": self.is_bad, "scratch_area": self.scratch_area,
                "scratch_area_ratio": self.scratch_area_ratio, "area_threshold": self.area_threshold,
                "image_size": [int(self.mask.shape[0]), int(self.mask.shape[1])],
                "params": asdict(self.params), "components": [c.to_json() for c in self.components]}


def given_overrides(block: Mapping[str, Any] | None) -> dict[str, Any]:
    """The decision values a command was given: the non-null ``DecisionParams`` fields of its ``decision``
    block (``conf/decision/keep.yaml`` is all null), other keys (``target_recall``) left out."""
    names = {f.name for f in fields(DecisionParams)}
    return {k: v for k, v in (block or {}).items() if k in names and v is not None}


def resolve_decision(run_decision: Mapping[str, Any] | None, operating_point: Mapping[str, Any] | None = None,
                     overrides: Mapping[str, Any] | None = None) -> DecisionParams:
    """The one precedence of every command: the run config's rule < the operating point stored with the
    model < explicit overrides (``None`` values keep what is below). Unknown override keys are errors."""
    names = {f.name for f in fields(DecisionParams)}
    unknown = sorted(set(overrides or {}) - names)
    if unknown:
        raise ConfigError(f"decision.{unknown[0]} is not a decision setting; use one of {', '.join(sorted(names))}")
    merged = {k: v for k, v in (run_decision or {}).items() if k in names}
    merged.update({k: v for k, v in (operating_point or {}).items() if k in names})
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return DecisionParams.from_config(merged)


@dataclass
class Verdict:
    """The judgement of one image by any model.

    ``score`` is P(bad) for good/bad classifiers (``score_name="p_bad"``), the top class probability for
    N-class ones (``"p_label"``) and the maximum scratch probability at the original size for models
    that give a probability map (``"max_probability"``; with ``score_top_k=k`` > 1 the mean of the k most
    probable pixels, ``"top{k}_mean_probability"``); ``probability`` is that (H, W) map and
    ``details`` the components and areas (original-image pixels) the decision was taken on.
    """

    is_bad: bool
    score: float
    score_name: str
    probability: np.ndarray | None = field(default=None, repr=False)
    details: MaskDecision | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scratch_area(self) -> int:
        return self.details.scratch_area if self.details is not None else 0


def verdict_from_class_probs(probs: np.ndarray, params: DecisionParams, class_names: list[str]) -> Verdict:
    """Classifier rule on one image's class probabilities: binary models P(bad) >= ``threshold``; N classes
    the most probable one, bad unless it is called "good"."""
    probs = np.asarray(probs, np.float64).reshape(-1)
    names = class_names if len(class_names) == len(probs) else [str(i) for i in range(len(probs))]
    extra: dict[str, Any] = {"class_probs": {n: float(p) for n, p in zip(names, probs)}}
    if len(probs) == 2:
        return Verdict(bool(decide_from_score(float(probs[1]), params)), float(probs[1]), "p_bad", extra=extra)
    top = int(probs.argmax())
    extra["label"] = names[top]
    return Verdict(names[top].lower() != "good", float(probs[top]), "p_label", extra=extra)


def verdict_from_probability(prob: np.ndarray, params: DecisionParams, extra: dict[str, Any] | None = None) -> Verdict:
    """Area rule on one (H, W) scratch-probability map at the original image size."""
    decision = decide_from_probability(prob, params)
    prob = np.asarray(prob, np.float32)
    return Verdict(decision.is_bad, *map_score(prob, params.score_top_k), probability=prob, details=decision,
                   extra=dict(extra or {}))


def map_score(prob: np.ndarray, top_k: int = 1) -> tuple[float, str]:
    """The image score of a probability map and its name: the mean of its ``top_k`` most probable pixels (all of
    them in a smaller map); 1 is the maximum."""
    if top_k == 1:
        return float(prob.max()), "max_probability"
    flat = prob.reshape(-1)
    top = flat if top_k >= flat.size else np.partition(flat, flat.size - top_k)[flat.size - top_k:]
    return float(top.mean(dtype=np.float64)), f"top{top_k}_mean_probability"


def _check_image_array(array: np.ndarray, what: str) -> None:
    if array.ndim != 2 or array.size == 0:
        raise DataError(f"{what} must be a non-empty (H, W) array, got shape {tuple(array.shape)}")


def _check_probability_range(low: float, high: float, what: str) -> None:
    if not (low >= 0 and high <= 1):
        raise DataError(f"{what} holds values in [{low:.3g}, {high:.3g}], not probabilities; "
                        "apply a sigmoid to the logits first")


def _label(binary: np.ndarray, min_component_area: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Connected-component labels, stats and the ids of components that are not specks."""
    _check_image_array(binary, "mask")
    _, labels, stats, _ = cv2.connectedComponentsWithStats((binary != 0).astype(np.uint8), connectivity=8)
    kept = [i for i in range(1, len(stats)) if stats[i, cv2.CC_STAT_AREA] >= min_component_area]
    return labels, stats, kept


def _components(labels: np.ndarray, stats: np.ndarray, kept: list[int], prob: np.ndarray | None) -> list[Component]:
    height, width = labels.shape
    out = []
    for i in kept:
        x, y, w, h, area = (int(v) for v in stats[i])
        inside = labels[y:y + h, x:x + w] == i
        contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x, y))
        points = max(contours, key=len).reshape(-1, 2)
        squares = (points[:, None, :].astype(np.float32) + _PIXEL_CORNERS).reshape(-1, 2)
        length = float(max(cv2.minAreaRect(squares)[1]))
        score = 1.0 if prob is None else float(prob[y:y + h, x:x + w][inside].mean())
        out.append(Component(box=Box(x, y, x + w, y + h), area=area, length=length,
                             area_ratio=area / (height * width), score=score,
                             contour=[(int(px), int(py)) for px, py in points]))
    return out


def components_from_mask(binary: np.ndarray, prob: np.ndarray | None = None,
                         min_component_area: int = 0) -> list[Component]:
    """8-connected components of a (H, W) mask (non-zero = scratch), specks under ``min_component_area`` dropped.

    ``prob`` (same shape) gives each component's mean probability as its score.
    """
    binary = np.asarray(binary)
    labels, stats, kept = _label(binary, min_component_area)
    if prob is not None and np.shape(prob) != binary.shape:
        raise DataError(f"probability map shape {np.shape(prob)} does not match mask shape {binary.shape}")
    return _components(labels, stats, kept, prob)


def decide_from_area(scratch_area: Any, params: DecisionParams, height: int, width: int) -> Any:
    """The area rule: bad iff ``0 < scratch_area >= params.area_threshold(height, width)``.

    Works on a number, a numpy array or a torch tensor of areas (e.g. from ``image_scores_from_masks``).
    """
    return (scratch_area > 0) & (scratch_area >= params.area_threshold(height, width))


def _decide(binary: np.ndarray, prob: np.ndarray | None, params: DecisionParams) -> MaskDecision:
    labels, stats, kept = _label(binary, params.min_component_area)
    areas = [int(stats[i, cv2.CC_STAT_AREA]) for i in kept]
    scratch_area = (sum(areas) if params.area_mode == "sum" else max(areas)) if areas else 0
    height, width = binary.shape
    return MaskDecision(scratch_area=scratch_area, scratch_area_ratio=scratch_area / (height * width),
                        is_bad=bool(decide_from_area(scratch_area, params, height, width)),
                        area_threshold=params.area_threshold(height, width), params=params,
                        labels=labels, stats=stats, kept=kept, prob=prob)


def decide_from_probability(prob: np.ndarray, params: DecisionParams) -> MaskDecision:
    """Judge one (H, W) scratch-probability map in [0, 1]."""
    prob = np.asarray(prob, dtype=np.float32)
    _check_image_array(prob, "probability map")
    _check_probability_range(float(prob.min()), float(prob.max()), "probability map")
    return _decide(prob >= params.mask_threshold, prob, params)


def decide_from_instances(masks: np.ndarray, scores: np.ndarray, params: DecisionParams,
                          score_threshold: float = 0.5) -> MaskDecision:
    """Judge Mask R-CNN output: (N, H, W) or (N, 1, H, W) mask probabilities and (N,) instance scores.

    Instances scoring ``>= score_threshold`` are kept, their masks thresholded at
    ``params.mask_threshold`` and united; component scores are the pixel-wise max of kept masks.
    """
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if masks.ndim != 3 or len(masks) != len(scores):
        raise DataError(f"instance masks {masks.shape} and scores {scores.shape} do not match; "
                        "pass (N, H, W) masks with one score each")
    if not _is_number(score_threshold) or not 0 <= score_threshold <= 1:
        raise ConfigError(f"score_threshold={score_threshold!r} is not a probability; set it between 0 and 1")
    kept = masks[scores >= score_threshold]
    if not len(kept):
        return _decide(np.zeros(masks.shape[1:], bool), None, params)
    _check_probability_range(float(kept.min()), float(kept.max()), "instance masks")
    return _decide((kept >= params.mask_threshold).any(axis=0), kept.max(axis=0), params)


def decide_from_score(prob_bad: float | np.ndarray, params: DecisionParams) -> bool | np.ndarray:
    """Classifier rule: bad iff ``prob_bad >= params.threshold`` (bool for a number, bool array otherwise)."""
    bad = np.asarray(prob_bad) >= params.threshold
    return bool(bad) if bad.ndim == 0 else bad


def _as_batch(probs: torch.Tensor) -> torch.Tensor:
    if probs.ndim == 4 and probs.shape[1] == 1:
        probs = probs[:, 0]
    if probs.ndim != 3 or probs.numel() == 0:
        raise DataError(f"expected probabilities of shape (B, 1, H, W) or (B, H, W), got {tuple(probs.shape)}")
    return probs


def decide_batch(probs: torch.Tensor, params: DecisionParams) -> list[MaskDecision]:
    """Judge a batch of scratch probabilities, (B, 1, H, W) or (B, H, W), one ``MaskDecision`` each."""
    array = _as_batch(probs).detach().float().cpu().numpy()
    return [decide_from_probability(p, params) for p in array]


def image_scores_from_masks(probs: torch.Tensor, params: DecisionParams) -> torch.Tensor:
    """Per-image scratch area in pixels (B,) as the rule sees it, on the input's device.

    Feed it to ``decide_from_area`` or sweep thresholds over it for image-level precision/recall.
    With ``area_mode="sum"`` and no speck filtering it is one tensor reduction; otherwise components
    are needed and each image goes through OpenCV, giving the same numbers as ``decide_batch``.
    """
    probs = _as_batch(probs).detach()
    _check_probability_range(float(probs.min()), float(probs.max()), "probabilities")
    if params.area_mode == "sum" and params.min_component_area <= 1:
        return (probs >= params.mask_threshold).flatten(1).sum(dim=1).float()
    return probs.new_tensor([d.scratch_area for d in decide_batch(probs, params)]).float()
