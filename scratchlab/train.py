"""``python -m scratchlab.train``: train a scratch detector from composed Hydra configs."""
from __future__ import annotations

import sys

from omegaconf import DictConfig

from scratchlab.cli import hydra_main, run_or_exit
from scratchlab.config import register_resolvers
from scratchlab.errors import ConfigError

register_resolvers()


@hydra_main("train")
def main(cfg: DictConfig) -> float | None:
    """Train, test and log one configuration; returns the optimized metric for sweepers."""
    from scratchlab.resume import Interrupted
    from scratchlab.training import run_training

    try:
        metrics = run_or_exit(run_training, cfg)
    except Interrupted as err:
        sys.exit(err.exit_code)  # 130 for Ctrl-C, 143 for SIGTERM; the run is KILLED with last.ckpt logged
    target = cfg.get("optimized_metric")
    if not target:
        return None
    if target not in metrics:
        run_or_exit(_missing_metric, target, metrics)
    return metrics[target]


def _missing_metric(target: str, metrics: dict[str, float]) -> None:
    raise ConfigError(f"optimized_metric={target} is not a metric of this run; choose one of {', '.join(sorted(metrics))}")


if __name__ == "__main__":
    main()
