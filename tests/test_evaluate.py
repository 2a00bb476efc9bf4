"""Evaluation from cached predictions: child runs, cache reuse in sweeps, ckpt= without a run, the
operating-point chooser (pure function and written into a checkpoint), argument errors."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torchmetrics.functional.classification import binary_auroc

from scratchlab.builders import build_task
from scratchlab.checkpoints import read_checkpoint, save_checkpoint
from scratchlab.cli import run_or_exit
from scratchlab.errors import ConfigError
from scratchlab.config import compose
from scratchlab.evaluation.cache import ModelSource, Predictions
from scratchlab.evaluation.job import evaluate, evaluation_config
from scratchlab.evaluation.operating_point import choose_threshold, threshold_curve
from scratchlab.postprocess import DecisionParams
from scratchlab.training import run_training
from tests.conftest import cli_env, run_cli, tiny_overrides


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def _children(client: MlflowClient, parent_id: str) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                   order_by=["attributes.start_time ASC"]))


@pytest.fixture(scope="module")
def trained(module_dir: Path, tiny_dataset: Path) -> dict:
    """One tiny classifier and one tiny U-Net, trained once for the whole module (1 epoch each)."""
    root = module_dir
    base = [o for o in tiny_overrides(root, tiny_dataset) if not o.startswith(("model", "hydra.run"))]
    base += ["trainer.max_epochs=1"]
    cls = run_training(compose("train", base + [f"hydra.run.dir={root}/cls", "model=cnn", "model.image_size=32"]))
    seg = run_training(compose("train", base + [f"hydra.run.dir={root}/seg", "model=unet",
                                                "model.encoder_name=resnet18"]))
    client = _client(root)
    runs = {r.data.tags["task"]: r for r in client.search_runs([client.get_experiment_by_name("scratchlab")
                                                                .experiment_id])}
    return {"root": root, "cls_metrics": cls, "seg_metrics": seg, "cls_run": runs["classification"].info.run_id,
            "seg_run": runs["segmentation"].info.run_id, "cls_ckpt": root / "cls/checkpoints/best.ckpt",
            "seg_ckpt": root / "seg/checkpoints/best.ckpt"}


def _eval_cfg(root: Path, *overrides: str):
    return compose("evaluate", [f"paths.root_dir={root}", *overrides])


def test_evaluate_logs_child_run_with_prediction_cache(trained: dict) -> None:
    root, parent = trained["root"], trained["cls_run"]
    metrics = evaluate(_eval_cfg(root, f"run_id={parent}"))
    for key in ("test/acc", "test/precision_bad", "test/recall_bad", "test/f1_good", "test/auroc"):
        assert metrics[key] == pytest.approx(trained["cls_metrics"][key], abs=1e-6), key
    client = _client(root)
    [child] = _children(client, parent)
    tags = child.data.tags
    assert child.info.status == "FINISHED" and child.info.run_name == "eval-test-threshold=0.5"
    assert tags["scratchlab.evaluated_run"] == parent and tags["scratchlab.split"] == "test"
    assert tags["scratchlab.data"] == "folder" and tags["scratchlab.cache_hit"] == "false"
    assert child.info.experiment_id == client.get_run(parent).info.experiment_id
    assert child.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    key = tags["scratchlab.prediction_cache"]
    assert f"prediction_cache/{key}.npz" in _artifacts(client, child.info.run_id)
    assert tags["scratchlab.prediction_cache_run"] == child.info.run_id
    cached = Predictions.load(root / "logs/prediction_cache" / f"{key}.npz")
    assert cached.probs.shape == (metrics["test/n_images"], 2) and len(cached.paths) == len(cached.labels)


def test_segmenter_metrics_and_min_area_sweep_reuse_the_cache(trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    root, parent = trained["root"], trained["seg_run"]
    first = evaluate(_eval_cfg(root, f"run_id={parent}", "log_predictions=never"))
    for key in ("test/dice", "test/iou", "test/pixel_recall", "test/recall_bad", "test/precision_bad"):
        assert first[key] == pytest.approx(trained["seg_metrics"][key], abs=1e-5), key
    client = _client(root)
    key = _children(client, parent)[0].data.tags["scratchlab.prediction_cache"]
    cache = root / "logs/prediction_cache" / f"{key}.npz"
    stamp = cache.stat().st_mtime_ns

    def no_network(*args, **kwargs):
        raise AssertionError("the model was loaded although its predictions are cached")

    monkeypatch.setattr("scratchlab.builders.load_task", no_network)
    monkeypatch.setattr("scratchlab.evaluation.cache.compute_predictions", no_network)
    nothing_bad = evaluate(_eval_cfg(root, f"run_id={parent}", "decision.min_area=100000", "log_predictions=never"))
    assert nothing_bad["test/recall_bad"] == 0.0
    assert nothing_bad["test/dice"] == pytest.approx(first["test/dice"]), "pixel metrics do not depend on min_area"
    evaluate(_eval_cfg(root, f"run_id={parent}", "decision.mask_threshold=0.9", "log_predictions=never"))
    assert cache.stat().st_mtime_ns == stamp
    runs = _children(client, parent)
    assert [r.data.tags["scratchlab.cache_hit"] for r in runs] == ["false", "true", "true"]
    assert runs[1].info.run_name == "eval-test-mask_threshold=0.5-min_area=100000"
    # the image score too is re-scored from the cache: AUROC of the mean of each map's 200 most probable pixels
    top200 = evaluate(_eval_cfg(root, f"run_id={parent}", "decision.score_top_k=200", "log_predictions=never"))
    preds = Predictions.load(cache)
    labels = torch.from_numpy((preds.labels > 0).astype(np.int64))
    auroc = {k: float(binary_auroc(torch.tensor([v.score for v in preds.verdicts(DecisionParams(score_top_k=k))]),
                                   labels)) for k in (1, 200)}
    assert auroc[1] != auroc[200], "the maximum and the top-200 mean rank these images alike: no evidence"
    assert (first["test/auroc"], top200["test/auroc"]) == pytest.approx((auroc[1], auroc[200]))
    assert top200["test/dice"] == pytest.approx(first["test/dice"])  # the rule and the pixels are unchanged


def test_threshold_multirun_cli_fills_the_cache_once(trained: dict, tmp_path: Path) -> None:
    root, parent = trained["root"], trained["cls_run"]
    result = run_cli("scratchlab.evaluate", ["--multirun", f"paths.root_dir={root}", f"run_id={parent}",
                                             "decision.threshold=0.0,1.0", f"cache_dir={tmp_path}/cache",
                                             "log_predictions=never", "name=sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    client = _client(root)
    runs = [r for r in _children(client, parent) if r.info.experiment_id == client.get_experiment_by_name(
        "sweep").experiment_id]
    assert [r.info.run_name for r in runs] == ["eval-test-threshold=0", "eval-test-threshold=1"]
    assert [r.data.tags["scratchlab.cache_hit"] for r in runs] == ["false", "true"], "job 1 re-uses job 0's cache"
    assert runs[0].data.metrics["test/recall_bad"] == 1.0 and runs[1].data.metrics["test/recall_bad"] == 0.0
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_evaluate_by_ckpt_without_mlflow_run(trained: dict, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(trained["cls_ckpt"], ckpt)
    metrics = evaluate(_eval_cfg(tmp_path, f"ckpt={ckpt}", "split=val", "+data.batch_size=3"))
    assert 0.0 <= metrics["val/acc"] <= 1.0 and metrics["val/n_images"] > 0
    client = _client(tmp_path)
    [run] = client.search_runs([client.get_experiment_by_name("evaluate").experiment_id])
    assert "mlflow.parentRunId" not in run.data.tags and run.data.tags["scratchlab.evaluated_run"] == ""
    assert run.data.tags["scratchlab.checkpoint"] == str(ckpt) and run.data.tags["scratchlab.split"] == "val"


def test_other_data_is_resized_as_the_model_was_trained(tmp_path: Path, tiny_dataset: Path) -> None:
    """A composed data option resizes as the checkpoint says (not as the option's default would), and a
    data.resize that contradicts the checkpoint is an error, never a silently other preprocessing."""
    overrides = [*tiny_overrides(tmp_path), "data.resize=letterbox"]
    ckpt = save_checkpoint(build_task(compose("train", overrides), ["good", "bad"]), tmp_path / "letterbox.ckpt")
    other_data = [f"ckpt={ckpt}", "data=folder", f"data.root={tiny_dataset}"]
    run_cfg = evaluation_config(ModelSource.from_checkpoint(ckpt), _eval_cfg(tmp_path, *other_data))
    assert (run_cfg.data.name, run_cfg.data.resize) == ("folder", "letterbox")
    contradictions = {"another source": [*other_data, "data.resize=stretch"],
                      "the run's own data": [f"ckpt={ckpt}", "+data.resize=stretch"]}
    for overrides in contradictions.values():
        with pytest.raises(ConfigError, match="resize=stretch, but the model was trained on image_size=32, "
                                              "resize=letterbox; drop data.resize"):
            evaluate(_eval_cfg(tmp_path, *overrides))
    experiment = _client(tmp_path).get_experiment_by_name("evaluate")
    assert experiment is None or not _client(tmp_path).search_runs([experiment.experiment_id]), "no run was opened"


@pytest.mark.parametrize(("typo", "named"), [("+data.batch_sise=3", "+data.batch_sise is a setting no data set reads"),
                                              ("+data.split.tset=0.5", "+data.split.tset is a setting no data set")])
def test_a_misspelt_data_tweak_is_refused_before_any_run(trained: dict, tmp_path: Path, typo: str,
                                                         named: str) -> None:
    with pytest.raises(ConfigError, match="check the spelling") as err:
        evaluate(_eval_cfg(tmp_path, f"ckpt={trained['cls_ckpt']}", "split=val", typo))
    assert named in str(err.value)
    experiment = _client(tmp_path).get_experiment_by_name("evaluate")
    assert experiment is None or not _client(tmp_path).search_runs([experiment.experiment_id]), "no run was opened"


def test_chooser_on_constructed_scores() -> None:
    scores = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95])
    is_bad = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 1], bool)  # 5 bad
    # recall of bad at t (bad iff score >= t): 0.95 -> 1/5, 0.8 -> 2/5, 0.6 -> 3/5, 0.4 -> 4/5, 0.2 -> 5/5
    for target, expected in ((0.8, 0.4), (0.6, 0.6), (1.0, 0.2), (0.2, 0.95)):
        choice = choose_threshold(scores, is_bad, "target_recall", target)
        assert choice.threshold == expected and choice.recall >= target and choice.target_met
    brute = {t: 2 * ((scores >= t) & is_bad).sum() / ((scores >= t).sum() + is_bad.sum()) for t in scores}
    best = choose_threshold(scores, is_bad, "best_f1")
    assert best.f1 == pytest.approx(max(brute.values()))
    assert best.threshold == max(t for t, f in brute.items() if f == pytest.approx(max(brute.values())))
    # area scores: an image without scratch pixels (area 0) is never bad, so recall 1 may be out of reach
    areas, bad = np.array([0, 0, 5, 12, 0, 40]), np.array([0, 1, 1, 0, 0, 1], bool)
    curve = threshold_curve(areas, bad, positive_only=True)
    assert curve.thresholds.tolist() == [5, 12, 40] and curve.recall.max() == pytest.approx(2 / 3)
    unreachable = choose_threshold(areas, bad, "target_recall", 0.9, positive_only=True)
    assert not unreachable.target_met and unreachable.threshold == 5


def test_chooser_writes_operating_point_into_checkpoint(trained: dict, tmp_path: Path) -> None:
    ckpt = tmp_path / "best.ckpt"
    shutil.copy(trained["cls_ckpt"], ckpt)
    root = trained["root"]
    metrics = evaluate(_eval_cfg(root, f"ckpt={ckpt}", "choose=target_recall", "decision.target_recall=1.0"))
    point = read_checkpoint(ckpt).operating_point
    assert point["method"] == "target_recall" and point["target_met"] and point["original"]["threshold"] == 0.5
    # recall 1 on the validation split: the highest such threshold is the lowest P(bad) of a bad image
    val = Predictions.load(root / "logs/prediction_cache" / f"{point['prediction_cache']}.npz")
    assert val.meta["split"] == "val"
    expected = float(val.probs[val.labels == 1, 1].min())
    assert point["threshold"] == pytest.approx(expected) and metrics["val/recall_bad"] == 1.0
    client = _client(root)
    run = client.get_run(point["evaluation_run"])
    assert {"operating_point.json", "operating_point.png"} <= _artifacts(client, run.info.run_id)
    assert run.info.run_name.startswith("eval-test-target_recall-threshold=")
    assert run.data.params["decision.threshold"] == str(point["threshold"])
    from scratchlab.predictor import Predictor

    assert Predictor.from_checkpoint(ckpt).decision.threshold == pytest.approx(expected)


def test_segmenter_chooser_picks_min_area(trained: dict, tmp_path: Path) -> None:
    ckpt = tmp_path / "seg.ckpt"
    shutil.copy(trained["seg_ckpt"], ckpt)
    evaluate(_eval_cfg(trained["root"], f"ckpt={ckpt}", "choose=best_f1", "choose_mask_thresholds=[0.3,0.5]",
                       "log_predictions=never"))
    point = read_checkpoint(ckpt).operating_point
    assert point["method"] == "best_f1" and point["mask_threshold"] in (0.3, 0.5)
    assert point["min_area"] >= 1 and point["min_area_ratio"] is None and "threshold" not in point


def test_bad_arguments_exit_2_with_one_error_line(trained: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        run_or_exit(evaluate, _eval_cfg(tmp_path))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1 and "run_id" in errors[0]
    result = run_cli("scratchlab.evaluate", [f"paths.root_dir={trained['root']}", "run_id=no_such_run"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-1000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no_such_run" in errors[0] and "Traceback" not in result.stderr


def test_summary_line_is_one_line_in_a_narrow_terminal(tmp_path: Path, tiny_dataset: Path) -> None:
    """Rich wraps its output at the terminal's width; the run line is printed plainly, whole."""
    run_training(compose("train", tiny_overrides(tmp_path, tiny_dataset)))
    ckpt = tmp_path / "logs" / "run" / "checkpoints" / "best.ckpt"
    result = subprocess.run([sys.executable, "-m", "scratchlab.evaluate", f"ckpt={ckpt}", f"paths.root_dir={tmp_path}"],
                            cwd=tmp_path, capture_output=True, text=True, env={**cli_env(), "COLUMNS": "40"})
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("MLflow run: "))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    trained = client.search_runs([client.get_experiment_by_name("scratchlab").experiment_id],
                                 order_by=["attributes.start_time ASC"])[0].info.run_id
    assert "in experiment 'scratchlab'" in line and line.rstrip().endswith(f"child of {trained}")
