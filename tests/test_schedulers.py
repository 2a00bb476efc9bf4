"""scheduler=warmup_cosine: the learning rate a task's optimizer gets, epoch by epoch, as configured."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from scratchlab.builders import build_task
from scratchlab.config import compose
from scratchlab.errors import ConfigError
from tests.conftest import tiny_overrides


def _epoch_lrs(tmp_path: Path, *overrides: str) -> list[float]:
    """The learning rate of each epoch of a run, from the task's own ``configure_optimizers``."""
    cfg = compose("train", tiny_overrides(tmp_path) + ["scheduler=warmup_cosine", *overrides])
    config = build_task(cfg, ["good", "bad"]).configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    lrs = []
    for _ in range(cfg.trainer.max_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_then_cosine(tmp_path: Path) -> None:
    lrs = _epoch_lrs(tmp_path, "trainer.max_epochs=10", "optimizer.lr=0.1", "scheduler.warmup_epochs=3",
                     "scheduler.start_factor=0.1", "scheduler.eta_min=0.001")
    assert lrs[:4] == pytest.approx([0.01, 0.04, 0.07, 0.1]), "linear rise from start_factor x lr to lr"
    cosine = [0.001 + 0.099 * (1 + math.cos(math.pi * t / 7)) / 2 for t in range(7)]
    assert lrs[3:] == pytest.approx(cosine), "cosine from lr towards eta_min over the remaining epochs"
    assert lrs[-1] < 0.01


def test_no_warmup_is_plain_cosine(tmp_path: Path) -> None:
    lrs = _epoch_lrs(tmp_path, "trainer.max_epochs=4", "optimizer.lr=0.1", "scheduler.warmup_epochs=0",
                     "scheduler.eta_min=0")
    assert lrs == pytest.approx([0.1 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)])


@pytest.mark.parametrize("overrides, message", [
    (["trainer.max_epochs=3", "scheduler.warmup_epochs=3"], "scheduler.warmup_epochs=3 must be"),
    (["trainer.max_epochs=-1"], "needs a finite run"),
    (["trainer.max_epochs=5", "scheduler.start_factor=0"], "scheduler.start_factor=0 must be"),
])
def test_impossible_schedules_are_config_errors(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _epoch_lrs(tmp_path, *overrides)
