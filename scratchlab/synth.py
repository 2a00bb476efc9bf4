"""``python -m scratchlab.synth input=DIR output=OUT n=N``: a ready-to-train data set from good images.

``OUT/good`` holds the readable input images (copied), ``OUT/bad`` and ``OUT/masks`` ``n`` scratched
copies of randomly chosen ones with their 0/255 masks, made by ``mode=synthetic`` (``apply_scratches``),
``mode=copy_paste`` (real scratches from ``source=DIR``, a bad/ + masks/ set) or ``mode=both``;
``OUT/annotations.jsonl`` tells where each bad image came from. Train on it with
``python -m scratchlab.train data=folder data.root=OUT``. Exit code 0 when every input was used,
1 when unreadable inputs were skipped, 2 for bad arguments.
"""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from scratchlab.cli import exit_with, hydra_main, report_skipped
from scratchlab.config import register_resolvers, require_complete

register_resolvers()


def run_synth(cfg: DictConfig) -> int:
    """Expand ``cfg.input`` into ``cfg.output``; prints a summary and returns the exit code."""
    from scratchlab.data.synth.expand import expand_folder

    require_complete(cfg)
    copy_paste = OmegaConf.to_container(cfg.copy_paste, resolve=True) if cfg.get("copy_paste") else None
    summary = expand_folder(
        cfg.input, cfg.output, cfg.get("n"), mode=cfg.mode, appearance=cfg.appearance, seed=int(cfg.seed),
        bad_fraction=cfg.get("bad_fraction"), source=cfg.get("source"),
        mask_threshold=int(cfg.get("mask_threshold", 128)), copy_paste=copy_paste,
        overwrite=bool(cfg.get("overwrite", False)), progress=bool(cfg.get("progress", True)))
    print(f"{summary.good} good + {summary.bad} bad images ({cfg.mode}) -> {summary.output}"
          f"{f', {len(summary.skipped)} unreadable skipped' if summary.skipped else ''}")
    print(f"train: python -m scratchlab.train data=folder data.root={summary.output}")
    if summary.unusable:
        print(f"{len(summary.unusable)} good image(s) could not be scratched (see expand.json)", file=sys.stderr)
    return report_skipped(summary.skipped)


@hydra_main("synth")
def main(cfg: DictConfig) -> None:
    exit_with(run_synth, cfg)


if __name__ == "__main__":
    main()
