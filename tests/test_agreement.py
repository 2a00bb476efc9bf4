"""One inference path: for every task, the test step, ``scratchlab.evaluate``, ``Predictor.from_checkpoint`` and
``Predictor.from_exported`` judge the same images alike, with scratch areas in original-image pixels.

The images have several sizes and aspect ratios, larger than the U-Net's 64 px input, and ``min_area`` is
chosen so that counting network pixels instead of original ones would flip a decision.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient

from scratchlab.builders import build_datamodule, load_task
from scratchlab.checkpoints import read_checkpoint
from scratchlab.config import compose
from scratchlab.data.io import read_image
from scratchlab.evaluation.cache import Predictions
from scratchlab.evaluation.job import evaluate
from scratchlab.exporting import export_model
from scratchlab.predictor import Predictor
from scratchlab.postprocess import DecisionParams
from scratchlab.tasks.two_stage import TwoStageTask
from scratchlab.training import run_training
from tests.conftest import tiny_overrides

SIZES = [(48, 160), (150, 56), (96, 96), (70, 130), (120, 84)]
MODELS = {
    "cnn": ["model=cnn", "model.image_size=32"],
    "timm": ["model=mobilenetv2", "model.name=mobilenetv2_050", "model.image_size=48", "data.resize=letterbox"],
    "unet": ["model=unet", "model.encoder_name=resnet18", "model.image_size=64"],
    "cnn_tta": ["model=cnn", "model.image_size=32", "model.tta=[hflip,vflip]"],
    "unet_tta": ["model=unet", "model.encoder_name=resnet18", "model.image_size=64", "model.tta=[hflip,hvflip]"],
    # every detection kept, so that a one-batch Mask R-CNN still draws maps to judge
    "maskrcnn": ["model=maskrcnn", "model.min_size=64", "model.max_size=96", "model.score_threshold=0.0",
                 "model.box_score_thresh=0.0", "trainer.limit_train_batches=1"],
}


def _write_data(root: Path, n: int = 20) -> Path:
    """good/ bad/ masks/ of several sizes and aspect ratios; bad images carry a bright line."""
    rng = np.random.default_rng(5)
    for sub in ("good", "bad", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        img = (rng.normal(120, 25, (h, w)).clip(0, 255)).astype(np.uint8)
        if i % 2 == 0:
            cv2.imwrite(str(root / "good" / f"g{i:02d}.png"), img)
            continue
        mask = np.zeros((h, w), np.uint8)
        cv2.line(mask, (int(rng.integers(0, w // 3)), int(rng.integers(0, h))),
                 (int(rng.integers(2 * w // 3, w)), int(rng.integers(0, h))), 255, 3)
        cv2.imwrite(str(root / "bad" / f"b{i:02d}.png"), np.where(mask > 0, 250, img).astype(np.uint8))
        cv2.imwrite(str(root / "masks" / f"b{i:02d}.png"), mask)
    return root


@pytest.fixture(scope="module")
def setup(module_dir: Path) -> dict:
    root = module_dir
    data = _write_data(root / "data")
    base = [o for o in tiny_overrides(root, data) if not o.startswith(("model", "hydra.run"))]
    base += ["trainer.max_epochs=1", "logger.log_checkpoint=false", "test_after_fit=false",
             "data.split.train=0.5", "data.split.val=0.25", "data.split.test=0.25", "data.batch_size=4"]
    ckpts = {}
    for name, extra in MODELS.items():
        run_training(compose("train", base + [f"hydra.run.dir={root}/{name}", *extra]))
        ckpts[name] = root / name / "checkpoints" / "best.ckpt"
    return {"root": root, "base": base, "ckpts": ckpts}


def _test_step(task: pl.LightningModule, cfg_overrides: list[str],
               precision: str = "32") -> dict[str, tuple[float, bool]]:
    """Per test image (path -> score, bad) as the test step of ``task`` records them."""
    dm = build_datamodule(compose("train", cfg_overrides))
    pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
               precision=precision).test(task, datamodule=dm, verbose=False)
    return {r["path"]: (r["score"], r["is_bad"]) for r in task.test_results}


def _choose(task: pl.LightningModule, paths: list[str], maps: bool) -> dict[str, float]:
    """Decision values that split the test images: a threshold between two scores (classifiers), or a mask
    threshold leaving scratch pixels and a min_area that original pixels reach but network pixels do not."""
    images = [read_image(p) for p in paths]
    if not maps:
        scores = sorted(v.score for v in task.predict_images(images))
        return {"threshold": (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2}
    raws = task.predict_raw(images)
    values = np.unique(np.concatenate([r["prob_map"].ravel() for r in raws]))
    k = int(len(values) * 0.97)
    mask_threshold = float((values[k - 1] + values[k]) / 2)  # between two values: no pixel sits on it
    params = {"mask_threshold": mask_threshold, "min_area": 1}
    spec = task.spec.with_decision(DecisionParams.from_config(params))
    flips, areas = [], []
    for raw, image in zip(raws, images):
        network_area = int((raw["prob_map"] >= mask_threshold).sum())
        areas.append(type(task).judge(raw, image.shape[:2], spec).scratch_area)
        if 0 < network_area < areas[-1]:
            flips.append(network_area + 0.5)
    if task.preprocess.image_size is None:  # native resolution (Mask R-CNN): a min_area between the images' areas
        distinct = sorted(set(areas))
        params["min_area"] = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2
        return params
    assert flips, "the images are scaled down, so original areas exceed network areas"
    params["min_area"] = max(flips)  # the old unit would call that image good, the new one bad
    return params


def _check_flips_apply(ckpt: Path, paths: list[str], override: str) -> None:
    """The checkpoint records the flips of ``override``, and the same network without them scores otherwise."""
    task, plain = load_task(ckpt), load_task(ckpt)
    assert task.tta == tuple(override.split("=")[1].strip("[]").split(","))
    plain.spec = replace(plain.spec, options={k: v for k, v in plain.spec.options.items() if k != "tta"})
    images = [read_image(p) for p in paths]
    scores = [[v.score for v in t.predict_images(images)] for t in (task, plain)]
    assert not np.allclose(*scores, rtol=0, atol=1e-6), "the flips change the scores"


def _agree(reference: dict[str, tuple[float, bool]], other: dict[str, tuple[float, bool]], tol: float,
           what: str) -> None:
    assert sorted(other) == sorted(reference), what
    for path, (score, bad) in reference.items():
        assert other[path][1] == bad, f"{what}: decision differs on {path}"
        assert abs(other[path][0] - score) <= tol, f"{what}: score {other[path][0]} vs {score} on {path}"


def _predictor(predictor: Predictor, paths: list[str]) -> dict[str, tuple[float, bool]]:
    return {p.path: (p.score, p.is_bad) for p in predictor.predict_paths(paths, batch_size=3)}


def _evaluate(root: Path, params: dict[str, float], *target: str) -> dict[str, tuple[float, bool]]:
    given = [f"decision.{k}={v!r}" for k, v in params.items()]
    evaluate(compose("evaluate", [f"paths.root_dir={root}", *target, *given, "log_predictions=never", "link_run=false"]))
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    ids = [e.experiment_id for e in client.search_experiments()]
    [run] = client.search_runs(ids, "tags.`mlflow.source.name` = 'scratchlab.evaluate'", max_results=1,
                               order_by=["attributes.start_time DESC"])
    preds = Predictions.load(root / "logs" / "prediction_cache" / f"{run.data.tags['scratchlab.prediction_cache']}.npz")
    verdicts = preds.verdicts(DecisionParams.from_config(params))
    return {p: (v.score, v.is_bad) for p, v in zip(preds.paths, verdicts)}


def _test_paths(root: Path, overrides: list[str]) -> list[str]:
    dm = build_datamodule(compose("train", overrides))
    dm.prepare_data()
    dm.setup("test")
    return [str(s.image) for s in dm.splits["test"]]


def _every_path_agrees(root: Path, ckpt: Path, overrides: list[str], paths: list[str], name: str) -> None:
    """Test step (the reference), ``scratchlab.evaluate``, ``from_checkpoint`` and ``from_exported`` of ``ckpt``
    judge the test images alike, under decision values that split them."""
    task = load_task(ckpt)
    params = _choose(task, paths, maps=task.localizes)
    task.spec = task.spec.with_decision(DecisionParams.from_config({**read_checkpoint(ckpt).config["decision"],
                                                                    **params}))
    reference = _test_step(task, overrides)
    assert len({bad for _, bad in reference.values()}) == 2, "both decisions occur"
    _agree(reference, _evaluate(root, params, f"ckpt={ckpt}"), 1e-5, "scratchlab.evaluate")
    _agree(reference, _predictor(Predictor.from_checkpoint(ckpt, params), paths), 1e-5, "from_checkpoint")
    if Predictor.from_checkpoint(ckpt).task_class.export_outputs:
        exported = export_model(ckpt, root / f"{name}.onnx", "onnx", params)
        _agree(reference, _predictor(Predictor.from_exported(exported), paths), 1e-4, "from_exported")


@pytest.mark.parametrize("name", list(MODELS))
def test_every_path_judges_alike(setup: dict, name: str) -> None:
    root, ckpt = setup["root"], setup["ckpts"][name]
    overrides = setup["base"] + [f"hydra.run.dir={root}/{name}", *MODELS[name]]
    paths = _test_paths(root, overrides)
    if name.endswith("_tta"):
        _check_flips_apply(ckpt, paths, MODELS[name][-1])
    _every_path_agrees(root, ckpt, overrides, paths, name)


@pytest.mark.parametrize("name", ["cnn", "unet"])
def test_a_mixed_precision_test_step_judges_as_the_inference_path(setup: dict, name: str) -> None:
    """Under a mixed-precision trainer (trainer=gpu's 16-mixed; bf16-mixed here, on a CPU) the test step runs in
    float32, as evaluate, predict and exports do: the same scores and decisions as a full-precision test step."""
    root, ckpt = setup["root"], setup["ckpts"][name]
    overrides = setup["base"] + [f"hydra.run.dir={root}/{name}", *MODELS[name]]
    full = _test_step(load_task(ckpt), overrides)
    _agree(full, _test_step(load_task(ckpt), overrides, precision="bf16-mixed"), 1e-6, "bf16-mixed test step")


@pytest.mark.parametrize("members, geometry", [(["cnn", "cnn_tta"], ["model.image_size=32", "data.resize=stretch"]),
                                               (["unet", "unet_tta"], ["model.image_size=64", "data.resize=pad"])])
def test_ensemble_judges_alike(setup: dict, members: list[str], geometry: list[str]) -> None:
    """The run's one checkpoint averages its members' outputs, and every path judges with that average."""
    root, ckpts = setup["root"], setup["ckpts"]
    name = f"ensemble_{members[0]}"
    overrides = setup["base"] + [f"hydra.run.dir={root}/{name}", "model=ensemble", *geometry,
                                 f"model.members=[{','.join(str(ckpts[m]) for m in members)}]"]
    run_training(compose("train", overrides))
    ckpt = root / name / "checkpoints" / "best.ckpt"
    paths = _test_paths(root, overrides)
    images = [read_image(p) for p in paths]
    ensemble, parts = load_task(ckpt), [load_task(ckpts[m]).predict_raw(images) for m in members]
    key = "prob_map" if ensemble.localizes else "probs"
    for raw, *own in zip(ensemble.predict_raw(images), *parts):
        assert np.allclose(raw[key], np.mean([r[key] for r in own], axis=0), atol=1e-6)
    _every_path_agrees(root, ckpt, overrides, paths, name)


def test_two_stage_judges_alike(setup: dict) -> None:
    """Also its own checkpoint (both networks, written by the run) and its two-input ONNX export; both networks
    average over their own flips."""
    root, ckpts = setup["root"], setup["ckpts"]
    overrides = setup["base"] + [f"hydra.run.dir={root}/two_stage", *MODELS["unet"]]
    dm = build_datamodule(compose("train", overrides))
    dm.prepare_data()
    dm.setup("test")
    paths = [str(s.image) for s in dm.splits["test"]]
    scores = sorted(v.score for v in load_task(ckpts["cnn_tta"]).predict_images([read_image(p) for p in paths]))
    gate = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # between two scores: some images pass
    segmenter = load_task(ckpts["unet_tta"])
    params = _choose(segmenter, paths, maps=True)
    decision = DecisionParams.from_config(params)
    task = TwoStageTask.assemble(load_task(ckpts["cnn_tta"]), segmenter, decision, gate)
    reference = _test_step(task, overrides)
    assert len({bad for _, bad in reference.values()}) == 2, "both decisions occur"
    two_stage = [f"model.{k}={v}" for k, v in (("classifier_ckpt", ckpts["cnn_tta"]),
                                                ("segmenter_ckpt", ckpts["unet_tta"]), ("gate_threshold", gate))]
    run_training(compose("train", setup["base"] + [f"hydra.run.dir={root}/two_stage", "model=two_stage",
                                                   "model.image_size=64", "test_after_fit=false", *two_stage]))
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("scratchlab").experiment_id],
                               "tags.task = 'two_stage'", max_results=1)
    _agree(reference, _evaluate(root, params, f"run_id={run.info.run_id}"), 1e-5, "scratchlab.evaluate")
    predictor = Predictor.from_two_stage(ckpts["cnn_tta"], ckpts["unet_tta"], gate, params)
    _agree(reference, _predictor(predictor, paths), 1e-5, "from_two_stage")
    own = Path(run.data.tags["best_checkpoint"])
    _agree(reference, _evaluate(root, params, f"ckpt={own}"), 1e-5, "scratchlab.evaluate of its checkpoint")
    _agree(reference, _predictor(Predictor.from_checkpoint(own, params), paths), 1e-5, "from_checkpoint")
    exported = export_model(own, root / "two_stage.onnx", "onnx", params)
    _agree(reference, _predictor(Predictor.from_exported(exported), paths), 1e-4, "from_exported")
