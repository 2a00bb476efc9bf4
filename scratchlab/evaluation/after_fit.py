"""The operating point chosen right after training (``choose=`` on ``scratchlab.train``): thresholds picked on the
validation split's cached predictions of the best checkpoint, stored in it, logged to the training run, and used by
the run's own test step, so image decisions come from the same rule every command applies afterwards."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib.pyplot as plt
from omegaconf import DictConfig, OmegaConf

from scratchlab.checkpoints import write_operating_point
from scratchlab.errors import ConfigError
from scratchlab.evaluation.cache import ModelSource, get_predictions
from scratchlab.evaluation.job import evaluation_config
from scratchlab.evaluation.operating_point import (
    check_method,
    choice_xlabel,
    decision_values,
    operating_point_on,
    threshold_figure,
)
from scratchlab.postprocess import DecisionParams
from scratchlab.tracking import TrackedRun

log = logging.getLogger(__name__)


def check_choice(cfg: DictConfig) -> None:
    """One-line errors for a ``choose=`` that cannot work, before anything trains."""
    method = cfg.get("choose")
    check_method(method, cfg.decision.get("target_recall"))
    if method is not None and not (cfg.get("callbacks") or {}).get("model_checkpoint") and \
            str(cfg.model.get("task")) not in ("two_stage", "ensemble"):
        raise ConfigError(f"choose={method} picks the operating point of the best checkpoint, but "
                          f"callbacks.model_checkpoint is off: remove choose= or keep the checkpoint callback")


def choose_after_fit(cfg: DictConfig, checkpoint: str | Path, run: TrackedRun) -> DecisionParams | None:
    """Choose ``cfg.choose``'s operating point for ``checkpoint`` on the validation split; returns the decision,
    or ``None`` (with a warning and a run tag) where the model's predictions admit no choice, e.g. a segmenter that
    marks no pixel: the run is then tested at its configured decision rather than lost."""
    source = ModelSource.from_checkpoint(checkpoint)
    eval_cfg = evaluation_config(source, OmegaConf.create({"paths": OmegaConf.to_container(cfg.paths, resolve=True),
                                                           "split": "val", "data": None}))
    val = get_predictions(source, eval_cfg, "val", Path(str(cfg.paths.log_dir)) / "prediction_cache",
                          device="cuda" if str(cfg.trainer.get("accelerator")) in ("gpu", "cuda") else "cpu")
    grid = list(cfg.choose_mask_thresholds) if cfg.get("choose_mask_thresholds") else None
    try:
        params, choice, point = operating_point_on(val, source.spec.decision, str(cfg.choose),
                                                   cfg.decision.get("target_recall"), grid)
    except ConfigError as err:
        log.warning("operating point not chosen: %s; the test split is judged at the configured decision", err)
        run.set_tags({"scratchlab.operating_point": f"not chosen: {err}"})
        return None
    point = write_operating_point(checkpoint, {**point, "data": str(cfg.data.get("name", "data")),
                                               "evaluated_run": run.run_id})
    run.log_text(json.dumps(point, indent=2, default=str) + "\n", "operating_point.json")
    fig = threshold_figure(choice, choice_xlabel(params, val.segmentation), f"{cfg.run_name} (validation)")
    run.log_figure(fig, "operating_point.png")
    plt.close(fig)
    run.set_tags({"scratchlab.operating_point": json.dumps(decision_values(params, val.segmentation))})
    return params
