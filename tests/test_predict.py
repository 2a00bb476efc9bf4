"""Prediction: the Predictor API and ``python -m scratchlab.predict`` on images of any size and mode."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from scratchlab.data.io import read_image
from scratchlab.data.transforms import Preprocess, build_transform
from scratchlab.errors import ConfigError, DataError
from scratchlab.data.transforms import content_box, restore_geometry
from scratchlab.checkpoints import ModelSpec, write_operating_point
from scratchlab.predictor import Predictor
from scratchlab.postprocess import DecisionParams, decide_from_instances, decide_from_probability, decide_from_score
from scratchlab.tasks.classification import logits_to_probs
from scratchlab.tasks.instance import InstanceSegmentationTask, union_map
from scratchlab.tasks.segmentation import SegmentationTask
from tests.conftest import run_cli, tiny_overrides, write_tiny_folder_dataset

MODELS = {"cnn": ["model=cnn", "model.image_size=32"], "unet": ["model=unet", "model.encoder_name=resnet18"]}
_TRAINED: dict[str, Path] = {}


def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints of a 32x32 custom CNN (stretch) and a ResNet18 U-Net (pad), one epoch on the tiny data set.

    Trained once per test session and shared with tests/test_export.py."""
    if not _TRAINED:
        from scratchlab.config import compose
        from scratchlab.training import run_training

        root = tmp_path_factory.mktemp("tiny_models")
        data = write_tiny_folder_dataset(root / "data")
        for name, extra in MODELS.items():
            base = [o for o in tiny_overrides(root, data, run_dir=name) if not o.startswith("model")]
            run_training(compose("train", base + extra + ["trainer.max_epochs=1", "test_after_fit=false",
                                                          "logger.log_checkpoint=false",
                                                          "trainer.enable_model_summary=false"]))
            _TRAINED[name] = root / "logs" / name / "checkpoints" / "best.ckpt"
        _TRAINED["data"] = data
    return _TRAINED


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_models(tmp_path_factory)


def write_odd_images(folder: Path, data: Path | None = None) -> dict[str, tuple[int, int]]:
    """Images of odd sizes in every mode read_image handles, plus a corrupt file; returns name -> (h, w)."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(folder / "odd_rgb.png")
    Image.fromarray(rng.integers(0, 256, (45, 71), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (29, 64, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (50, 33), dtype=np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (41, 39, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    if data is not None:  # a real scratch image of the tiny data set
        shutil.copy(sorted((data / "bad").glob("*.png"))[0], folder / "scratched.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    return {p.stem: Image.open(p).size[::-1] for p in folder.glob("*.png") if p.stem != "corrupt"}


def test_cli_predicts_any_image_and_skips_a_corrupt_one(models: dict[str, Path], tmp_path: Path) -> None:
    sizes = write_odd_images(tmp_path / "in", models["data"])
    out = tmp_path / "out"
    proc = run_cli("scratchlab.predict", [f"ckpt={models['unet']}", f"input={tmp_path / 'in'}", f"output={out}",
                                          "batch_size=4", "decision.mask_threshold=0.6",
                                          f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "corrupt.png" in warnings[0], proc.stderr
    assert proc.stderr.count("corrupt.png") == 1 and "skipped 1 unreadable" in proc.stderr, "named once"
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(sizes) + 1
    errors = [r for r in records if "error" in r]
    assert len(errors) == 1 and errors[0]["path"].endswith("corrupt.png")
    for r in records:
        if "error" in r:
            continue
        stem = Path(r["path"]).stem
        h, w = sizes[stem]
        assert r["decision"] in ("bad", "good") and 0.0 <= r["score"] <= 1.0
        assert r["image_size"] == [h, w] and r["thresholds"]["mask_threshold"] == 0.6
        mask = cv2.imread(str(out / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}, stem
        assert (mask > 0).sum() == r["scratch_area"]
        assert cv2.imread(str(out / f"{stem}_overlay.png")).shape == (h, w, 3)
        assert r["mask_file"] == f"{stem}_mask.png" and r["overlay_file"] == f"{stem}_overlay.png"
        for c in r["components"]:
            x1, y1, x2, y2 = c["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and c["area"] > 0 and c["length"] > 0


def test_unscaled_12_bit_images_are_judged_with_a_warning(models: dict[str, Path], tmp_path: Path) -> None:
    """They read nearly black: one full warning, a count, and a ``warning`` in each of their records."""
    rng = np.random.default_rng(3)
    (tmp_path / "in").mkdir()
    low = rng.integers(0, 4096, (40, 60), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "in" / "cam_a.png"), low)
    cv2.imwrite(str(tmp_path / "in" / "cam_b.png"), low[::-1])
    cv2.imwrite(str(tmp_path / "in" / "scaled.png"), low * 16)
    out = tmp_path / "out"
    proc = run_cli("scratchlab.predict", [f"ckpt={models['cnn']}", f"input={tmp_path / 'in'}", f"output={out}",
                                          f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 2 and "cam_a.png is a 16-bit image" in warnings[0] and "nearly black" in warnings[0]
    assert "2 images read nearly black" in warnings[1], proc.stderr
    records = {Path(r["path"]).name: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert "warning" in records["cam_a.png"] and "warning" in records["cam_b.png"]
    assert "warning" not in records["scaled.png"] and records["scaled.png"]["decision"] in ("bad", "good")


def test_cli_bad_checkpoint_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "in" / "a.png")
    proc = run_cli("scratchlab.predict", [f"ckpt={tmp_path}/missing.ckpt", f"input={tmp_path / 'in'}",
                                          f"output={tmp_path / 'out'}", f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "missing.ckpt" in errors[0], proc.stderr


def _test_images(data: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    files = sorted((data / "bad").glob("*.png"))[:3] + sorted((data / "good").glob("*.png"))[:2]
    return [read_image(f) for f in files] + [rng.integers(0, 256, (43, 67, 3), dtype=np.uint8)]


def test_classifier_decision_is_the_rule_on_the_task_output(models: dict[str, Path]) -> None:
    base = Predictor.from_checkpoint(models["cnn"])
    task, transform = base.task, build_transform(base.preprocess)
    images = _test_images(models["data"])
    with torch.no_grad():
        p_bad = [float(logits_to_probs(task(transform(image=im)["image"][None]))[0, 1]) for im in images]
    threshold = float(np.median(p_bad))  # some images on each side
    predictor = Predictor.from_checkpoint(models["cnn"], {"threshold": threshold})
    assert predictor.decision.threshold == threshold and base.preprocess.resize == "stretch"
    preds = predictor.predict_batch(images)
    for pred, p in zip(preds, p_bad):
        assert pred.score == pytest.approx(p, abs=1e-6) and pred.mask is None and pred.score_name == "p_bad"
        assert pred.decision == ("bad" if decide_from_score(p, predictor.decision) else "good")
        assert pred.to_json()["thresholds"]["threshold"] == threshold
    assert {p.decision for p in preds} == {"bad", "good"}


def test_segmenter_decision_is_the_rule_on_the_task_output(models: dict[str, Path]) -> None:
    base = Predictor.from_checkpoint(models["unet"])
    task, transform = base.task, build_transform(base.preprocess)
    assert base.preprocess.resize == "pad"
    images = _test_images(models["data"])
    with torch.no_grad():  # the network's map, brought back to each image's own size
        probs = [restore_geometry(torch.sigmoid(task(transform(image=im)["image"][None]))[0, 0].numpy(),
                                  base.preprocess, *im.shape[:2]) for im in images]
    overrides = {"mask_threshold": float(np.quantile(probs[0], 0.9)), "min_area": 30}
    predictor = Predictor.from_checkpoint(models["unet"], overrides)
    for image, prob in zip(images, probs):
        pred = predictor(image)  # one at a time, as computed above
        expected = decide_from_probability(prob, predictor.decision)
        np.testing.assert_allclose(pred.probability, prob, atol=1e-6)
        assert pred.score == pytest.approx(float(prob.max()), abs=1e-6)
        assert pred.decision == ("bad" if expected.is_bad else "good")
        assert np.array_equal(pred.mask, expected.mask * 255) and pred.mask.shape == prob.shape
        assert [c.box for c in pred.components] == [c.box for c in expected.components]
        assert pred.thresholds["area_threshold"] == expected.area_threshold == 30


def test_operating_point_overrides_config_and_overrides_win(models: dict[str, Path], tmp_path: Path) -> None:
    assert Predictor.from_checkpoint(models["cnn"]).decision.threshold == 0.5
    copy = tmp_path / "op.ckpt"
    shutil.copy(models["cnn"], copy)
    point = write_operating_point(copy, {"threshold": 0.123, "min_area": 7})
    assert point["original"]["threshold"] == 0.5 and point["previous"] is None
    params = Predictor.from_checkpoint(copy).decision
    assert (params.threshold, params.min_area) == (0.123, 7)
    assert Predictor.from_checkpoint(copy, {"threshold": 0.9}).decision.threshold == 0.9
    assert Predictor.from_checkpoint(copy, use_operating_point=False).decision.threshold == 0.5
    assert write_operating_point(copy, {"threshold": 0.2})["previous"]["threshold"] == 0.123
    with pytest.raises(ConfigError, match="treshold"):
        Predictor.from_checkpoint(models["cnn"], {"treshold": 0.3})


@pytest.mark.parametrize(("resize", "size"), [("stretch", 64), ("letterbox", 64), ("pad", 64), ("pad", None)])
def test_maps_come_back_at_the_original_size(resize: str, size: int | None) -> None:
    pre = Preprocess(image_size=size, resize=resize)
    h, w = 37, 83
    mask = np.zeros((h, w), np.uint8)
    mask[10:25, 20:70] = 1
    placed = A.Compose(pre.geometry())(image=np.zeros((h, w, 3), np.uint8), mask=mask)["mask"]
    back = restore_geometry(placed.astype(np.float32), pre, h, w) >= 0.5
    assert back.shape == (h, w)
    iou = (back & (mask > 0)).sum() / (back | (mask > 0)).sum()
    assert iou == 1.0 if size is None else iou > 0.85  # native padding is exact, scaling nearly so
    if resize == "letterbox":  # 83 -> 64 wide, 37 -> 29 high, centred
        assert content_box(pre, h, w) == (17, 46, 0, 64)


def test_predict_paths_batches_like_single_calls(models: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are read ahead on the process's long-lived decoding threads (none ends before a fork) and judged as
    one call each would judge them."""
    import threading

    import scratchlab.predictor as predictor_module

    sizes = write_odd_images(tmp_path, models["data"])
    shutil.copy(tmp_path / "odd_rgb.png", tmp_path / "odd_rgb_copy.png")  # same shape: batched together
    files = sorted(tmp_path.glob("*.png"))
    predictor = Predictor.from_checkpoint(models["unet"])
    readers: set[str] = set()
    read = predictor_module._try_read
    monkeypatch.setattr(predictor_module, "_try_read", lambda p: readers.add(threading.current_thread().name) or read(p))
    batched = list(predictor.predict_paths(files, batch_size=3, skip_errors=True))
    assert readers and all(name.startswith("decode") for name in readers), readers
    assert [p.path for p in batched] == [str(f) for f in files]
    for pred, f in zip(batched, files):
        if f.stem == "corrupt":
            assert not pred.ok and "corrupt.png" in pred.error and pred.to_json() == {"path": str(f),
                                                                                         "error": pred.error}
            continue
        single = predictor(f)
        assert pred.image_size == sizes.get(f.stem, sizes["odd_rgb"])
        assert abs(pred.score - single.score) < 1e-5 and pred.decision == single.decision
    with pytest.raises(DataError, match="corrupt"):
        list(predictor.predict_paths(files, batch_size=3))
    deep = np.asarray(Image.open(tmp_path / "deep16.png")).astype(np.uint16)
    assert predictor(deep).score == pytest.approx(predictor((deep >> 8).astype(np.uint8)).score, abs=1e-6)


def _spec(task: str, pre: Preprocess, params: DecisionParams, **options: float) -> ModelSpec:
    return ModelSpec(task=task, class_names=("good", "bad"), preprocess=pre, decision=params, options=options)


def test_instance_output_is_judged_by_decide_from_instances() -> None:
    """Mask R-CNN output (N, 1, H, W) + scores -> union of kept instances (no tiny Mask R-CNN finds any)."""
    params = DecisionParams(mask_threshold=0.5, min_area=10)
    spec = _spec("instance", Preprocess(image_size=None, resize="pad"), params, score_threshold=0.6)
    masks = np.zeros((3, 1, 30, 40), np.float32)
    masks[0, 0, 5:8, 2:30] = 0.9   # kept: 84 px
    masks[1, 0, 20:25, 10:20] = 0.8  # score below 0.6: ignored
    masks[2, 0, 5:7, 25:38] = 0.7  # kept, overlaps the first
    scores = np.array([0.9, 0.3, 0.7], np.float32)
    raw = {"prob_map": union_map({"masks": torch.from_numpy(masks), "scores": torch.from_numpy(scores)}, 0.6,
                                 (30, 40)).numpy()}
    verdict = InstanceSegmentationTask.judge(raw, (30, 40), spec)
    expected = decide_from_instances(masks, scores, params, score_threshold=0.6)
    assert verdict.is_bad and np.array_equal(verdict.details.mask, expected.mask)
    assert verdict.scratch_area == expected.scratch_area == 84 + 2 * 8 and verdict.score == pytest.approx(0.9)
    empty = {"masks": torch.zeros((0, 1, 30, 40)), "scores": torch.zeros(0)}
    none = InstanceSegmentationTask.judge({"prob_map": union_map(empty, 0.6, (30, 40)).numpy()}, (30, 40), spec)
    assert not none.is_bad and none.score == 0.0 and not none.details.mask.any()


def test_areas_are_counted_in_original_image_pixels() -> None:
    """A model that sees images scaled to 32 px: a 4x8 scratch in its map is 16x32 pixels of a 128x256 image."""
    pre = Preprocess(image_size=32, resize="pad")
    prob = np.zeros((16, 32), np.float32)  # the content of a 128x256 image scaled by 1/8 (padding cut off)
    prob[6:10, 10:18] = 0.9
    verdict = SegmentationTask.judge({"prob_map": prob}, (128, 256), _spec("segmentation", pre, DecisionParams(
        min_area=300)))
    assert verdict.probability.shape == (128, 256)
    assert abs(verdict.scratch_area - 4 * 8 * 64) <= 4 * 8 * 64 * 0.2 and verdict.is_bad  # not 32 network pixels
    assert verdict.details.components[0].box.x1 >= 70 and verdict.details.components[0].box.x2 <= 150
