"""Export a trained model to ONNX or TorchScript, its preprocessing and decision rule included (the library
behind ``python -m scratchlab.export``).

The exported graph (``BaseTask.export_module``) holds the network and the tensor part of preprocessing: it
takes (N, H, W, 3) uint8 RGB images already brought to the network's geometry (``Preprocess.geometry()``:
stretch / letterbox / pad), normalizes them inside, and returns the task's raw outputs
(``BaseTask.export_outputs``: class probabilities, or the scratch-probability map). A two-stage model has
two inputs, one per network, and returns both networks' outputs; the gate is applied by its ``judge``. Batch is a dynamic axis; height and width are too for
``resize=pad`` models. The geometry step and the judgement stay in Python
(``scratchlab.predictor.Predictor.from_exported``), the same task code the checkpoint path runs. The file
carries the model's spec (task, class names, preprocessing, resolved decision rule) as JSON
(ONNX ``metadata_props["scratchlab"]``; TorchScript extra file ``scratchlab.json``). The file is written
atomically (a failed export leaves none), never through a symbolic link, and replaces an existing file only
with ``overwrite=True``.
"""
from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from scratchlab.config import require_complete
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.postprocess import given_overrides
from scratchlab.predictor import METADATA_KEY, TORCHSCRIPT_EXTRA, Predictor
from scratchlab.safe_output import atomic_path, checked_target, refuse_existing

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17


def _check_target(output: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "onnx" and output.suffix.lower() != ".onnx":
        raise ConfigError(f"output={output} must end in .onnx for format=onnx")
    if fmt == "torchscript" and output.suffix.lower() == ".onnx":
        raise ConfigError(f"output={output} ends in .onnx but format=torchscript; use a .pt name")
    if output.is_dir():
        raise ConfigError(f"output={output} is a folder; give a file name")


def _example_input(pre: Preprocess) -> torch.Tensor:
    if pre.resize != "pad":
        h = w = pre.image_size
    elif pre.image_size is None:
        h, w = 2 * pre.pad_multiple, 3 * pre.pad_multiple
    else:  # a fixed-size head (the custom CNN) needs its own size
        h, w = pre.padded(pre.image_size, pre.image_size)
    return torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def export_model(ckpt: str | Path, output: str | Path, format: str = "onnx",
                 decision_overrides: Mapping[str, Any] | None = None, opset: int = DEFAULT_OPSET,
                 overwrite: bool = False) -> Path:
    """Write ``ckpt``'s network + normalization to ``output`` (see the module docstring); returns the path."""
    output = Path(output).expanduser()
    _check_target(output, format)
    output = checked_target(output.parent.resolve(), output.name)
    if output == Path(str(ckpt)).expanduser().resolve():
        raise ConfigError(f"output={output} is the checkpoint itself; give another file name")
    refuse_existing([output], overwrite)
    predictor = Predictor.from_checkpoint(ckpt, decision_overrides)
    outputs = predictor.task_class.export_outputs
    if not outputs:
        raise ConfigError(f"model.task={predictor.kind} cannot be exported; "
                          "predict from the checkpoint instead (python -m scratchlab.predict ckpt=...)")
    module = predictor.task.export_module().eval()
    inputs = predictor.task_class.export_inputs(predictor.spec)
    examples = tuple(_example_input(pre) for pre, _ in inputs.values())
    meta = json.dumps(predictor.metadata())
    pad = predictor.preprocess.resize == "pad"
    in_axes = {name: {0: "batch", 1: "height", 2: "width"} if pre.resize == "pad" else {0: "batch"}
               for name, (pre, _) in inputs.items()}
    axes = {name: {k: v for k, v in dims.items() if pad or k == 0} for name, dims in outputs.items()}
    with warnings.catch_warnings(), torch.no_grad(), atomic_path(output) as tmp:
        warnings.simplefilter("ignore")
        if format == "onnx":
            import onnx

            torch.onnx.export(module, examples, str(tmp), dynamo=False, input_names=list(inputs),
                              output_names=list(outputs), opset_version=opset, do_constant_folding=True,
                              dynamic_axes={**in_axes, **axes})
            model = onnx.load(str(tmp))
            onnx.helper.set_model_props(model, {METADATA_KEY: meta})
            model.doc_string = f"scratchlab {predictor.kind} model exported from {Path(str(ckpt)).name}"
            onnx.save(model, str(tmp))
        else:
            traced = torch.jit.trace(module, examples, check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: meta})
        _check_loads(tmp, output)
    return output


def _check_loads(tmp: Path, output: Path) -> None:
    """A ConfigError naming ``output`` when the file just written to ``tmp`` does not load (an ONNX opset that
    onnxruntime cannot run, for one); it then never replaces ``output``."""
    try:
        Predictor.from_exported(tmp)
    except ConfigError as err:
        hint = f"; try the default opset={DEFAULT_OPSET}" if output.suffix.lower() == ".onnx" else ""
        raise ConfigError(f"{str(err).replace(str(tmp), str(output))}; nothing was written{hint}") from err


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
    overrides = given_overrides(OmegaConf.to_container(cfg.decision, resolve=True))
    path = export_model(cfg.ckpt, cfg.output, cfg.format, overrides, int(cfg.opset),
                        overwrite=bool(cfg.get("overwrite", False)))
    print(f"exported {cfg.ckpt} -> {path} ({cfg.format}, {path.stat().st_size / 1e6:.1f} MB)")
    if cfg.get("verify", True):
        diff, same = compare_with_checkpoint(cfg.ckpt, path, decision_overrides=overrides)
        print(f"check on 3 synthetic images: max |score difference| {diff:.2e}, decisions "
              f"{'identical' if same else 'DIFFER'}")
        if diff > 1e-3 or not same:
            print("warning: the exported model does not match the checkpoint", file=sys.stderr)
            return 1
    return 0
