"""Data configs (``conf/data/*.yaml``) compose and instantiate; NEU multiclass and magnetic tile train end to end."""
from __future__ import annotations

from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf.errors import MissingMandatoryValue

from scratchlab.config import CONFIG_DIR, compose
from scratchlab.data.sources.magnetic_tile import MT_CLASSES
from scratchlab.data.sources.neu import NEU_CLASSES
from scratchlab.errors import ConfigError
from scratchlab.training import run_training
from tests.conftest import tiny_overrides

DATA_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml") if p.stem != "base")  # base: not a data set
# Data sets read from a folder of the user's declare ``root: ???``; the synthetic ones render their own.
ROOTED = [n for n in DATA_CONFIGS if any(line.startswith("root:") for line in
                                         (CONFIG_DIR / "data" / f"{n}.yaml").read_text().splitlines())]


def _textured(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    """A small grayscale texture that differs per class (stripes at a class-specific angle) plus noise."""
    yy, xx = np.mgrid[:size, :size]
    angle = np.pi * kind / 6
    stripes = 128 + 80 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.8)
    return (stripes + rng.normal(0, 12, (size, size))).clip(0, 255).astype(np.uint8)


def write_tiny_neu_cls(root: Path, per_class: int = 8, size: int = 24) -> Path:
    """NEU-CLS layout: one folder per class, neutral file names (the class comes from the folder)."""
    rng = np.random.default_rng(1)
    for k, cls in enumerate(NEU_CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / cls / f"img_{i:03d}.bmp"), _textured(rng, size, k))
    return root


def write_tiny_magnetic_tile(root: Path, n_free: int = 16, per_defect: int = 3, size: int = 32) -> Path:
    """``MT_<class>/Imgs/<name>.jpg`` with a soft-edged ``<name>.png`` mask beside each defect image."""
    rng = np.random.default_rng(2)
    for cls in MT_CLASSES:
        imgs = root / f"MT_{cls}" / "Imgs"
        imgs.mkdir(parents=True)
        for i in range(n_free if cls == "Free" else per_defect):
            img = _textured(rng, size, 0)
            name = f"exp{i}_{cls}"
            if cls != "Free":
                mask = np.zeros((size, size), np.uint8)
                x = int(rng.integers(4, size - 4))
                cv2.line(mask, (x, 0), (x, size - 1), 255, 3)
                mask = cv2.GaussianBlur(mask, (5, 5), 0)  # soft edges, as the real masks
                img = np.where(mask >= 128, 20, img).astype(np.uint8)
                cv2.imwrite(str(imgs / f"{name}.png"), mask)
            cv2.imwrite(str(imgs / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return root


def _single_run(root: Path):
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["scratchlab"])
    assert len(runs) == 1 and runs.status[0] == "FINISHED"
    return runs.iloc[0]


def _report(root: Path, run_id: str) -> str:
    return Path(MlflowClient().download_artifacts(run_id, "classification_report.txt", str(root))).read_text()


def _report_rows(report: str) -> dict[str, int]:
    """Class name -> support, from the per-class rows of a classification report."""
    rows = {}
    for line in report.splitlines()[1:]:
        parts = line.split()
        if not parts:
            break
        rows[parts[0]] = int(parts[-1])
    return rows


# --- composing ----------------------------------------------------------------------------------------

def test_rooted_data_configs_are_found() -> None:
    assert {"folder", "neu", "magnetic_tile", "via"} <= set(ROOTED)
    assert "text_scratch" in DATA_CONFIGS and "text_scratch" not in ROOTED


@pytest.mark.parametrize("name", ROOTED)
def test_data_config_composes_with_a_root(tmp_path: Path, name: str) -> None:
    cfg = compose("train", [f"data={name}", f"data.root={tmp_path}", f"hydra.run.dir={tmp_path}/run"])
    assert cfg.data.name == name and cfg.data.source.root == str(tmp_path)
    assert cfg.data.batch_size == 32 and cfg.data.split.train == 0.7  # the shared defaults of conf/data/base.yaml
    source = instantiate(cfg.data.source)
    assert Path(source.root) == tmp_path and callable(source.load)


@pytest.mark.parametrize("name", ROOTED)
def test_data_config_without_root_names_the_missing_key(tmp_path: Path, name: str) -> None:
    cfg = compose("train", [f"data={name}", f"hydra.run.dir={tmp_path}/run"])
    with pytest.raises(MissingMandatoryValue, match="data.root"):
        _ = cfg.data.root


def test_task_and_via_options_reach_the_source(tmp_path: Path) -> None:
    run = f"hydra.run.dir={tmp_path}/run"
    assert instantiate(compose("train", ["data=neu", "data.root=r", run]).data.source).task == "scratch_vs_rest"
    neu = instantiate(compose("train", ["data=neu", "data.root=r", "data.task=multiclass", run]).data.source)
    assert neu.task == "multiclass"
    mt = compose("train", ["data=magnetic_tile", "data.root=r", "data.task=multiclass", "data.mask_threshold=100", run])
    mt_source = instantiate(mt.data.source)
    assert (mt_source.task, mt_source.mask_threshold) == ("multiclass", 100)
    via = instantiate(compose("train", ["data=via", f"data.root={tmp_path}", "data.annotations=a/regions.json",
                                        "data.stroke_width=3", run]).data.source)
    assert via.annotations == tmp_path / "a" / "regions.json" and via.stroke_width == 3
    with pytest.raises(InstantiationException, match="NEU task 'nope' is unknown"):  # Hydra wraps the ConfigError
        instantiate(compose("train", ["data=neu", "data.root=r", "data.task=nope", run]).data.source)


# --- training end to end --------------------------------------------------------------------------------

def test_neu_multiclass_trains_with_per_class_metrics(tmp_path: Path) -> None:
    data = write_tiny_neu_cls(tmp_path / "neu")
    overrides = tiny_overrides(tmp_path) + ["data=neu", f"data.root={data}", "data.task=multiclass", "loss=ce",
                                            "trainer.max_epochs=1"]
    metrics = run_training(compose("train", overrides))
    run = _single_run(tmp_path)
    for cls in NEU_CLASSES:
        for key in ("precision", "recall", "f1"):
            assert 0.0 <= run[f"metrics.test/{key}_{cls}"] <= 1.0, (key, cls)
    assert run["metrics.test/recall_scratches"] == pytest.approx(metrics["test/recall_scratches"])
    assert 0.0 <= run["metrics.test/f1_macro"] <= 1.0 and 0.0 <= run["metrics.test/auroc"] <= 1.0
    assert "metrics.test/recall_bad" not in run.index  # good/bad names are for binary tasks only
    rows = _report_rows(_report(tmp_path, run.run_id))
    assert list(rows) == NEU_CLASSES
    split = Path(MlflowClient().download_artifacts(run.run_id, "split.csv", str(tmp_path))).read_text()
    assert sum(rows.values()) == split.count(",test") > 0  # every test image is in the report's support


def test_neu_multiclass_with_bce_is_a_config_error(tmp_path: Path) -> None:
    data = write_tiny_neu_cls(tmp_path / "neu")
    overrides = tiny_overrides(tmp_path) + ["data=neu", f"data.root={data}", "data.task=multiclass", "loss=bce"]
    with pytest.raises(ConfigError, match="loss=ce"):
        run_training(compose("train", overrides))


def test_magnetic_tile_trains_binary(tmp_path: Path) -> None:
    data = write_tiny_magnetic_tile(tmp_path / "mt")
    overrides = tiny_overrides(tmp_path) + ["data=magnetic_tile", f"data.root={data}", "trainer.max_epochs=1"]
    metrics = run_training(compose("train", overrides))
    run = _single_run(tmp_path)
    for key in ("test/recall_bad", "test/precision_bad", "test/f1_good", "test/average_precision"):
        assert 0.0 <= run[f"metrics.{key}"] <= 1.0, key
    assert run["metrics.test/recall_bad"] == pytest.approx(metrics["test/recall_bad"])
    assert run["params.data.name"] == "magnetic_tile" and run["params.data.task"] == "binary"
    rows = _report_rows(_report(tmp_path, run.run_id))
    assert list(rows) == ["good", "bad"] and rows["bad"] > 0 and rows["good"] > 0
