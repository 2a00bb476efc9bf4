"""``python -m scratchlab.export ckpt=PATH format=onnx|torchscript output=FILE [decision.KEY=VALUE]``.

Writes the checkpoint's network and normalization as ONNX or TorchScript with the model's spec
(preprocessing, decision rule, task, class names) inside, then checks it against the checkpoint on
synthetic images (exit 1 when they differ). See ``scratchlab.exporting`` for the format.
An existing FILE is replaced only with ``overwrite=true``; the file is written atomically (a failed export
leaves none), never through a symbolic link.
"""
from __future__ import annotations

from omegaconf import DictConfig

from scratchlab.cli import exit_with, hydra_main
from scratchlab.config import register_resolvers

register_resolvers()


@hydra_main("export")
def main(cfg: DictConfig) -> None:
    from scratchlab.exporting import run_export

    exit_with(run_export, cfg)


if __name__ == "__main__":
    main()
