"""Checkpoints are data, not code: a crafted file never runs anything, and every command refuses it in one line."""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scratchlab.checkpoints import FORMAT, KEY, read_checkpoint
from scratchlab.errors import ConfigError
from tests.conftest import run_cli


class _Payload:
    """Unpickling this object runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(folder: Path, how: str) -> tuple[Path, Path]:
    marker = folder / f"pwned_{how}"
    path = folder / f"evil_{how}.ckpt"
    content = {"hyper_parameters": {"config": {"model": {"task": "classification"}}}, KEY: {"format": FORMAT},
               "state_dict": {}, "payload": _Payload(marker)}
    if how == "torch_save":
        torch.save(content, path)
    else:  # a bare pickle, as a file of any origin could be
        path.write_bytes(pickle.dumps(content))
    return path, marker


@pytest.mark.parametrize("how", ["torch_save", "pickle"])
def test_reading_a_malicious_checkpoint_runs_nothing(tmp_path: Path, how: str) -> None:
    path, marker = _malicious(tmp_path, how)
    with pytest.raises(ConfigError, match="refused.*could run code"):
        read_checkpoint(path)
    assert not marker.exists()


def test_every_command_refuses_it_with_one_error_line(tmp_path: Path) -> None:
    path, marker = _malicious(tmp_path, "torch_save")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "image.png")
    commands = {
        "scratchlab.predict": [f"ckpt={path}", f"input={tmp_path / 'image.png'}", f"output={tmp_path / 'out'}"],
        "scratchlab.export": [f"ckpt={path}", f"output={tmp_path / 'model.onnx'}"],
        "scratchlab.evaluate": [f"ckpt={path}", f"paths.root_dir={tmp_path}"],
    }
    for module, args in commands.items():
        result = run_cli(module, [*args, f"hydra.run.dir={tmp_path / 'logs' / module}"], cwd=tmp_path)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, (module, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and "refused" in lines[0], (module, result.stderr)
        assert not marker.exists(), module
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "out").exists()


def test_checkpoints_of_another_format_are_refused_clearly(tmp_path: Path) -> None:
    old = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"config": {"model": {"task": "classification"}}}, "state_dict": {}}, old)
    with pytest.raises(ConfigError, match="format 1.*train the model again"):
        read_checkpoint(old)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ConfigError, match="not written by scratchlab.train"):
        read_checkpoint(foreign)


def test_files_that_are_not_checkpoints_are_named_as_such(tmp_path: Path) -> None:
    png = tmp_path / "image.ckpt"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png, format="PNG")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for path in (png, text, empty):
        with pytest.raises(ConfigError, match=r"is not a PyTorch checkpoint \(\.ckpt\)") as err:
            read_checkpoint(path)
        assert "refused" not in str(err.value) and "run code" not in str(err.value)


def test_exported_models_point_to_model_path(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX protobuf starts like this
    with pytest.raises(ConfigError, match=r"ONNX export.*model_path=") as err:
        read_checkpoint(onnx)
    assert "refused" not in str(err.value)
    scripted = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still what export writes
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), str(scripted))
    with pytest.raises(ConfigError, match=r"TorchScript export.*model_path=") as err:
        read_checkpoint(scripted)
    assert "refused" not in str(err.value)


def test_a_folder_names_the_checkpoint_inside_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"is a folder; give the \.ckpt file inside it.*checkpoints/best\.ckpt"):
        read_checkpoint(run)
    (run / "checkpoints" / "epoch=3.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"is a folder.*checkpoints/epoch=3\.ckpt"):
        read_checkpoint(run)
