"""The operating-point chooser: pick decision thresholds on validation scores and store them with the model.

Scores are per image (``scoring.image_scores``): P(bad) for classifiers, the scratch area in
original-image pixels (or area share) for models with probability maps. An image is called bad when its score reaches the threshold (segmenters: and is
above 0, an image without scratch pixels is never bad). Candidate thresholds are the scores themselves,
so every distinct decision is reachable and the chosen value is a score seen in validation.

* ``target_recall``: the HIGHEST threshold whose recall of bad reaches the target: the fewest images
  called bad, i.e. the best precision, at that recall. When no threshold reaches it (a segmenter that sees
  no scratch at all in some bad images), the one with the highest recall is taken and ``target_met`` is false.
* ``best_f1``: the threshold with the highest F1 of bad (ties: the highest such threshold).

The choice is written into the checkpoint (``scratchlab.checkpoints.write_operating_point``: a flat
mapping of ``DecisionParams`` values plus notes), which every command applies over the run config.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from scratchlab.errors import ConfigError
from scratchlab.postprocess import DecisionParams

log = logging.getLogger(__name__)

METHODS = ("target_recall", "best_f1")


@dataclass
class ThresholdCurve:
    """Precision, recall and F1 of bad at each candidate threshold (ascending)."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    n_bad: int
    n_images: int


@dataclass
class Choice:
    """A chosen threshold with its validation precision / recall / F1, and the curve it was picked from."""

    threshold: float
    precision: float
    recall: float
    f1: float
    method: str
    target_recall: float | None
    target_met: bool
    curve: ThresholdCurve

    def summary(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "precision_bad": self.precision, "recall_bad": self.recall,
                "f1_bad": self.f1, "method": self.method, "target_recall": self.target_recall,
                "target_met": self.target_met}


def threshold_curve(scores: Sequence[float], is_bad: Sequence[bool], positive_only: bool = False) -> ThresholdCurve:
    """Precision / recall / F1 of bad for every distinct score taken as threshold (bad iff score >= t;
    with ``positive_only`` also score > 0, the area rule)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    is_bad = np.asarray(is_bad, bool).reshape(-1)
    if scores.shape != is_bad.shape:
        raise ConfigError(f"{len(scores)} scores but {len(is_bad)} labels")
    n_bad = int(is_bad.sum())
    if n_bad == 0:
        raise ConfigError("the split used for choosing holds no bad images; recall cannot be measured")
    candidates = np.unique(scores[scores > 0] if positive_only else scores)
    if not len(candidates):
        raise ConfigError("no image has any scratch pixels at this mask_threshold, so no min_area separates "
                          "good from bad; lower decision.mask_threshold")
    bad_sorted, good_sorted = np.sort(scores[is_bad]), np.sort(scores[~is_bad])
    tp = len(bad_sorted) - np.searchsorted(bad_sorted, candidates, side="left")
    fp = len(good_sorted) - np.searchsorted(good_sorted, candidates, side="left")
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = tp / n_bad
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    return ThresholdCurve(candidates, precision, recall, f1, n_bad, len(scores))


def choose_threshold(scores: Sequence[float], is_bad: Sequence[bool], method: str = "target_recall",
                     target_recall: float | None = None, positive_only: bool = False) -> Choice:
    """Pick a threshold on (validation) ``scores`` / ``is_bad`` by ``method`` (see the module docstring)."""
    if method not in METHODS:
        raise ConfigError(f"choose={method!r} is not one of {', '.join(METHODS)}")
    if method == "target_recall":
        if target_recall is None or not 0 < float(target_recall) <= 1:
            raise ConfigError(f"choose=target_recall needs decision.target_recall between 0 and 1, got "
                              f"{target_recall}; add decision.target_recall=0.99")
        target_recall = float(target_recall)
    curve = threshold_curve(scores, is_bad, positive_only)
    met = True
    if method == "target_recall":
        ok = np.flatnonzero(curve.recall >= target_recall - 1e-12)
        if len(ok):
            i = int(ok.max())  # thresholds ascend: the highest one that still reaches the target
        else:
            met = False
            i = int(np.flatnonzero(curve.recall == curve.recall.max()).max())
    else:
        i = int(np.flatnonzero(curve.f1 == curve.f1.max()).max())
    return Choice(threshold=float(curve.thresholds[i]), precision=float(curve.precision[i]),
                  recall=float(curve.recall[i]), f1=float(curve.f1[i]), method=method,
                  target_recall=target_recall if method == "target_recall" else None, target_met=met, curve=curve)


def better(a: Choice, b: Choice) -> bool:
    """Is ``a`` a better operating point than ``b`` under their (shared) method?"""
    if a.method == "target_recall":
        if a.target_met != b.target_met:
            return a.target_met
        if not a.target_met:
            return (a.recall, a.precision) > (b.recall, b.precision)
        return (a.precision, a.f1) > (b.precision, b.f1)
    return a.f1 > b.f1


def choose_operating_point(preds: Any, params: DecisionParams, method: str, target_recall: float | None = None,
                           mask_thresholds: Sequence[float] | None = None) -> tuple[DecisionParams, Choice]:
    """The decision values chosen on ``preds`` (cached predictions of the validation split).

    Classifiers: ``threshold``. Segmenters: ``min_area`` (or ``min_area_ratio`` when that is set) at
    ``params.mask_threshold``, or at the best of ``mask_thresholds`` when a grid is given.
    """
    from scratchlab.evaluation.rescoring import bad_labels, image_scores

    labels = bad_labels(preds)
    if not preds.segmentation:
        choice = choose_threshold(image_scores(preds, params), labels, method, target_recall)
        return replace(params, threshold=choice.threshold), choice
    best: tuple[DecisionParams, Choice] | None = None
    for mt in (list(mask_thresholds) if mask_thresholds else [params.mask_threshold]):
        trial = replace(params, mask_threshold=float(mt))
        try:
            choice = choose_threshold(image_scores(preds, trial), labels, method, target_recall, positive_only=True)
        except ConfigError:
            if mask_thresholds and len(mask_thresholds) > 1:
                continue  # no scratch at this mask threshold: try the others
            raise
        if best is None or better(choice, best[1]):
            area = {"min_area_ratio": choice.threshold} if params.min_area_ratio is not None else \
                {"min_area": choice.threshold}
            best = (replace(trial, **area), choice)
    if best is None:
        raise ConfigError("no validation image has scratch pixels at any of the mask thresholds tried")
    return best


def check_method(method: str | None, target_recall: float | None) -> None:
    """One-line errors for a ``choose=`` method that cannot work (unknown, or target_recall without a target)."""
    if method is None:
        return
    if method not in METHODS:
        raise ConfigError(f"choose={method!r} is not one of {', '.join(METHODS)} (or null)")
    if method == "target_recall" and target_recall is None:
        raise ConfigError("choose=target_recall needs a target: add decision.target_recall=0.99 (the recall of bad "
                          "images to reach on the validation split)")


def operating_point_on(val: Any, params: DecisionParams, method: str, target_recall: float | None,
                       mask_thresholds: Sequence[float] | None = None) -> tuple[DecisionParams, Choice, dict[str, Any]]:
    """Choose on ``val`` (cached validation predictions): the new decision, the choice, and the operating
    point to store (decision values, method, target, validation precision / recall / F1 and counts)."""
    params, choice = choose_operating_point(val, params, method, target_recall, mask_thresholds)
    if val.segmentation and params.min_area_ratio is None and float(params.min_area).is_integer():
        params = DecisionParams(**{**asdict(params), "min_area": int(params.min_area)})
    if choice.method == "target_recall" and not choice.target_met:
        log.warning("no threshold reaches recall %.3f of bad on the validation split; the highest recall "
                    "(%.3f) was taken", choice.target_recall, choice.recall)
    point = {**decision_values(params, val.segmentation), "method": choice.method,
             "target_recall": choice.target_recall, "target_met": choice.target_met, "split": "val",
             "val_precision_bad": choice.precision, "val_recall_bad": choice.recall, "val_f1_bad": choice.f1,
             "val_images": choice.curve.n_images, "val_bad_images": choice.curve.n_bad,
             "prediction_cache": val.meta.get("key")}
    return params, choice, point


def choice_xlabel(params: DecisionParams, maps: bool) -> str:
    """What the chosen threshold is a threshold of, for the operating-point figure."""
    if not maps:
        return "P(bad) threshold"
    if params.min_area_ratio is not None:
        return "min_area_ratio"
    return f"min_area (original-image pixels) at mask_threshold={params.mask_threshold:g}"


def decision_values(params: DecisionParams, maps: bool) -> dict[str, Any]:
    """The decision values an operating point stores: the classifier threshold, or (``maps``) the area rule."""
    if not maps:
        return {"threshold": params.threshold}
    return {"mask_threshold": params.mask_threshold, "min_area": params.min_area,
            "min_area_ratio": params.min_area_ratio, "min_component_area": params.min_component_area,
            "area_mode": params.area_mode}


def threshold_figure(choice: Choice, xlabel: str, title: str = "") -> Any:
    """Precision, recall and F1 of bad vs threshold (chosen point marked) beside the precision-recall curve."""
    import matplotlib.pyplot as plt

    c = choice.curve
    fig, (ax, pr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for values, name in ((c.precision, "precision"), (c.recall, "recall"), (c.f1, "F1")):
        ax.step(c.thresholds, values, where="pre", label=name)
    ax.axvline(choice.threshold, color="k", ls="--", lw=1)
    ax.plot([choice.threshold] * 3, [choice.precision, choice.recall, choice.f1], "ko", ms=5)
    if choice.target_recall is not None:
        ax.axhline(choice.target_recall, color="tab:orange", ls=":", lw=1,
                   label=f"target recall {choice.target_recall:g}")
    if len(c.thresholds) > 1 and c.thresholds.min() > 0 and c.thresholds.max() / c.thresholds.min() > 100:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("bad images")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"chosen {xlabel} = {choice.threshold:.4g} ({choice.method})")
    ax.legend(loc="lower left", fontsize=8)
    pr.plot(c.recall, c.precision, marker=".", ms=3)
    pr.plot([choice.recall], [choice.precision], "ro", ms=7,
            label=f"chosen: P={choice.precision:.3f} R={choice.recall:.3f} F1={choice.f1:.3f}")
    pr.set_xlabel("recall (bad)")
    pr.set_ylabel("precision (bad)")
    pr.set_xlim(-0.02, 1.02)
    pr.set_ylim(-0.02, 1.02)
    pr.set_title("precision-recall")
    pr.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
