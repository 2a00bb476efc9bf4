"""Shared fixtures: tiny data sets written by the tests themselves, and tiny-run configs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests write to their own stores, never to the user's server
PROJECT_DIR = Path(__file__).resolve().parent.parent


def write_tiny_folder_dataset(root: Path, n_good: int = 24, n_bad: int = 12, seed: int = 0) -> Path:
    """good/ bad/ masks/: dark bars on light paper; bad images get a bright streak through a bar."""
    rng = np.random.default_rng(seed)
    for sub in ("good", "bad", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_good + n_bad):
        h, w = int(rng.integers(40, 60)), int(rng.integers(60, 90))
        img = np.full((h, w), int(rng.integers(220, 255)), np.uint8)
        for k in range(3):
            x = 8 + k * (w // 4)
            cv2.rectangle(img, (x, 10), (x + w // 8, h - 10), int(rng.integers(20, 80)), -1)
        img = (img + rng.normal(0, 4, img.shape)).clip(0, 255).astype(np.uint8)
        if i < n_good:
            cv2.imwrite(str(root / "good" / f"g{i:03d}.png"), img)
            continue
        mask = np.zeros_like(img)
        y = int(rng.integers(15, h - 15))
        cv2.line(mask, (0, y), (w - 1, y + int(rng.integers(-5, 6))), 255, 3)
        img = np.where(mask > 0, 250, img).astype(np.uint8)
        cv2.imwrite(str(root / "bad" / f"b{i:03d}.png"), img)
        cv2.imwrite(str(root / "masks" / f"b{i:03d}.png"), mask)
    return root


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder shared by one test module's tests, deleted when the module ends (its checkpoints take GBs)."""
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder_dataset(tmp_path_factory.mktemp("tiny") / "data")


def tiny_overrides(root: Path, data_root: Path | None = None, run_dir: str = "run") -> list[str]:
    """Overrides for a seconds-long CPU run that writes everything under ``root``."""
    out = [f"paths.root_dir={root}", f"hydra.run.dir={root}/logs/{run_dir}", "model=cnn", "model.image_size=32",
           "trainer.max_epochs=2", "data.num_workers=0", "data.batch_size=8", "trainer.log_every_n_steps=1",
           "callbacks.progress_bar.refresh_rate=0"]
    if data_root is not None:
        out += ["data=folder", f"data.root={data_root}"]
    return out


@pytest.fixture(autouse=True)
def _own_tracking_store():
    """``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the process, which scratchlab puts
    first: drop it around every test so each run picks its store from its own config."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def cli_env() -> dict[str, str]:
    """The environment of a command a test starts: the tracking URI that ``mlflow.set_tracking_uri`` put in
    this process's environment is dropped, so the command picks its store as a user's would."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONWARNINGS": "ignore"}


def run_cli(module: str, args: Sequence[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would; returns the completed process (text output)."""
    env = cli_env()
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
