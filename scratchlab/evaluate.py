"""``python -m scratchlab.evaluate run_id=RUN | ckpt=PATH``: metrics of a trained model as a new MLflow run.

See ``conf/evaluate.yaml`` for the options and ``scratchlab.evaluation`` for how it works.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from scratchlab.cli import run_or_exit
from scratchlab.config import CONFIG_DIR, register_resolvers

register_resolvers()


@hydra.main(config_path=str(CONFIG_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Evaluate one model on one split (one job of a threshold sweep)."""
    from scratchlab.evaluation.job import evaluate

    run_or_exit(evaluate, cfg)


if __name__ == "__main__":
    main()
