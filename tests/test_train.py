"""End-to-end training: MLflow runs with metrics and artifacts, seeds, failures, the CLI, multirun and DDP."""
from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from scratchlab import training
from scratchlab.config import compose
from scratchlab.errors import DataError
from scratchlab.training import run_training
from tests.conftest import PROJECT_DIR, run_cli, tiny_overrides, write_tiny_folder_dataset

EXPECTED_ARTIFACTS = {"classification_report.txt", "confusion_matrix.png", "precision_recall_curve.png",
                      "training_curves.png", "split.csv", "config/config.yaml", "checkpoints/best.ckpt"}


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def _runs(root: Path, experiment: str | None = None):
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns/mlflow.db")
    names = [experiment] if experiment else [e.name for e in MlflowClient().search_experiments()]
    return mlflow.search_runs(experiment_names=names)


def test_tiny_run_is_logged_to_mlflow(tmp_path: Path, tiny_dataset: Path) -> None:
    metrics = run_training(compose("train", tiny_overrides(tmp_path, tiny_dataset)))
    runs = _runs(tmp_path, "scratchlab")
    assert len(runs) == 1 and runs.status[0] == "FINISHED"
    run = runs.iloc[0]
    for key in ("test/recall_bad", "test/precision_bad", "test/f1_good", "test/auroc", "test/acc", "val/loss"):
        assert 0.0 <= run[f"metrics.{key}"] <= max(1.0, run[f"metrics.{key}"])
    assert run["metrics.test/recall_bad"] == pytest.approx(metrics["test/recall_bad"])
    assert run["params.model.name"] == "cnn" and run["params.optimizer.lr"] == "0.001"
    assert len(run["tags.mlflow.source.git.commit"]) == 40
    client = MlflowClient()
    assert len(client.get_metric_history(run.run_id, "val/loss")) == 2, "one validation loss per epoch"
    assert len(client.get_metric_history(run.run_id, "train/loss")) == 2
    assert EXPECTED_ARTIFACTS <= _artifacts(client, run.run_id)
    report = Path(client.download_artifacts(run.run_id, "classification_report.txt", str(tmp_path))).read_text()
    assert "bad" in report and "precision" in report and "threshold" in report


def test_same_seed_repeats_the_same_metrics(tmp_path: Path, tiny_dataset: Path) -> None:
    first = run_training(compose("train", tiny_overrides(tmp_path, tiny_dataset, "a") + ["seed=7"]))
    second = run_training(compose("train", tiny_overrides(tmp_path, tiny_dataset, "b") + ["seed=7"]))
    assert first == second


def test_runs_in_one_process_go_to_their_own_stores(tmp_path: Path, tiny_dataset: Path) -> None:
    """Two runs in one Python session (a notebook) with other ``paths.root_dir`` each land in their own store: the
    first run leaves no process-wide tracking URI behind that the second would take for the user's choice."""
    import os

    for name in ("first", "second"):
        run_training(compose("train", tiny_overrides(tmp_path / name, tiny_dataset) + ["trainer.max_epochs=1"]))
        assert "MLFLOW_TRACKING_URI" not in os.environ
    for name in ("first", "second"):
        client = MlflowClient(f"sqlite:///{tmp_path / name}/mlruns/mlflow.db")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED", (name, len(runs))


def test_failing_run_is_marked_failed(tmp_path: Path, tiny_dataset: Path, monkeypatch) -> None:
    """A crash during training (here: a training step that raises) ends the run FAILED with its traceback."""
    from scratchlab.tasks.classification import ClassificationTask

    def broken_step(self, batch: dict, batch_idx: int):
        raise RuntimeError("a training step broke")

    monkeypatch.setattr(ClassificationTask, "training_step", broken_step)
    with pytest.raises(RuntimeError, match="a training step broke"):
        run_training(compose("train", tiny_overrides(tmp_path, tiny_dataset)))
    runs = _runs(tmp_path, "scratchlab")
    assert runs.status.tolist() == ["FAILED"]
    error = Path(MlflowClient().download_artifacts(runs.run_id[0], "error.txt", str(tmp_path))).read_text()
    assert "a training step broke" in error


def test_unreadable_images_found_while_splitting_are_one_error_and_no_run(tmp_path: Path) -> None:
    """With the data check off, unreadable images still stop the run before it opens."""
    data = write_tiny_folder_dataset(tmp_path / "data", n_good=12, n_bad=6)
    for path in sorted((data / "good").iterdir()):
        path.write_bytes(b"not a png")
    with pytest.raises(DataError, match="g0"):
        run_training(compose("train", tiny_overrides(tmp_path, data) + ["data.check=false"]))
    assert _runs(tmp_path).empty


def test_help_lists_groups_and_cfg_job_prints_config(tmp_path: Path) -> None:
    help_text = run_cli("scratchlab.train", ["--help"], cwd=tmp_path).stdout
    for group in ("data", "model", "loss", "optimizer", "scheduler", "trainer", "logger", "callbacks", "paths",
                  "experiment", "decision", "augment"):
        assert f"\n{group}: " in help_text, group
    assert "convnext, " in help_text or "convnext\n" in help_text
    job = run_cli("scratchlab.train", ["--cfg", "job", "model=convnext", "optimizer=adamw"], cwd=tmp_path)
    assert job.returncode == 0 and "convnext_tiny" in job.stdout and "torch.optim.AdamW" in job.stdout


def test_unknown_option_fails_with_hydra_message(tmp_path: Path) -> None:
    result = run_cli("scratchlab.train", ["model=no_such_model"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/no_such_model'" in result.stderr and "Available options" in result.stderr


@pytest.mark.parametrize("mistake", ["data.root", "loss"])
def test_bad_data_or_model_is_one_clear_line_and_no_failed_run(tmp_path: Path, tiny_dataset: Path,
                                                              mistake: str) -> None:
    """Data and model are checked before the MLflow run opens: a mistake leaves no FAILED run behind."""
    data = tmp_path / "missing" if mistake == "data.root" else tiny_dataset
    extra = ["loss=dice"] if mistake == "loss" else []
    result = run_cli("scratchlab.train", [*tiny_overrides(tmp_path, data), *extra], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and ("missing" if mistake == "data.root" else "segmentation loss") in lines[0]
    assert "Traceback" not in result.stderr
    assert _runs(tmp_path).empty


def test_multirun_groups_jobs_in_one_experiment(tmp_path: Path, tiny_dataset: Path) -> None:
    overrides = [o for o in tiny_overrides(tmp_path, tiny_dataset) if not o.startswith(("hydra.run", "model="))]
    result = run_cli("scratchlab.train", ["--multirun", "model=cnn,mobilenetv2", "optimizer.lr=1e-3,3e-4",
                                          "trainer.max_epochs=1", *overrides], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    everything = _runs(tmp_path)
    assert everything.experiment_id.nunique() == 1
    parent = everything[everything["tags.scratchlab.role"] == "sweep"]
    runs = everything[everything["tags.scratchlab.role"] != "sweep"]
    assert len(parent) == 1 and len(runs) == 4 and set(runs.status) == {"FINISHED"}
    assert set(runs["tags.mlflow.parentRunId"]) == {parent.run_id.iloc[0]}
    assert {(m, lr) for m, lr in zip(runs["params.model.name"], runs["params.optimizer.lr"])} == {
        ("cnn", "0.001"), ("cnn", "0.0003"), ("mobilenetv2_100", "0.001"), ("mobilenetv2_100", "0.0003")}


def test_ddp_runs_two_processes_into_one_run(tmp_path: Path, tiny_dataset: Path) -> None:
    result = run_cli("scratchlab.train", [*tiny_overrides(tmp_path, tiny_dataset), "trainer=ddp",
                                          "trainer.max_epochs=1"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = _runs(tmp_path, "scratchlab")
    assert len(runs) == 1 and runs.status[0] == "FINISHED"
    assert runs["tags.world_size"][0] == "2"
    assert "metrics.test/recall_bad" in runs.columns


def test_project_dir_is_the_checkout() -> None:
    assert (PROJECT_DIR / "conf" / "train.yaml").is_file()


@pytest.mark.parametrize(("args", "expected"), [(["data=folder"], "data.root"),
                                                (["data=neu", "data.root=.", "data.task=nope"], "nope")])
def test_config_mistakes_are_one_clear_line(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_cli("scratchlab.train", [f"paths.root_dir={tmp_path}", *args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-1000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in result.stderr


def test_bf16_cpu_training_keeps_fp32_weights_and_warns_where_emulated(tmp_path: Path, tiny_dataset: Path,
                                                                          monkeypatch, caplog) -> None:
    """trainer=cpu_bf16 trains in bf16-mixed (fp32 weights in the checkpoint); a CPU without native bf16 is told
    that it is slower there, and plain trainer=cpu is never warned."""
    from scratchlab.checkpoints import load_file

    monkeypatch.setattr(training, "native_cpu_bf16", lambda: False)
    cfg = compose("train", tiny_overrides(tmp_path, tiny_dataset) + ["trainer=cpu_bf16"])
    assert cfg.trainer.precision == "bf16-mixed"
    with caplog.at_level(logging.WARNING, logger="scratchlab.training"):
        run_training(cfg)
    assert "without native bf16" in caplog.text and "use trainer=cpu" in caplog.text
    runs = _runs(tmp_path, "scratchlab")
    assert list(runs.status) == ["FINISHED"] and runs.iloc[0]["params.trainer.precision"] == "bf16-mixed"
    state = load_file(tmp_path / "logs" / "run" / "checkpoints" / "best.ckpt")["state_dict"]
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scratchlab.training"):
        training.warn_emulated_bf16(compose("train", ["trainer=cpu"]))
        monkeypatch.setattr(training, "native_cpu_bf16", lambda: True)
        training.warn_emulated_bf16(cfg)
    assert "bf16" not in caplog.text
