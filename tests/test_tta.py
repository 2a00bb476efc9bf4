"""model.tta: outputs are the average over the input and its flipped copies (maps flipped back first)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlab.builders import build_task
from scratchlab.config import compose
from scratchlab.errors import ConfigError
from scratchlab.tasks.base import BaseTask
from tests.conftest import tiny_overrides

MODELS = {"cnn": ["model=cnn", "model.image_size=32"],
          "unet": ["model=unet", "model.encoder_name=resnet18", "model.image_size=64", "data.resize=stretch"]}


def _task(tmp_path: Path, model: str, flips: str) -> BaseTask:
    torch.manual_seed(0)  # the same random (asymmetric) network with and without flips
    cfg = compose("train", tiny_overrides(tmp_path) + MODELS[model] + [f"model.tta={flips}"])
    return build_task(cfg, ["good", "bad"]).eval()


@pytest.mark.parametrize("model", list(MODELS))
def test_flips_average_exactly(tmp_path: Path, model: str) -> None:
    plain, tta = _task(tmp_path, model, "[]"), _task(tmp_path, model, "[hflip,vflip,hvflip]")
    assert tta.spec.options["tta"] == ["hflip", "vflip", "hvflip"] and "tta" not in plain.spec.options
    x = torch.randn(2, 3, 64, 64) if model == "unet" else torch.randn(2, 3, 32, 32)
    sizes = [tuple(x.shape[-2:])] * 2

    def outputs(task: BaseTask, inputs: torch.Tensor) -> np.ndarray:
        key = "prob_map" if task.localizes else "probs"
        with torch.no_grad():
            return np.stack([r[key] for r in task.raw_outputs(inputs, sizes)])

    # maps come back to the input's orientation (numpy axes 1, 2 are H, W); class probabilities are averaged as is
    back = {(): lambda a: a, (3,): lambda a: a[:, :, ::-1], (2,): lambda a: a[:, ::-1],
            (2, 3): lambda a: a[:, ::-1, ::-1]}
    expected = np.mean([back[dims](outputs(plain, torch.flip(x, dims))) if plain.localizes
                        else outputs(plain, torch.flip(x, dims)) for dims in back], axis=0)
    got = outputs(tta, x)
    assert np.allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, outputs(plain, x), atol=1e-4), "an asymmetric network: the flips change outputs"


def test_flipped_image_gives_flipped_map(tmp_path: Path) -> None:
    """With every flip averaged, the map of a mirrored input is the mirrored map (without, it is not)."""
    plain, tta = _task(tmp_path, "unet", "[]"), _task(tmp_path, "unet", "[hflip,vflip,hvflip]")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for task, equivariant in ((tta, True), (plain, False)):
            net = task.inference_network()
            assert torch.allclose(net(torch.flip(x, [3])), torch.flip(net(x), [2]), atol=1e-6) == equivariant


@pytest.mark.parametrize("flips, message", [("hflip", "must be a list of flips"), ("[rot90]", "distinct flips out of"),
                                            ("[hflip,hflip]", "distinct flips out of")])
def test_bad_flips_are_config_errors(tmp_path: Path, flips: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _task(tmp_path, "cnn", flips)


def test_maskrcnn_refuses_flips(tmp_path: Path) -> None:
    cfg = compose("train", tiny_overrides(tmp_path) + ["model=maskrcnn", "+model.tta=[hflip]"])
    with pytest.raises(ConfigError, match="model.tta does not apply to model.task=instance"):
        build_task(cfg, ["good", "bad"])
