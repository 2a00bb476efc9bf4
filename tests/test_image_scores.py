"""benchmarks/image_scores.py ranks images by candidate scores computed from a segmenter's probability maps."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlab.builders import build_task
from scratchlab.checkpoints import save_checkpoint
from scratchlab.config import compose
from tests.conftest import PROJECT_DIR, tiny_overrides


def _image_scores():
    spec = importlib.util.spec_from_file_location("image_scores", PROJECT_DIR / "benchmarks" / "image_scores.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_hot_pixel_misleads_the_maximum_but_not_the_top_k_mean() -> None:
    """Good maps with one hot pixel, bad ones with a 10x10 patch at 0.8: the maximum ranks every good image
    first, the mean of the 50 most probable pixels and the area at 0.5 rank every bad one first."""
    good = [np.zeros((40, 40), np.float32) for _ in range(3)]
    bad = [np.zeros((40, 40), np.float32) for _ in range(3)]
    for m in good:
        m[5, 5] = 0.99
    for m in bad:
        m[10:20, 10:20] = 0.8
    module = _image_scores()
    result = module.aurocs([module.scores(m) for m in good + bad], np.array([False] * 3 + [True] * 3))
    assert result["top1"] == 0.0
    assert result["top50"] == result["area@0.5"] == 1.0
    assert result["area@0.9"] == 0.0  # no bad pixel reaches 0.9: ties at 0 lose to the hot pixels


def test_scattered_hot_pixels_outweigh_a_crack_in_area_but_not_in_its_largest_region() -> None:
    """Good maps with 36 scattered pixels at 0.9, bad ones with one 20 px line: their summed area ranks the good
    images first, the largest connected region the bad ones."""
    good = [np.zeros((60, 60), np.float32) for _ in range(3)]
    bad = [np.zeros((60, 60), np.float32) for _ in range(3)]
    for m in good:
        m[2:60:10, 2:60:10] = 0.9  # 36 isolated pixels
    for m in bad:
        m[30, 10:30] = 0.9
    module = _image_scores()
    result = module.aurocs([module.scores(m) for m in good + bad], np.array([False] * 3 + [True] * 3))
    assert result["area@0.5"] == 0.0 and result["largest@0.5"] == 1.0


def test_scores_every_image_of_a_split_from_cached_maps(tmp_path: Path, tiny_dataset: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    overrides = [*tiny_overrides(tmp_path, tiny_dataset), "model=unet", "model.encoder_name=resnet18"]
    ckpt = save_checkpoint(build_task(compose("train", overrides), ["good", "bad"]), tmp_path / "unet.ckpt")
    args = [str(ckpt), f"paths.root_dir={tmp_path}", "split=test"]
    _image_scores().main(args)
    first = capsys.readouterr().out
    assert re.search(r"test split: [1-9]\d* bad, [1-9]\d* good images", first)
    summary = dict(re.findall(r"(\S+)=(\d\.\d{4})", first.splitlines()[-1]))
    assert set(summary) == {"top1", "top10", "top50", "top200", "area@0.5", "area@0.7", "area@0.9", "largest@0.5",
                            "largest@0.7", "largest@0.9"}
    assert len(list((tmp_path / "logs" / "prediction_cache").glob("*.npz"))) == 1  # the maps, cached once ...

    def run_again(*_: object, **__: object) -> None:
        raise AssertionError("the model ran again")

    monkeypatch.setattr("scratchlab.evaluation.cache.compute_predictions", run_again)
    _image_scores().main(args)
    assert capsys.readouterr().out == first  # ... and read back to the same figures


def test_a_classifier_is_refused_before_it_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = save_checkpoint(build_task(compose("train", tiny_overrides(tmp_path)), ["good", "bad"]), tmp_path / "c.ckpt")
    with pytest.raises(SystemExit):
        _image_scores().main([str(ckpt), f"paths.root_dir={tmp_path}"])
    assert "is a classification model; image scores from maps need a model with" in capsys.readouterr().err
    assert not (tmp_path / "logs" / "prediction_cache").exists()
