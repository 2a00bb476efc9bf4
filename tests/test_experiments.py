"""Every experiment config composes (also shrunk by profile=cpu) and carries what the report needs."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from scratchlab.builders import build_task
from scratchlab.config import compose
from tests.conftest import PROJECT_DIR

EXPERIMENTS = sorted(p.stem for p in (PROJECT_DIR / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("profile", [None, "cpu"])
def test_experiment_composes(tmp_path: Path, name: str, profile: str | None) -> None:
    overrides = [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", f"experiment={name}"]
    if name.endswith("_neu"):
        overrides.append("data.root=/data/neu")
    if profile:
        overrides.append(f"profile={profile}")
    cfg = compose("train", overrides)
    assert cfg.name == "reproduce" and cfg.tags.study == "reproduce" and cfg.tags.row
    assert not OmegaConf.missing_keys(cfg)
    for key, value in cfg.reported.items():
        assert key.split("/")[0] in ("val", "test") and 0 <= value <= 1
    if profile == "cpu":
        assert cfg.trainer.max_epochs <= 2 and cfg.trainer.accelerator == "cpu"


def test_experiments_override_defaults(tmp_path: Path) -> None:
    cfg = compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", "experiment=custom_cnn"])
    assert cfg.model.name == "cnn" and cfg.model.image_size == 100 and cfg.trainer.max_epochs == 20
    assert cfg.data.split.test == 0.2 and cfg.callbacks.early_stopping is None
    assert "random_resized_crop" in cfg.data.augment
    cfg = compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", "experiment=unet_effb0"])
    assert cfg.model.task == "segmentation" and cfg.model.encoder_name == "efficientnet-b0"
    task = build_task(cfg, ["good", "bad"])
    assert type(task.loss).__name__ == "BCEDiceLoss"
