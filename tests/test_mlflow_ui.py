"""The README's `mlflow ui` command starts on the project's store and lists a run with its metrics, params
and plots (MLflow's REST API, as the UI itself reads them); where runs go; clean console output."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli, tiny_overrides

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_ui_args() -> list[str]:
    """The arguments of the README's `mlflow ui` line (after the executable)."""
    line = next(line.strip() for line in README.read_text().splitlines() if "mlflow ui --backend-store-uri" in line
                and line.strip().startswith(".venv/bin/mlflow"))
    return line.split()[1:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, payload: dict | None = None, timeout: float = 30) -> bytes:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _wait_healthy(base: str, server: subprocess.Popen, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow ui exited with {server.returncode}")
        try:
            if _get(f"{base}/health", timeout=5) == b"OK":
                return
        except OSError:
            time.sleep(1)
    pytest.fail("mlflow ui did not answer in time")


def test_readme_mlflow_ui_lists_run_metrics_params_and_plots(tmp_path: Path, tiny_dataset: Path) -> None:
    train = run_cli("scratchlab.train", tiny_overrides(tmp_path, tiny_dataset), cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    output = train.stdout + train.stderr
    assert "\r" not in output and "Tip" not in output, "no progress frames or third-party tips in a log"
    assert "epoch 1/2 (" in output and "epoch 2/2 (" in output, "one line per epoch instead"
    checkpoint = next(line for line in train.stdout.splitlines() if "best checkpoint:" in line).split(": ", 1)[1]
    assert Path(checkpoint).is_file(), "the summary never breaks a path across lines"
    assert f"--backend-store-uri sqlite:///{tmp_path}/mlruns/mlflow.db" in train.stdout
    port = _free_port()
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow_exe), *_readme_ui_args(), "--port", str(port)],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=cli_env())
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, server)
        api = f"{base}/api/2.0/mlflow"
        experiments = json.loads(_get(f"{api}/experiments/search", {"max_results": 100}))["experiments"]
        experiment = next(e for e in experiments if e["name"] == "scratchlab")
        runs = json.loads(_get(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]]}))["runs"]
        assert len(runs) == 1
        run = runs[0]
        assert run["info"]["status"] == "FINISHED"
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert {"val/loss", "val/f1_bad", "test/acc", "test/recall_bad"} <= metrics
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["model.name"] == "cnn" and params["data.name"] == "folder"
        run_id = run["info"]["run_id"]
        files = {f["path"] for f in json.loads(_get(f"{api}/artifacts/list?run_id={run_id}"))["files"]}
        plots = {"training_curves.png", "confusion_matrix.png", "precision_recall_curve.png"}
        assert plots <= files
        for plot in plots:  # the UI fetches each file through the server
            assert _get(f"{base}/get-artifact?path={plot}&run_uuid={run_id}")[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_tracking_uri_precedence_and_artifacts_beside_the_store(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from scratchlab.config import resolve_tracking_uri
    from scratchlab.tracking import get_or_create_experiment

    default = f"sqlite:///{tmp_path / 'mlruns'}/mlflow.db"
    assert resolve_tracking_uri(None, tmp_path / "mlruns") == default
    assert resolve_tracking_uri("http://team:5000", tmp_path / "mlruns") == "http://team:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/elsewhere/mlflow.db")
    assert resolve_tracking_uri("http://team:5000", tmp_path / "mlruns") == f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    (tmp_path / "elsewhere").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path}/elsewhere/mlflow.db")
    experiment = client.get_experiment(get_or_create_experiment(client, "beside"))
    assert experiment.artifact_location == (tmp_path / "elsewhere" / "artifacts" / "beside").as_uri()
    shown = subprocess.run([sys.executable, "-m", "scratchlab.train", "--help"], cwd=tmp_path, capture_output=True,
                           text=True, env={**cli_env(), "MLFLOW_TRACKING_URI": "http://team:5000"})
    assert "Compare runs: open http://team:5000" in shown.stdout, "hints name the store in use"
