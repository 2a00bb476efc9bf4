"""Config mistakes: one ``error:`` line that names each bad key once, exit code 2, no traceback.

Two cases run the CLI in a subprocess as a user would; the others call the same ``main()`` in this process
with ``sys.argv`` set (Hydra's argument parsing and composition included), which saves a Python start each.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from scratchlab.cli import user_error
from scratchlab.config import compose
from scratchlab.config_schema import validate_config
from scratchlab.errors import ConfigError
from tests.cli_calls import call_main
from tests.conftest import run_cli

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def _problem(tmp_path: Path, config: str, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(compose(config, [f"paths.root_dir={tmp_path}", *overrides]))
    return str(err.value)


@pytest.mark.parametrize(("overrides", "named"), [
    (["optimizer.lr=-1"], "optimizer.lr=-1 must be a number > 0"),
    (["optimizer.lr=abc"], "optimizer.lr=abc must be a number"),
    (["data.batch_size=0"], "data.batch_size=0 must be a whole number >= 1"),
    (["seed=-5"], "seed=-5 must be a whole number between 0"),
    (["data.split.seed=abc"], "data.split.seed=abc must be a whole number"),
    (["decision.threshold=2"], "decision.threshold=2 must be a number between 0 and 1"),
    (["decision.threshold=-0.1"], "decision.threshold=-0.1 must be a number between 0 and 1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be a whole number >= 1"),
    (["trainer.precision=7"], "trainer.precision=7 must be one of 64, 32, 16"),
    (["model.image_size=4"], "model.image_size=4 must be a whole number >= 8"),
    (["+optimizr.lr=1"], "+optimizr.lr=1 adds optimizr, a key this command does not read"),
    (["data=folder", "data.root=.", "+data.source.count=5200"],
     "data.source.count is not a setting of the data source FolderSource"),
    (["data=folder", "data.root=.", "data.source._target_=nope.Nope"], "data.source._target_=nope.Nope cannot be"),
    (["+data.mask_treshold=200"], "+data.mask_treshold=200 adds data.mask_treshold, a setting no data set reads"),
    (["+data.split.tset=0.3"], "+data.split.tset=0.3 adds data.split.tset, a setting no data set reads; check the "
                               "spelling (data.split settings: dedupe, file, fold, num_folds, seed, stratify, test,"),
    (["+optimizer.lrr=1"], "optimizer.lrr is not a setting of the optimizer Adam"),
    (["optimizer=sgd", "+optimizer.momentun=0.5"], "optimizer.momentun is not a setting of the optimizer SGD"),
    (["scheduler=cosine", "+scheduler.tmax=3"], "scheduler.tmax is not a setting of the scheduler CosineAnnealingLR"),
    (["+loss.pos_weigth=2"], "loss.pos_weigth is not a setting of the loss BCELoss"),
    pytest.param(["trainer=gpu"], "trainer.accelerator=gpu needs a CUDA GPU", marks=NO_CUDA),
])
def test_bad_training_value_is_named(tmp_path: Path, overrides: list[str], named: str) -> None:
    assert named in _problem(tmp_path, "train", overrides)


def test_every_bad_value_is_named_once_in_one_message(tmp_path: Path) -> None:
    bad = ["optimizer.lr=-1", "data.batch_size=0", "seed=-5", "decision.threshold=2", "trainer.max_epochs=0"]
    message = _problem(tmp_path, "train", bad)
    assert all(message.count(f"{value} must be") == 1 for value in bad), message
    assert message.count(" must be ") == len(bad)


@pytest.mark.parametrize(("config", "overrides"), [
    ("train", []), ("train", ["trainer=ddp"]), ("train", ["trainer.max_epochs=-1", "decision.threshold=0"]),
    ("predict", ["input=a", "output=b"]), ("evaluate", ["decision.threshold=0.3"]),
    ("export", ["ckpt=a", "output=b.onnx"]), ("synth", ["input=a", "output=b"]), ("report", []),
    ("check", ["data.root=."]),
])
def test_valid_configs_pass(tmp_path: Path, config: str, overrides: list[str]) -> None:
    validate_config(compose(config, [f"paths.root_dir={tmp_path}", *overrides]))


def test_instantiation_error_carries_cause_and_key() -> None:
    node = OmegaConf.create({"source": {"_target_": "fractions.Fraction", "numerator": "abc"}})
    with pytest.raises(Exception) as err:
        instantiate(node.source)
    message = user_error(err.value)
    assert message.startswith("source (fractions.Fraction): ValueError: Invalid literal for Fraction: 'abc'")


def _main_error_line(module: str, args: list[str], tmp_path: Path, monkeypatch, capsys) -> str:
    """Call ``module.main()`` with ``args`` on the command line; its one error line (exit code 2)."""
    return _one_error_line(call_main(module, [f"paths.root_dir={tmp_path}", *args], monkeypatch, capsys))


@pytest.mark.parametrize(("override", "named"), [
    ("model=nope", "model=nope: In 'train': Could not find 'model/nope'; Available options in 'model': cnn,"),
    ("loss=nope", "loss=nope: In 'train': Could not find 'loss/nope'"),
    ("optimizr.lr=1", "optimizr.lr=1: optimizr.lr is not a key of this config; check the spelling"),
    ("optimizer.lrr=1", "optimizer.lrr=1: optimizer.lrr is not a key of this config"),
    ("data.batch_size=[", "data.batch_size=[: "),
])
def test_hydra_composition_mistakes_exit_2(tmp_path: Path, monkeypatch, capsys, override: str, named: str) -> None:
    assert named in _main_error_line("scratchlab.train", [override], tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(("module", "args", "named"), [
    pytest.param("scratchlab.predict", ["input=a", "output=b", "device=cuda"], "device=cuda needs a CUDA GPU",
                 marks=NO_CUDA),
    ("scratchlab.data.check", [], "data.root must be given"),
    ("scratchlab.evaluate", ["run_id=x", "decision.threshold=2"], "decision.threshold=2 must be"),
    ("scratchlab.export", ["ckpt=a", "output=b.onnx", "decision.mask_threshold=-1"], "decision.mask_threshold=-1"),
    ("scratchlab.report", ["+nope=1"], "+nope=1 adds nope"),
    ("scratchlab.synth", ["input=a", "output=b", "seed=abc"], "seed=abc must be a whole number"),
    ("scratchlab.train", ["trainer.precision=7"], "trainer.precision=7 must be one of"),
])
def test_every_entry_point_reports_config_mistakes_alike(tmp_path: Path, monkeypatch, capsys, module: str,
                                                         args: list[str], named: str) -> None:
    assert named in _main_error_line(module, args, tmp_path, monkeypatch, capsys)


def test_cli_hydra_mistake_in_a_subprocess(tmp_path: Path) -> None:
    line = _one_error_line(run_cli("scratchlab.train", [f"paths.root_dir={tmp_path}", "model=nope"], cwd=tmp_path))
    assert "model=nope" in line and "Available options in 'model'" in line


def test_cli_names_each_bad_value_once_in_a_subprocess(tmp_path: Path) -> None:
    bad = ["optimizer.lr=abc", "data.batch_size=0", "seed=-5", "data.split.seed=abc", "decision.threshold=2",
           "trainer.max_epochs=0", "trainer.precision=7"]
    line = _one_error_line(run_cli("scratchlab.train", [f"paths.root_dir={tmp_path}", "+optimizr.lr=1", *bad],
                                   cwd=tmp_path))
    assert all(line.count(value) == 1 for value in bad) and "+optimizr.lr=1 adds optimizr" in line
    assert not (tmp_path / "mlruns").exists(), "a config mistake starts no run"


def test_training_on_one_class_stops_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    for i in range(6):
        (tmp_path / "data" / "good").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "good" / f"g{i}.png").write_bytes(_png(i))
    line = _main_error_line("scratchlab.train", ["data=folder", f"data.root={tmp_path / 'data'}", "model=cnn"],
                            tmp_path, monkeypatch, capsys)
    assert "no bad images" in line


def _png(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (20, 30), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()
