"""model.weights_path=PATH.ckpt: any model starts from the network of a scratchlab checkpoint (fine-tuning)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scratchlab.builders import build_task
from scratchlab.checkpoints import save_checkpoint
from scratchlab.config import compose
from scratchlab.errors import ConfigError
from scratchlab.models import build_model


def _task(tmp_path: Path, *model: str):
    cfg = compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", *model])
    return cfg, build_task(cfg, ["good", "bad"], [10, 5])


@pytest.mark.parametrize("model", [["model=cnn", "model.image_size=32"],
                                   ["model=unet", "model.encoder_name=resnet18"]], ids=["cnn", "unet"])
def test_weights_path_starts_from_a_checkpoints_network(tmp_path: Path, model: list) -> None:
    cfg, trained = _task(tmp_path, *model)
    with torch.no_grad():
        for p in trained.net.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh init would have
    ckpt = save_checkpoint(trained, tmp_path / "pre.ckpt")
    cfg.model.weights_path = str(ckpt)
    started = build_model(cfg.model, 1)
    expected = trained.net.state_dict()
    assert started.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in started.state_dict().items())
    fresh = build_model(_task(tmp_path, *model)[0].model, 1)
    assert not all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())


def test_a_fine_tuned_checkpoint_loads_without_the_file_it_started_from(tmp_path: Path) -> None:
    from scratchlab.checkpoints import read_checkpoint
    from scratchlab.tasks import task_class

    cfg, start = _task(tmp_path, "model=cnn", "model.image_size=32")
    pre = save_checkpoint(start, tmp_path / "pre.ckpt")
    cfg.model.weights_path = str(pre)
    tuned = build_task(cfg, ["good", "bad"], [10, 5])
    ckpt = save_checkpoint(tuned, tmp_path / "tuned.ckpt")
    pre.unlink()
    loaded = task_class("classification").from_checkpoint(read_checkpoint(ckpt))
    assert all(torch.equal(v, tuned.net.state_dict()[k]) for k, v in loaded.net.state_dict().items())


def test_another_network_is_one_clear_error(tmp_path: Path) -> None:
    _, small = _task(tmp_path, "model=cnn", "model.image_size=32")
    ckpt = save_checkpoint(small, tmp_path / "small.ckpt")
    cfg, _ = _task(tmp_path, "model=cnn", "model.image_size=40")
    cfg.model.weights_path = str(ckpt)
    with pytest.raises(ConfigError, match="holds another network than model= builds"):
        build_model(cfg.model, 1)
    cfg.model.weights_path = str(tmp_path / "plain.pth")
    with pytest.raises(ConfigError, match="loads weights only from a scratchlab checkpoint"):
        build_model(cfg.model, 1)
