"""model=ensemble: members are checked before anything runs, and one checkpoint holds and averages them all.
(Agreement of every inference path on trained ensembles: tests/test_agreement.py.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlab.builders import build_task, load_task
from scratchlab.checkpoints import read_checkpoint, save_checkpoint
from scratchlab.config import compose
from scratchlab.errors import ConfigError
from tests.conftest import tiny_overrides

MEMBERS = {"cnn32": ["model=cnn", "model.image_size=32"], "cnn32_flips": ["model=cnn", "model.image_size=32",
                                                                       "model.tta=[hflip]"],
           "cnn48": ["model=cnn", "model.image_size=48"],
           "unet": ["model=unet", "model.encoder_name=resnet18", "model.image_size=32", "data.resize=stretch"]}


@pytest.fixture(scope="module")
def members(module_dir: Path) -> dict[str, Path]:
    """Untrained checkpoints (random weights: each member's outputs differ)."""
    root = module_dir
    out = {}
    for seed, (name, overrides) in enumerate(MEMBERS.items()):
        torch.manual_seed(seed)
        task = build_task(compose("train", tiny_overrides(root) + overrides), ["good", "bad"])
        out[name] = save_checkpoint(task, root / f"{name}.ckpt")
    return out


def _ensemble(tmp_path: Path, paths: list[Path], *overrides: str):
    cfg = compose("train", tiny_overrides(tmp_path) + ["model=ensemble", "model.image_size=32", "data.resize=stretch",
                                                       f"model.members=[{','.join(map(str, paths))}]", *overrides])
    return build_task(cfg, ["good", "bad"])


def test_checkpoint_holds_and_averages_every_member(tmp_path: Path, members: dict[str, Path]) -> None:
    names = ["cnn32", "cnn32_flips"]
    task = _ensemble(tmp_path, [members[n] for n in names])
    assert (task.spec.task, task.needs_training) == ("classification_ensemble", False)
    ckpt = read_checkpoint(save_checkpoint(task, tmp_path / "ensemble.ckpt"))
    assert [c.spec.options.get("tta") for c in ckpt.components.values()] == [None, ["hflip"]]
    images = [np.random.default_rng(i).integers(0, 256, (40 + 9 * i, 50, 3), dtype=np.uint8) for i in range(3)]
    own = [[r["probs"] for r in load_task(members[n]).predict_raw(images)] for n in names]
    got = [r["probs"] for r in load_task(ckpt).predict_raw(images)]  # rebuilt from the ensemble file alone
    assert np.allclose(got, np.mean(own, axis=0), atol=1e-6)
    assert not np.allclose(own[0], own[1], atol=1e-3), "the members differ, so the mean is not any one of them"


@pytest.mark.parametrize("names, overrides, message", [
    (["cnn32"], [], "model=ensemble needs two or more checkpoints"),
    (["cnn32", "cnn48"], [], r"model.members\[1\]=.*cnn48.ckpt prepares images otherwise than members\[0\] "
                             r"\(image_size=48 vs 32\)"),
    (["cnn32", "unet"], [], r"model.members\[1\]=.*unet.ckpt is a segmentation model"),
    (["cnn32", "cnn32_flips"], ["data.resize=pad"], "set model.image_size=32 data.resize=stretch"),
])
def test_members_that_do_not_fit_are_config_errors(tmp_path: Path, members: dict[str, Path], names: list[str],
                                                    overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _ensemble(tmp_path, [members[n] for n in names], *overrides)
