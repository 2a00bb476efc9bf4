"""benchmarks/parity.py trains both sides on tiny data and ends with its one parseable summary line."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

LINE = re.compile(r"^parity: quality_delta=(\d+\.\d+) throughput_ratio=(\d+\.\d+)$")


def _parity_module():
    spec = importlib.util.spec_from_file_location("parity", PROJECT_DIR / "benchmarks" / "parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parity_trains_both_sides_and_prints_one_summary_line(tmp_path: Path, tiny_dataset: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    parity = _parity_module()
    parity.main(["--recipes", "cnn", "--epochs", "2", "--seeds", "0", "--workdir", str(tmp_path / "work"),
                 "data=folder", f"data.root={tiny_dataset}", "data.num_workers=0", "data.batch_size=8"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    match = LINE.match(lines[-1])
    assert match, lines[-1]
    delta, ratio = map(float, match.groups())
    assert 0.0 <= delta <= 1.0 and ratio > 0
    assert sum(line.startswith("parity:") for line in lines) == 1
    seed_line = next(line for line in lines if line.startswith("cnn seed 0:"))
    bare_steps = int(re.search(r"bare acc [\d.]+ best val loss [\d.]+ [\d.]+ images/s \(2 epochs, (\d+) steps",
                               seed_line).group(1))
    n_train = int(re.search(r"^cnn: train/val/test (\d+)/", "\n".join(lines), re.M).group(1))
    assert n_train > 8 and bare_steps == 2 * (n_train // 8)  # every batch of both epochs, last partial one dropped
    assert "scratchlab acc" in seed_line and "(2 epochs, trained=True)" in seed_line
    # Common random numbers: same initial weights, order and augmentations, so the two sides compute the same
    # training; any bias scratchlab added (data, loss, optimizer, checkpoint choice) would show here.
    bare_loss, sl_loss = map(float, re.findall(r"best val loss ([\d.]+)", seed_line))
    assert sl_loss == pytest.approx(bare_loss, rel=1e-4)


def test_segmentation_recipe_computes_the_same_training_on_both_sides(tmp_path: Path, tiny_dataset: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """The U-Net recipe on native-size padded batches: same validation loss and test Dice on both sides."""
    _parity_module().main(["--recipes", "unet", "--epochs", "2", "--seeds", "0", "--workdir", str(tmp_path / "work"),
                           "data=folder", f"data.root={tiny_dataset}", "data.num_workers=0", "data.batch_size=8"])
    seed_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("unet seed 0:"))
    bare_loss, sl_loss = map(float, re.findall(r"best val loss ([\d.]+)", seed_line))
    bare_dice, sl_dice = map(float, re.findall(r"dice ([\d.]+)", seed_line))
    assert sl_loss == pytest.approx(bare_loss, rel=1e-4) and sl_dice == pytest.approx(bare_dice, abs=1e-3)


def test_parity_needs_two_epochs() -> None:
    with pytest.raises(SystemExit):
        _parity_module().main(["--epochs", "1"])
