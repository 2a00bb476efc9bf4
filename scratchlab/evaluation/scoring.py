"""Metrics from cached predictions at given decision thresholds (no network involved).

The rules are the ones training uses: classifiers ``ClassificationMetrics`` (bad iff P(bad) >= threshold);
segmentation kinds ``SegmentationMetrics`` with the image decision from the scratch-area rule
(``image_scores_from_masks`` + ``decide_from_area``), so the metrics of an evaluation at the run's own
thresholds match its ``test/*`` metrics (segmenters up to the uint8 rounding of cached probabilities).
"""
from __future__ import annotations

import numpy as np
import torch

from scratchlab.errors import ConfigError
from scratchlab.evaluation.cache import Predictions
from scratchlab.metrics import ClassificationMetrics, SegmentationMetrics
from scratchlab.postprocess import DecisionParams, decide_from_area, image_scores_from_masks

CHUNK = 64  # images per metric update (pixels of a chunk are concatenated into one flat row)


def scratch_areas(preds: Predictions, params: DecisionParams) -> np.ndarray:
    """Per image the scratch area in pixels as the area rule sees it (mask_threshold, specks, area_mode)."""
    if not preds.segmentation:
        raise ConfigError("scratch areas exist for segmentation models only")
    out = np.zeros(len(preds), np.float64)
    for i in range(len(preds)):
        out[i] = float(image_scores_from_masks(torch.from_numpy(preds.prob_map(i))[None], params)[0])
    return out


def image_sizes(preds: Predictions) -> np.ndarray:
    """(N, 2) height and width of each cached map (the geometry the area rule measures)."""
    return np.array([m.shape for m in preds.maps], np.int64).reshape(-1, 2)


def image_scores(preds: Predictions, params: DecisionParams) -> np.ndarray:
    """The per-image number the bad decision thresholds: P(bad) for binary classifiers; for segmenters the
    scratch area in pixels, or its share of the image when ``min_area_ratio`` is set (bad iff score > 0 and
    score >= the threshold)."""
    if not preds.segmentation:
        if preds.probs.shape[1] != 2:
            raise ConfigError("thresholds apply to good/bad classifiers only; this model has "
                              f"{preds.probs.shape[1]} classes")
        return preds.probs[:, 1].astype(np.float64)
    areas = scratch_areas(preds, params)
    if params.min_area_ratio is not None:
        sizes = image_sizes(preds)
        return areas / np.maximum(sizes[:, 0] * sizes[:, 1], 1)
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
        out = {k: float(v) for k, v in metrics.compute().items()}
    else:
        metrics = SegmentationMetrics(params.mask_threshold)
        for start in range(0, len(preds), CHUNK):
            idx = range(start, min(start + CHUNK, len(preds)))
            probs = torch.cat([torch.from_numpy(preds.prob_map(i)).flatten() for i in idx])[None, None]
            masks = torch.cat([torch.from_numpy(preds.masks[i]).flatten() for i in idx]).float()[None, None]
            bad = []
            for i in idx:
                h, w = preds.maps[i].shape
                area = float(image_scores_from_masks(torch.from_numpy(preds.prob_map(i))[None], params)[0])
                bad.append(bool(decide_from_area(area, params, h, w)))
            metrics.update(probs, masks, torch.ones_like(probs, dtype=torch.bool), torch.tensor(bad),
                           torch.from_numpy(preds.labels[start:start + len(idx)] > 0))
        out = {k: float(v) for k, v in metrics.compute().items()}
    out.update(preds.extra_metrics)
    out["n_images"] = float(len(preds))
    if preds.segmentation or preds.probs.shape[1] == 2:
        out["n_bad"] = float(bad_labels(preds).sum())
    return out
