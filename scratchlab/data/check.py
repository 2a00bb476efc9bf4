"""``python -m scratchlab.data.check data=folder data.root=/path/to/images [strict=true]``: what a data set
holds and what is wrong with it, before any training.

Prints counts, sizes, mask statistics and problems, writes the report and a grid PNG into the run folder (and,
with ``statistics=N``, the appearance percentiles as ``statistics.json``).
Exit code 0 when fine, 1 for warnings with ``strict=true``, 2 for fatal problems. The work is done by
``scratchlab.data.checking``.
"""
from __future__ import annotations

from omegaconf import DictConfig

from scratchlab.cli import exit_with, hydra_main
from scratchlab.config import register_resolvers

register_resolvers()


@hydra_main("check")
def main(cfg: DictConfig) -> None:
    from scratchlab.data.checking import run_check

    exit_with(run_check, cfg)


if __name__ == "__main__":
    main()
