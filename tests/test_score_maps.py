"""benchmarks/score_maps.py draws a segmenter's highest-scored good and lowest-scored bad images with their maps."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import pytest
import torch

from scratchlab.builders import build_task
from scratchlab.checkpoints import save_checkpoint
from scratchlab.config import compose
from tests.conftest import PROJECT_DIR, tiny_overrides


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    spec = importlib.util.spec_from_file_location("score_maps", PROJECT_DIR / "benchmarks" / "score_maps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["score_maps.py", *args])
    module.main()


def test_score_maps_draws_the_extremes_of_each_group(tmp_path: Path, tiny_dataset: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    overrides = ["model=unet", "model.encoder_name=resnet18", "model.image_size=32", "data.resize=stretch"]
    ckpt = save_checkpoint(build_task(compose("train", tiny_overrides(tmp_path) + overrides), ["good", "bad"]),
                           tmp_path / "unet.ckpt")
    out = tmp_path / "maps.png"
    args = [str(ckpt), "--good", str(tiny_dataset / "good"), "--bad", str(tiny_dataset / "bad"), "--every", "2",
            "--show", "3", "--out", str(out)]
    _run(monkeypatch, *args)
    printed = capsys.readouterr().out
    assert "good: 12 images" in printed and "bad: 12 images" in printed
    drawn = cv2.imread(str(out))
    assert drawn.shape == (3 * 200, 2 * 2 * 200, 3)  # 3 rows; image + map for each of the two groups
    with pytest.raises(SystemExit):  # never over an existing file
        _run(monkeypatch, *args)
    assert "exists" in capsys.readouterr().err
