"""Evaluation of trained models from cached predictions: metrics at any decision thresholds, sweeps,
the operating-point chooser, and the job behind ``python -m scratchlab.evaluate``.

The network runs once per (model weights, data config, split): its raw outputs are cached
(``cache``), and every metric is computed from that cache (``scoring``), so trying other
thresholds never runs the model again. ``operating_point`` picks thresholds on the validation
split and stores them with the model. Names below are imported on first use (torch is heavy).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ModelSource": "cache", "Predictions": "cache", "get_predictions": "cache", "prediction_cache_key": "cache",
    "choose_threshold": "operating_point", "threshold_curve": "operating_point",
    "compute_metrics": "scoring", "image_scores": "scoring",
    "evaluate": "job",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"scratchlab.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'scratchlab.evaluation' has no attribute {name!r}")
