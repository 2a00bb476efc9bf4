"""Metrics from cached predictions at given decision thresholds (no network involved).

The rules are the ones the test step uses: classifiers ``ClassificationMetrics`` (bad iff P(bad) >=
threshold); models with probability maps ``SegmentationMetrics``, pixel metrics at network geometry and the
image decision from the task class's ``judge`` at the original image size (``Predictions.verdicts``), so
the metrics of an evaluation at the run's own thresholds match its ``test/*`` metrics.
"""
from __future__ import annotations

import numpy as np
import torch

from scratchlab.errors import ConfigError
from scratchlab.evaluation.cache import Predictions
from scratchlab.task_metrics import ClassificationMetrics, SegmentationMetrics
from scratchlab.postprocess import DecisionParams

CHUNK = 64  # images per metric update (pixels of a chunk are concatenated into one flat row)


def scratch_areas(preds: Predictions, params: DecisionParams) -> np.ndarray:
    """Per image the scratch area in original-image pixels as the area rule sees it."""
    if not preds.segmentation:
        raise ConfigError("scratch areas exist for models with probability maps only")
    return np.array([v.scratch_area for v in preds.verdicts(params)], np.float64)


def image_scores(preds: Predictions, params: DecisionParams) -> np.ndarray:
    """The per-image number the bad decision thresholds: P(bad) for binary classifiers; for models with maps
    the scratch area in original-image pixels, or its share of the image when ``min_area_ratio`` is set
    (bad iff score > 0 and score >= the threshold)."""
    if not preds.segmentation:
        probs = preds.probs
        if probs.shape[1] != 2:
            raise ConfigError(f"thresholds apply to good/bad classifiers only; this model has {probs.shape[1]} classes")
        return probs[:, 1].astype(np.float64)
    areas = scratch_areas(preds, params)
    if params.min_area_ratio is not None:
        return areas / np.maximum(preds.sizes[:, 0] * preds.sizes[:, 1], 1)
    return areas


def bad_labels(preds: Predictions) -> np.ndarray:
    """Bool per image: is it bad (any class but 0 for segmenters; class 1 for binary classifiers)."""
    return preds.labels > 0 if preds.segmentation else preds.labels == 1


def compute_metrics(preds: Predictions, params: DecisionParams) -> dict[str, float]:
    """Every metric of the model's kind at ``params``, keyed as in training (``acc``, ``recall_bad``, ``dice``, ...)."""
    if len(preds) == 0:
        raise ConfigError("the evaluated split holds no images")
    if not preds.segmentation:
        metrics = ClassificationMetrics(preds.class_names, params.threshold, sync_on_compute=False)
        metrics.update(torch.from_numpy(np.asarray(preds.probs, np.float32)), torch.from_numpy(preds.labels))
    else:
        metrics = SegmentationMetrics(params.mask_threshold)
        verdicts = preds.verdicts(params)
        bad = torch.tensor([v.is_bad for v in verdicts])
        scores = torch.tensor([v.score for v in verdicts])
        for start in range(0, len(preds), CHUNK):
            idx = range(start, min(start + CHUNK, len(preds)))
            probs = torch.cat([torch.from_numpy(preds.prob_map(i)).flatten() for i in idx])[None, None]
            masks = torch.cat([torch.from_numpy(preds.masks[i]).flatten() for i in idx]).float()[None, None]
            metrics.update(probs, masks, torch.ones_like(probs, dtype=torch.bool), bad[start:start + len(idx)],
                           torch.from_numpy(preds.labels[start:start + len(idx)] > 0), scores[start:start + len(idx)])
    out = {k: float(v) for k, v in metrics.compute().items()}
    out.update(preds.extra_metrics)
    out["n_images"] = float(len(preds))
    if preds.segmentation or preds.probs.shape[1] == 2:
        out["n_bad"] = float(bad_labels(preds).sum())
    return out
