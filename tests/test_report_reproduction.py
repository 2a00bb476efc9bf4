"""Runs carry where their weights came from; the report shows it and tells reproductions from smoke runs."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scratchlab.config import compose
from scratchlab.reporting import make_report
from scratchlab.tracking import mlflow_run


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["row"]: r for r in csv.DictReader(f)}


def test_runs_are_tagged_with_their_weights_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")  # restored afterwards
    base = [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", "experiment=resnet50"]
    for extra, expected in (([], "hub/cache"), (["profile=cpu"], "random"),
                            ([f"model.weights_path={tmp_path}/w.pth"], "file")):
        cfg = compose("train", base + extra)
        with mlflow_run(cfg) as run:
            tags = run.client.get_run(run.run_id).data.tags
        assert tags["weights_source"] == expected, extra
        assert ("smoke" in tags) == (extra == ["profile=cpu"])


def test_report_shows_weights_and_marks_smoke_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.create_experiment("reproduce", artifact_location=(tmp_path / "artifacts").as_uri())
    runs = {
        "full": {"weights_source": "hub/cache", "hydra.overrides": "experiment=convnext_tiny trainer=gpu"},
        "cpu": {"weights_source": "random", "smoke": "profile=cpu",
                "hydra.overrides": "experiment=convnext_tiny profile=cpu"},
        "short": {"weights_source": "random", "hydra.overrides": "experiment=custom_cnn trainer.max_epochs=3 "
                                                                 "data.source.count=500 model.pretrained=false"},
    }
    for row, tags in runs.items():
        run = client.create_run(exp, run_name=row, tags={"study": "reproduce", "row": row, **tags})
        client.log_param(run.info.run_id, "reported.test/acc", "0.99")
        client.log_metric(run.info.run_id, "test/acc", 0.9)
        client.set_terminated(run.info.run_id, "FINISHED")
    make_report(compose("report", [f"paths.root_dir={tmp_path}", f"output={tmp_path}/out"]))
    rows = _rows(tmp_path / "out/reproduce.csv")
    assert {r: rows[r]["weights"] for r in rows} == {"full": "hub/cache", "cpu": "random", "short": "random"}
    assert rows["full"]["reproduction"] == "yes"
    assert rows["cpu"]["reproduction"] == "no (smoke: profile=cpu)"
    assert rows["short"]["reproduction"] == "no (smoke: trainer.max_epochs=3 data.source.count=500)"
    assert "no (smoke: profile=cpu)" in (tmp_path / "out/reproduce.md").read_text()


def test_evaluation_runs_take_the_verdict_of_the_run_they_evaluated(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.create_experiment("reproduce", artifact_location=(tmp_path / "artifacts").as_uri())

    def run(name: str, tags: dict) -> str:
        run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
        client.log_metric(run_id, "test/acc", 0.9)
        client.set_terminated(run_id, "FINISHED")
        return run_id

    trained = {"cpu": run("cpu", {"smoke": "profile=cpu", "hydra.overrides": "experiment=convnext_tiny profile=cpu"}),
               "short": run("short", {"hydra.overrides": "experiment=custom_cnn trainer.max_epochs=3"}),
               "full": run("full", {"hydra.overrides": "experiment=convnext_tiny trainer=gpu"})}
    trained["gone"] = "0" * 32  # an evaluated run MLflow no longer has
    for name, parent in trained.items():  # tagged as python -m scratchlab.evaluate tags its runs
        run(f"eval-{name}", {"scratchlab.evaluated_run": parent, "mlflow.parentRunId": parent,
                             "scratchlab.split": "test", "hydra.overrides": f"run_id={parent} split=test"})
    run("eval-ckpt", {"scratchlab.evaluated_run": "", "scratchlab.split": "test", "hydra.overrides": "ckpt=m.ckpt"})
    run("sweep-child", {"mlflow.parentRunId": trained["cpu"], "hydra.overrides": "optimizer.lr=1e-3"})
    expected = {"eval-cpu": "no (smoke: profile=cpu)", "eval-short": "no (smoke: trainer.max_epochs=3)",
                "eval-full": "yes", "eval-gone": f"unknown (evaluated run {'0' * 32} not found)", "eval-ckpt": "yes"}
    base = [f"paths.root_dir={tmp_path}", "title=runs"]
    make_report(compose("report", [*base, f"output={tmp_path}/all", "experiments=[reproduce]",
                                   "include_evaluations=true"]))
    rows = _rows(tmp_path / "all/runs.csv")
    assert {r: rows[r]["reproduction"] for r in rows} == {**expected, "cpu": "no (smoke: profile=cpu)",
                                                           "short": "no (smoke: trainer.max_epochs=3)",
                                                           "full": "yes", "sweep-child": "yes"}
    # only the evaluation runs selected: the runs they evaluated are read from MLflow
    make_report(compose("report", [*base, f"output={tmp_path}/evals",
                                   "filter=\"tags.`scratchlab.split` = 'test'\""]))
    rows = _rows(tmp_path / "evals/runs.csv")
    assert {r: rows[r]["reproduction"] for r in rows} == expected
