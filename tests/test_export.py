"""Export: ONNX and TorchScript files decide exactly like the checkpoint they came from."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from scratchlab.data.io import read_image
from scratchlab.errors import ConfigError
from scratchlab.exporting import export_model
from scratchlab.predictor import METADATA_KEY, TORCHSCRIPT_EXTRA, Predictor
from tests.conftest import run_cli
from tests.test_predict import tiny_models, write_odd_images

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(models: dict[str, Path], module_dir: Path) -> dict[tuple[str, str], Path]:
    out = module_dir
    return {(name, fmt): export_model(models[name], out / f"{name}{suffix}", fmt)
            for name in ("cnn", "unet") for fmt, suffix in FORMATS.items()}


def _odd_images(data: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    files = sorted((data / "bad").glob("*.png"))[:3] + sorted((data / "good").glob("*.png"))[:2]
    return [read_image(f) for f in files] + [
        rng.integers(0, 256, (43, 67, 3), dtype=np.uint8), rng.integers(0, 256, (31, 97), dtype=np.uint8),
        rng.integers(0, 256, (70, 45, 4), dtype=np.uint8), rng.integers(0, 65535, (37, 59), dtype=np.uint16)]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", ["cnn", "unet"])
def test_exported_model_decides_like_the_checkpoint(models: dict[str, Path], exported: dict, name: str,
                                                    fmt: str) -> None:
    images = _odd_images(models["data"])
    reference = Predictor.from_checkpoint(models[name]).predict_batch(images)
    # thresholds in the middle of the scores, so that both decisions occur
    if name == "cnn":
        scores = sorted(p.score for p in reference)  # halfway between two scores: no image sits on the threshold
        overrides = {"threshold": (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2}
    else:  # a mask threshold that leaves some scratch pixels, and a min_area between the images' areas
        overrides = {"mask_threshold": float(np.quantile(reference[0].probability, 0.9)), "min_area": 1}
        areas = sorted({p.details.scratch_area for p in Predictor.from_checkpoint(models[name], overrides)
                        .predict_batch(images)})
        assert len(areas) > 1, "the odd images must differ in scratch area"
        overrides["min_area"] = max(1, areas[len(areas) // 2])
        overrides["score_top_k"] = 7  # the image score travels with the file too
    ckpt = Predictor.from_checkpoint(models[name], overrides).predict_batch(images)
    other = Predictor.from_exported(exported[name, fmt], overrides)
    assert other.decision == Predictor.from_checkpoint(models[name], overrides).decision
    preds = other.predict_batch(images)
    assert max(abs(a.score - b.score) for a, b in zip(ckpt, preds)) < 1e-4
    assert [a.decision for a in ckpt] == [b.decision for b in preds]
    assert {a.decision for a in ckpt} == {"bad", "good"}
    if name == "unet":
        assert {a.score_name for a in ckpt} == {b.score_name for b in preds} == {"top7_mean_probability"}
        for a, b in zip(ckpt, preds):
            assert b.mask.shape == a.mask.shape == a.image_size
            assert np.abs(a.probability - b.probability).max() < 1e-4
            assert (a.mask != b.mask).mean() < 1e-3 and a.details.scratch_area == pytest.approx(
                b.details.scratch_area, abs=2)


def test_metadata_travels_with_the_file(models: dict[str, Path], exported: dict) -> None:
    meta = json.loads({p.key: p.value for p in onnx.load(str(exported["unet", "onnx"])).metadata_props}[METADATA_KEY])
    reference = Predictor.from_checkpoint(models["unet"])
    spec = meta["spec"]
    assert spec["task"] == "segmentation" and spec["class_names"] == ["good", "bad"]
    assert spec["preprocess"] == reference.preprocess.to_dict() and spec["preprocess"]["resize"] == "pad"
    assert spec["decision"] == asdict(reference.decision) and meta["outputs"] == ["prob_map"]
    dims = onnx.load(str(exported["unet", "onnx"])).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "height", "width", 3], "pad mode: dynamic H, W"
    dims = onnx.load(str(exported["cnn", "onnx"])).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 32, 32, 3]
    extra = {TORCHSCRIPT_EXTRA: ""}
    torch.jit.load(str(exported["cnn", "torchscript"]), _extra_files=extra)
    spec = json.loads(extra[TORCHSCRIPT_EXTRA])["spec"]
    assert spec["task"] == "classification" and spec["preprocess"]["image_size"] == 32
    assert spec["preprocess"]["resize"] == "stretch"


def test_export_refuses_what_it_cannot_do(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must end in .onnx"):
        export_model(models["cnn"], tmp_path / "x.pt", "onnx")
    with pytest.raises(ConfigError, match="format="):
        export_model(models["cnn"], tmp_path / "x.onnx", "tflite")
    with pytest.raises(ConfigError, match="does not exist"):
        Predictor.from_exported(tmp_path / "nothing.onnx")


def test_export_cli_then_predict_with_the_exported_model(models: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "cnn.onnx"
    proc = run_cli("scratchlab.export", [f"ckpt={models['cnn']}", f"output={model}", "decision.threshold=0.4",
                                         f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "decisions identical" in proc.stdout
    sizes = write_odd_images(tmp_path / "in")
    (tmp_path / "in" / "corrupt.png").unlink()
    out = tmp_path / "out"
    proc = run_cli("scratchlab.predict", [f"model_path={model}", f"input={tmp_path / 'in'}", f"output={out}",
                                          f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    reference = Predictor.from_checkpoint(models["cnn"], {"threshold": 0.4})
    assert len(records) == len(sizes)
    for r in records:
        expected = reference(r["path"])
        assert abs(r["score"] - expected.score) < 1e-4 and r["decision"] == expected.decision
        assert r["thresholds"]["threshold"] == 0.4 and r["components"] == []
        stem = Path(r["path"]).stem
        assert not (out / f"{stem}_mask.png").exists(), "classifiers write no mask"
        assert cv2.imread(str(out / f"{stem}_overlay.png")).shape[:2] == sizes[stem]
