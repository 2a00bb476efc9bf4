"""``python -m scratchlab.report``: Markdown and CSV tables of MLflow runs, reported vs reproduced.

See ``conf/report.yaml`` for the options and ``scratchlab.reporting`` for how the tables are made.
"""
from __future__ import annotations

import sys

from omegaconf import DictConfig

from scratchlab.cli import hydra_main, run_or_exit
from scratchlab.config import register_resolvers

register_resolvers()


@hydra_main("report")
def main(cfg: DictConfig) -> None:
    from scratchlab.reporting import make_report

    run_or_exit(make_report, cfg)


if __name__ == "__main__":
    from scratchlab.reporting import quote_filter_args

    sys.argv = quote_filter_args(sys.argv)
    main()
