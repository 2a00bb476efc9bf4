"""``python -m scratchlab.evaluate run_id=RUN | ckpt=PATH``: metrics of a trained model as a new MLflow run.

See ``conf/evaluate.yaml`` for the options and ``scratchlab.evaluation`` for how it works.
"""
from __future__ import annotations

from omegaconf import DictConfig

from scratchlab.cli import hydra_main, run_or_exit
from scratchlab.config import register_resolvers

register_resolvers()


@hydra_main("evaluate")
def main(cfg: DictConfig) -> float | None:
    """Evaluate one model on one split (one job of a threshold sweep); returns the optimized metric for Optuna."""
    from scratchlab.evaluation.job import evaluate

    metrics = run_or_exit(evaluate, cfg)
    target = cfg.get("optimized_metric")
    return float(metrics[target]) if target else None


if __name__ == "__main__":
    main()
