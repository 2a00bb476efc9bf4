"""Outputs of predict and export: never through a symbolic link, atomic, never over a file without
overwrite=true, and never judged as inputs."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchlab.errors import ConfigError
from scratchlab.exporting import export_model
from scratchlab.safe_output import atomic_path, checked_target, refuse_existing, write_text
from tests.conftest import run_cli
from tests.test_predict import tiny_models


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_models(tmp_path_factory)


def _one_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    return lines[0]


def _images(folder: Path, names: list[str]) -> None:
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / name)


def _predict(model: Path, folder: Path, output: Path, *extra: str):
    return run_cli("scratchlab.predict", [f"ckpt={model}", f"input={folder}", f"output={output}",
                                          f"paths.root_dir={folder.parent}", *extra], cwd=folder.parent)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
    write_text(target, "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask, "the mode of any new file, not a private one"


def test_targets_never_pass_through_a_link_or_leave_the_folder(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    (out / "file.png").symlink_to(tmp_path / "victim.png")
    assert checked_target(out, "a/b.png") == out / "a" / "b.png"
    for name in ("sub/x.png", "file.png", "../x.png"):
        with pytest.raises(ConfigError, match="symbolic link|outside"):
            checked_target(out, name)
    (out / "real.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"real.png already exists; add overwrite=true"):
        refuse_existing([out / "new.png", out / "real.png"], overwrite=False)
    refuse_existing([out / "real.png"], overwrite=True)


def test_predict_never_writes_through_a_link(models: dict[str, Path], tmp_path: Path) -> None:
    _images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (out / "predictions.jsonl").symlink_to("../victim")
    error = _one_error(_predict(models["cnn"], tmp_path / "in", out, "overwrite=true"))
    assert "predictions.jsonl" in error and "symbolic link" in error
    assert victim.read_text() == "keep me" and sorted(os.listdir(out)) == ["predictions.jsonl"]


def test_predict_rerun_refuses_then_replaces_everything_and_skips_its_own_outputs(
        models: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "in"  # the output folder is the input folder
    _images(folder, ["a.png", "b.png", "c.png"])
    first = _predict(models["unet"], folder, folder)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {"a_mask.png", "a_overlay.png", "c_mask.png", "c_overlay.png", "predictions.jsonl"} <= set(before)

    error = _one_error(_predict(models["unet"], folder, folder))
    assert "predictions.jsonl already exists" in error and "overwrite=true" in error
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "a refused run changes nothing"

    (folder / "c.png").unlink()
    rerun = _predict(models["unet"], folder, folder, "overwrite=true")
    assert rerun.returncode == 0, rerun.stderr
    records = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == ["a.png", "b.png"], "own outputs are not judged"
    assert sorted(p.name for p in folder.iterdir()) == [
        "a.png", "a_mask.png", "a_overlay.png", "b.png", "b_mask.png", "b_overlay.png", "predictions.jsonl"]


def test_export_refuses_to_overwrite_and_a_failed_export_leaves_no_file(models: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    keep = tmp_path / "keep.pt"
    keep.write_bytes(b"precious")
    error = _one_error(run_cli("scratchlab.export", [f"ckpt={models['cnn']}", "format=torchscript",
                                                     f"output={keep}", f"paths.root_dir={tmp_path}"], cwd=tmp_path))
    assert "keep.pt already exists" in error and "overwrite=true" in error and keep.read_bytes() == b"precious"

    failed = run_cli("scratchlab.export", [f"ckpt={models['cnn']}", f"output={tmp_path / 'm.onnx'}", "opset=5",
                                           f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert failed.returncode == 2 and "m.onnx" in failed.stderr and "nothing was written" in failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".onnx", ".pt", ".tmp")
                  or p.name.startswith(".")) == ["keep.pt"], "no broken or temporary file"

    assert export_model(models["cnn"], keep, "torchscript", overwrite=True) == keep.resolve()
    assert keep.read_bytes() != b"precious" and keep.stat().st_size > 1000
