"""``choose=`` on scratchlab.train: the operating point is picked on validation right after fitting, stored in
the best checkpoint, and the run's own test step judges with it, as scratchlab.evaluate does afterwards."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scratchlab.checkpoints import read_checkpoint
from scratchlab.config import compose
from scratchlab.errors import ConfigError
from scratchlab.evaluation.job import evaluate
from scratchlab.training import run_training
from tests.conftest import tiny_overrides


def _train(root: Path, data: Path, *extra: str) -> dict[str, float]:
    base = [o for o in tiny_overrides(root, data) if not o.startswith("model")]
    return run_training(compose("train", base + list(extra)))


@pytest.mark.parametrize("method,model", [
    ("target_recall", ["model=cnn", "model.image_size=32", "decision.target_recall=1.0"]),
    ("best_f1", ["model=unet", "model.encoder_name=resnet18", "choose_mask_thresholds=[0.3,0.5]"]),
], ids=["classifier", "segmenter"])
def test_point_chosen_after_fit_is_stored_and_tested_with(tmp_path: Path, tiny_dataset: Path, method: str,
                                                          model: list) -> None:
    metrics = _train(tmp_path, tiny_dataset, f"choose={method}", *model)
    ckpt = tmp_path / "logs/run/checkpoints/best.ckpt"
    point = read_checkpoint(ckpt).operating_point
    assert point["method"] == method
    assert point["split"] == "val" and point["val_images"] > 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.get_run(point["evaluated_run"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"operating_point.json", "operating_point.png"} <= names
    assert json.loads(run.data.tags["scratchlab.operating_point"])
    if "threshold" in point:
        assert point["threshold"] != 0.5 and point["target_met"]
    else:
        assert point["mask_threshold"] in (0.3, 0.5) and point["min_area"] >= 1
    # the run's test metrics are those of the stored point: evaluate (which applies it) agrees
    again = evaluate(compose("evaluate", [f"paths.root_dir={tmp_path}", f"ckpt={ckpt}", "log_predictions=never"]))
    keys = ["test/precision_bad", "test/recall_bad", "test/f1_bad"] + (["test/dice"] if "threshold" not in point else [])
    for key in keys:
        assert again[key] == pytest.approx(metrics[key]), key


def test_choose_needs_a_target(tmp_path: Path, tiny_dataset: Path) -> None:
    with pytest.raises(ConfigError, match="decision.target_recall"):
        _train(tmp_path, tiny_dataset, "model=cnn", "choose=target_recall")
    with pytest.raises(ConfigError, match="choose='best'"):
        _train(tmp_path, tiny_dataset, "model=cnn", "choose=best")
    with pytest.raises(ConfigError, match="callbacks.model_checkpoint is off"):
        _train(tmp_path, tiny_dataset, "model=cnn", "choose=best_f1", "callbacks.model_checkpoint=null",
               "callbacks.early_stopping=null")


def test_a_segmenter_that_marks_no_pixel_is_still_tested(tmp_path: Path, tiny_dataset: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A segmenter whose every pixel starts (and stays) far below the mask threshold gives no area to choose a
    threshold from: the run warns, tags itself and is tested at its configured decision, not lost."""
    metrics = _train(tmp_path, tiny_dataset, "choose=best_f1", "model=unet", "model.encoder_name=resnet18",
                     "model.head_prior=1e-9", "optimizer.lr=1e-9")
    assert metrics["test/recall_bad"] == 0.0 and "test/dice" in metrics
    assert "operating point not chosen: no image has any scratch pixels" in caplog.text
    assert not read_checkpoint(tmp_path / "logs/run/checkpoints/best.ckpt").operating_point
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    tags = [r.data.tags.get("scratchlab.operating_point", "") for r in runs]
    assert any(t.startswith("not chosen: no image has any scratch pixels") for t in tags), tags
