"""Export a trained classifier or segmenter to ONNX or TorchScript, decisions included.

CLI: ``python -m scratchlab.export ckpt=PATH format=onnx|torchscript output=FILE [decision.threshold=0.3]``.

The exported graph holds the network and the tensor part of preprocessing: it takes (N, H, W, 3) uint8
RGB images already brought to the network's geometry (``Preprocess.geometry()``: stretch / letterbox /
pad), normalizes them inside, and returns probabilities: (N, C) class probabilities (column 1 = P(bad)),
or the (N, H, W) scratch-probability map. Batch is a dynamic axis; height and width are too for
``resize=pad`` models. The geometry step and the good/bad decision stay in Python
(``scratchlab.inference.Predictor.from_exported``), the same code the checkpoint path runs. The file
carries the preprocessing, the resolved decision thresholds, the task kind and the class names as JSON
(ONNX ``metadata_props["scratchlab"]``; TorchScript extra file ``scratchlab.json``).
"""
from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from scratchlab.cli import exit_with
from scratchlab.config import CONFIG_DIR, register_resolvers, require_complete
from scratchlab.errors import ConfigError
from scratchlab.inference import (
    EXPORTABLE_KINDS,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAMES,
    TORCHSCRIPT_EXTRA,
    Predictor,
    checkpoint_hparams,
)
from scratchlab.tasks.classification import logits_to_probs

register_resolvers()
FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17


class ExportModule(nn.Module):
    """uint8 (N, H, W, 3) RGB at network geometry -> probabilities; normalization as albumentations does it:
    ``(x - mean * 255) * (1 / (std * 255))`` in float32."""

    def __init__(self, net: nn.Module, kind: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.segmentation = kind == "segmentation"
        mean255 = (np.asarray(mean, np.float64) * 255).astype(np.float32)
        inv = np.reciprocal(np.asarray(std, np.float64) * 255).astype(np.float32)
        self.register_buffer("mean", torch.from_numpy(mean255).view(1, -1, 1, 1))
        self.register_buffer("inv_std", torch.from_numpy(inv).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std
        logits = self.net(x).float()
        if self.segmentation:  # as SegmentationTask.loss_and_probs
            return torch.sigmoid(logits[:, 0])
        return logits_to_probs(logits)


def _check_target(output: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "onnx" and output.suffix.lower() != ".onnx":
        raise ConfigError(f"output={output} must end in .onnx for format=onnx")
    if fmt == "torchscript" and output.suffix.lower() == ".onnx":
        raise ConfigError(f"output={output} ends in .onnx but format=torchscript; use a .pt name")
    if output.is_dir():
        raise ConfigError(f"output={output} is a folder; give a file name")


def _example_input(predictor: Predictor) -> torch.Tensor:
    pre = predictor.preprocess
    if pre.resize == "pad":
        h, w = 2 * pre.pad_multiple, 3 * pre.pad_multiple
        if predictor.kind == "classification":  # fixed-size heads (the custom CNN) need their own size
            h = w = -(-pre.image_size // pre.pad_multiple) * pre.pad_multiple
    else:
        h = w = pre.image_size
    return torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def export_model(ckpt: str | Path, output: str | Path, format: str = "onnx",
                 decision_overrides: Mapping[str, Any] | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``ckpt``'s network + normalization to ``output`` (see the module docstring); returns the path."""
    output = Path(output).expanduser()
    _check_target(output, format)
    kind = checkpoint_hparams(ckpt)["config"]["model"].get("task", "classification")
    if kind not in EXPORTABLE_KINDS:
        raise ConfigError(f"export supports classification and segmentation models, not model.task={kind}; "
                          "predict from the checkpoint instead (python -m scratchlab.predict ckpt=...)")
    predictor = Predictor.from_checkpoint(ckpt, decision_overrides)
    pre = predictor.preprocess
    module = ExportModule(predictor.task.net, kind, pre.mean, pre.std).eval()
    example = _example_input(predictor)
    meta = json.dumps(predictor.metadata())
    out_name = OUTPUT_NAMES[kind]
    axes = {0: "batch", 1: "height", 2: "width"} if pre.resize == "pad" else {0: "batch"}
    out_axes = axes if kind == "segmentation" else {0: "batch"}
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if format == "onnx":
            import onnx

            torch.onnx.export(module, (example,), str(output), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[out_name], opset_version=opset, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: axes, out_name: out_axes})
            model = onnx.load(str(output))
            onnx.helper.set_model_props(model, {METADATA_KEY: meta})
            model.doc_string = f"scratchlab {kind} model exported from {Path(str(ckpt)).name}"
            onnx.save(model, str(output))
        else:
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, str(output), _extra_files={TORCHSCRIPT_EXTRA: meta})
    return output


def compare_with_checkpoint(ckpt: str | Path, exported: str | Path, images: list[np.ndarray] | None = None,
                            decision_overrides: Mapping[str, Any] | None = None) -> tuple[float, bool]:
    """Max |score difference| and whether all decisions agree between a checkpoint and its export, on
    ``images`` (default: three synthetic images of odd sizes)."""
    if images is None:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((45, 70, 3), (61, 37), (33, 90, 3))]
    a = Predictor.from_checkpoint(ckpt, decision_overrides).predict_batch(images)
    b = Predictor.from_exported(exported, decision_overrides).predict_batch(images)
    diff = max(abs(x.score - y.score) for x, y in zip(a, b))
    return diff, all(x.decision == y.decision for x, y in zip(a, b))


def run_export(cfg: DictConfig) -> int:
    require_complete(cfg)
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.get("decision") or {}, resolve=True).items()
                 if v is not None}
    path = export_model(cfg.ckpt, cfg.output, cfg.format, overrides, int(cfg.opset))
    print(f"exported {cfg.ckpt} -> {path} ({cfg.format}, {path.stat().st_size / 1e6:.1f} MB)")
    if cfg.get("verify", True):
        diff, same = compare_with_checkpoint(cfg.ckpt, path, decision_overrides=overrides)
        print(f"check on 3 synthetic images: max |score difference| {diff:.2e}, decisions "
              f"{'identical' if same else 'DIFFER'}")
        if diff > 1e-3 or not same:
            print("warning: the exported model does not match the checkpoint", file=sys.stderr)
            return 1
    return 0


@hydra.main(config_path=str(CONFIG_DIR), config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    exit_with(run_export, cfg)


if __name__ == "__main__":
    main()
