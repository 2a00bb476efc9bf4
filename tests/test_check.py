"""The data check: every problem it reports, its statistics, the grid, exit codes and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from scratchlab.data.checking import FATAL, WARNING, check_index, run_check, save_grid
from scratchlab.data.sources.folder import FolderSource
from scratchlab.data.splits import split_samples
from scratchlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def _img(path: Path, array: np.ndarray | None = None, h: int = 20, w: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (h, w), dtype=np.uint8) if array is None else array).save(path)
    return path


def _mask(path: Path, h: int = 20, w: int = 30, area: tuple[int, int] = (5, 6)) -> Path:
    m = np.zeros((h, w), np.uint8)
    m[: area[0], : area[1]] = 255
    return _img(path, m)


def _clean(root: Path) -> Path:
    """4 good, 2 bad images, each bad one with a mask covering 30 of 600 pixels."""
    for i in range(4):
        _img(root / "good" / f"g{i}.png")
    for i in range(2):
        _img(root / "bad" / f"b{i}.png")
        _mask(root / "masks" / f"b{i}.png")
    return root


def _broken(root: Path) -> Path:
    """The clean set plus one instance of every problem the check knows."""
    _clean(root)
    same = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    _img(root / "good" / "dup_a.png", same)
    _img(root / "good" / "dup_b.bmp", same)  # same pixels, other name and encoding
    _img(root / "bad" / "cross.png", np.array(Image.open(root / "good" / "g0.png")))  # good elsewhere
    _mask(root / "masks" / "cross.png")
    _img(root / "bad" / "no_mask.png")
    _img(root / "bad" / "empty.png")
    _mask(root / "masks" / "empty.png", area=(0, 0))
    _img(root / "bad" / "wrong_size.png")
    _mask(root / "masks" / "wrong_size.png", h=21)
    trunc = _img(root / "bad" / "trunc.jpg", RNG.integers(0, 256, (64, 64), dtype=np.uint8))
    trunc.write_bytes(trunc.read_bytes()[:300])
    _mask(root / "masks" / "trunc.png")
    _mask(root / "masks" / "orphan.png")
    return root


def _kinds(report) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for p in report.problems:
        out.setdefault(p.kind, (p.severity, []))[1].extend(Path(f).name for f in p.files)
    return {k: (severity, sorted(files)) for k, (severity, files) in out.items()}


def test_clean_set_statistics(tmp_path):
    report = check_index(FolderSource(_clean(tmp_path)).load())
    assert report.problems == [] and report.exit_code(strict=True) == 0
    assert report.counts == {"good": 4, "bad": 2} and report.modes == {"L": 6}
    assert report.sizes == {"width": {"min": 30, "median": 30, "max": 30},
                            "height": {"min": 20, "median": 20, "max": 20}}
    assert report.coverage["n"] == 2 and report.coverage["p50"] == pytest.approx(30 / 600)


def test_every_problem_is_found_with_severity_and_files(tmp_path):
    report = check_index(FolderSource(_broken(tmp_path)).load())
    assert _kinds(report) == {
        "unreadable": (FATAL, ["trunc.jpg"]),
        "mask_size": (FATAL, ["wrong_size.png", "wrong_size.png"]),
        "duplicate_across_classes": (FATAL, ["cross.png", "g0.png"]),
        "duplicate": (WARNING, ["dup_a.png", "dup_b.bmp"]),
        "missing_mask": (WARNING, ["no_mask.png"]),
        "empty_mask": (WARNING, ["empty.png", "empty.png"]),
        "orphan_mask": (WARNING, ["orphan.png"]),
    }
    assert all(str(tmp_path) in p.message for p in report.problems)  # every message names its file(s)
    assert report.exit_code() == 2 and len(report.fatal) == 3 and len(report.warnings) == 4
    text = report.to_text()
    assert "3 fatal, 4 warnings" in text and "trunc.jpg" in text and "FATAL mask_size" in text
    assert json.loads(json.dumps(report.to_dict()))["counts"] == {"good": 6, "bad": 7}


def test_mask_threshold_and_warning_exit_codes(tmp_path):
    _clean(tmp_path)
    soft = np.zeros((20, 30), np.uint8)
    soft[:4, :4] = 100
    _img(tmp_path / "masks" / "b0.png", soft)  # soft mask: empty at 128, 16 px at 90
    index = FolderSource(tmp_path).load()
    report = check_index(index)
    assert [p.kind for p in report.problems] == ["empty_mask"]
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1
    assert check_index(FolderSource(tmp_path, mask_threshold=90).load()).problems == []


def test_16bit_image_using_only_low_12_bits_warns(tmp_path):
    _clean(tmp_path)
    low = RNG.integers(0, 4096, (20, 30), dtype=np.uint16)  # 12-bit camera data, unscaled
    cv2.imwrite(str(tmp_path / "good" / "cam12.png"), low)
    cv2.imwrite(str(tmp_path / "good" / "cam12_rgb.png"), np.dstack([low, low // 2, low // 3]))
    cv2.imwrite(str(tmp_path / "good" / "full16.png"), low * 16)  # the same data scaled to 16 bits: fine
    cv2.imwrite(str(tmp_path / "good" / "full16_rgb.tif"), RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16))
    report = check_index(FolderSource(tmp_path).load())
    assert _kinds(report) == {"low_bit_depth": (WARNING, ["cam12.png", "cam12_rgb.png"])}
    message = report.problems[0].message
    assert str(tmp_path / "good" / "cam12.png") in message and "\n" not in message
    assert "nearly black" in message and "full 16-bit range" in message and "8 bits" in message
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_no_mask_warnings_for_classification_sets(tmp_path):
    for i in range(3):
        _img(tmp_path / "good" / f"g{i}.png")
        _img(tmp_path / "bad" / f"b{i}.png")
    assert check_index(FolderSource(tmp_path).load()).problems == []


def test_split_counts_and_duplicates_across_splits(tmp_path):
    _clean(tmp_path)
    same = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    _img(tmp_path / "good" / "x1.png", same)
    _img(tmp_path / "good" / "x2.png", same)
    index = FolderSource(tmp_path).load()
    splits = split_samples(index.samples, (0.5, 0.25, 0.25), seed=0)
    report = check_index(index, splits=splits)
    assert {k: sum(v.values()) for k, v in report.split_counts.items()} == {k: len(v) for k, v in splits.items()}
    assert "duplicate_across_splits" not in _kinds(report)
    x1 = next(s for s in index.samples if s.image.name == "x1.png")
    x2 = next(s for s in index.samples if s.image.name == "x2.png")
    rest = [s for s in index.samples if s not in (x1, x2)]
    report = check_index(index, splits={"train": rest + [x1], "val": [], "test": [x2]})
    assert _kinds(report)["duplicate_across_splits"] == (WARNING, ["x1.png", "x2.png"])


def test_predefined_split_counts(tmp_path):
    _clean(tmp_path / "train")
    _img(tmp_path / "test" / "good" / "t.png")
    report = check_index(FolderSource(tmp_path).load())
    assert report.split_counts == {"train": {"good": 4, "bad": 2}, "test": {"good": 1, "bad": 0}}


def test_save_grid_draws_mask_contours(tmp_path):
    _clean(tmp_path)
    for i in range(2):
        _img(tmp_path / "bad" / f"b{i}.png", np.zeros((20, 30), np.uint8))  # black, so green stands out
    path = save_grid(FolderSource(tmp_path).load(), tmp_path / "out" / "grid.png", n=4, seed=1)
    grid = np.array(Image.open(path).convert("RGB")).astype(int)
    assert grid.shape == (512, 512, 3)
    green = (grid[..., 1] > 150) & (grid[..., 0] < 80) & (grid[..., 2] < 80)
    assert green.sum() > 20


def _cfg(root: Path, out: Path, strict: bool = False):
    return OmegaConf.create({
        "data": {"root": str(root), "mask_threshold": 128,
                 "source": {"_target_": "scratchlab.data.sources.folder.FolderSource", "root": "${data.root}"}},
        "strict": strict, "grid": str(out / "grid.png"), "report": str(out / "report.txt")})


def test_run_exit_codes_and_outputs(tmp_path, capsys):
    clean, warn, broken = tmp_path / "clean", tmp_path / "warn", tmp_path / "broken"
    _clean(clean)
    _mask(_clean(warn) / "masks" / "orphan.png")
    _broken(broken)
    assert run_check(_cfg(clean, tmp_path / "o1")) == 0
    assert (tmp_path / "o1" / "grid.png").is_file() and "images: 6" in (tmp_path / "o1" / "report.txt").read_text()
    assert run_check(_cfg(warn, tmp_path / "o2")) == 0
    assert run_check(_cfg(warn, tmp_path / "o3", strict=True)) == 1
    assert run_check(_cfg(broken, tmp_path / "o4")) == 2
    assert "grid:" in capsys.readouterr().out


@pytest.mark.skipif(not (REPO / "conf" / "data" / "folder.yaml").is_file(), reason="conf/data/folder.yaml missing")
def test_hydra_cli(tmp_path):
    _clean(tmp_path / "clean")
    _broken(tmp_path / "broken")
    env = {**os.environ, "SCRATCHLAB_ROOT": str(tmp_path / "runs")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "scratchlab.data.check", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    ok = cli("data=folder", f"data.root={tmp_path / 'clean'}", f"hydra.run.dir={tmp_path / 'out'}")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "check_grid.png").is_file() and (tmp_path / "out" / "check_report.txt").is_file()
    bad = cli(f"data.root={tmp_path / 'broken'}", "grid=null", "report=null")
    assert bad.returncode == 2 and "FATAL unreadable" in bad.stdout
    stats = cli("data=folder", f"data.root={tmp_path / 'clean'}", "grid=null", "report=null", "statistics=50")
    assert stats.returncode == 0 and "| mask_coverage |" in stats.stdout and "| width |" in stats.stdout
    missing = cli(f"data.root={tmp_path / 'nowhere'}", "grid=null", "report=null")
    assert missing.returncode == 2 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize(("layout", "missing"), [("empty_bad", "bad"), ("empty_good", "good"), ("no_bad", "bad")])
def test_one_class_binary_set_is_fatal(tmp_path, layout, missing):
    for i in range(3):
        if layout != "empty_good":
            _img(tmp_path / "good" / f"g{i}.png")
        if layout == "empty_good":
            _img(tmp_path / "bad" / f"b{i}.png")
    (tmp_path / "good").mkdir(exist_ok=True)
    if layout == "empty_bad":
        (tmp_path / "bad").mkdir()
    report = check_index(FolderSource(tmp_path).load())
    assert _kinds(report) == {"empty_class": (FATAL, [])} and report.exit_code() == 2
    assert f"no {missing} images" in report.fatal[0].message


def test_statistics_file_becomes_the_reference_of_a_later_check(tmp_path, capsys):
    """statistics=N writes the percentiles; reference= compares another check with them (the same set: every
    log-ratio 0); an existing output is refused before any work unless overwrite=true."""
    clean = _clean(tmp_path / "clean")
    first = OmegaConf.merge(_cfg(clean, tmp_path / "o1"), {"statistics": 50,
                                                          "statistics_file": str(tmp_path / "o1" / "stats.json")})
    assert run_check(first) == 0
    saved = json.loads((tmp_path / "o1" / "stats.json").read_text())
    assert saved["images"] == 6 and saved["percentiles"]["mask_coverage"][2] == pytest.approx(30 / 600)
    capsys.readouterr()
    again = OmegaConf.merge(_cfg(clean, tmp_path / "o2"), {"statistics": 50, "statistics_file": None,
                                                          "reference": str(tmp_path / "o1" / "stats.json")})
    assert run_check(again) == 0
    out = capsys.readouterr().out
    assert f"and of {tmp_path / 'o1' / 'stats.json'} (right)" in out
    assert "| width | 30 | 30 | 30 | 30 | 30 | 30 | 30 | 30 | 30 | 30 | 0.000 |" in out
    assert "masked_level): 0.000" in out
    before = (tmp_path / "o1" / "report.txt").read_text()
    (tmp_path / "o1" / "report.txt").write_text("kept")
    with pytest.raises(ConfigError, match="report.txt already exists; add overwrite=true"):
        run_check(first)
    assert (tmp_path / "o1" / "report.txt").read_text() == "kept"
    assert run_check(OmegaConf.merge(first, {"overwrite": True})) == 0
    assert (tmp_path / "o1" / "report.txt").read_text() == before
    stats_only = OmegaConf.merge(first, {"report": None, "grid": None})
    with pytest.raises(ConfigError, match="stats.json already exists"):
        run_check(stats_only)


@pytest.mark.parametrize(("extra", "message"), [
    ({"statistics_file": "{out}/report.txt"}, "two outputs name one file"),
    ({"statistics_file": "{out}/ref.json", "reference": "{out}/ref.json", "overwrite": True}, "is the reference"),
    ({"statistics": 0, "reference": "{out}/ref.json"}, "add statistics=N"),
])
def test_outputs_that_would_overwrite_each_other_or_the_reference_are_refused(tmp_path, extra, message):
    out = tmp_path / "o"
    out.mkdir()
    (out / "ref.json").write_text('{"percentiles": {"width": [1, 2, 3, 4, 5]}}')
    cfg = OmegaConf.merge(_cfg(_clean(tmp_path / "clean"), out), {"statistics": 5},
                          {k: v.format(out=out) if isinstance(v, str) else v for k, v in extra.items()})
    with pytest.raises(ConfigError, match=message):
        run_check(cfg)
    assert sorted(p.name for p in out.iterdir()) == ["ref.json"]
    assert (out / "ref.json").read_text() == '{"percentiles": {"width": [1, 2, 3, 4, 5]}}'


@pytest.mark.parametrize(("content", "message"), [
    (None, "is not a file"),
    ("{not json", "is not JSON"),
    ('{"images": 3}', "holds no 'percentiles'"),
    ('{"percentiles": {"hue": [1, 2, 3, 4, 5]}}', "unknown quantity 'hue'"),
    ('{"percentiles": {"width": [1, 2, 3]}}', "width needs 5 numbers"),
    ('{"percentiles": {"width": [1, 2, 3, 4, NaN]}}', "width needs 5 numbers"),
    ('{"percentiles": {"width": [1, 2, 3, 4, 1' + "0" * 400 + ']}}', "width needs 5 numbers"),
])
def test_a_broken_reference_is_one_config_error_before_any_work(tmp_path, content, message):
    ref = tmp_path / "ref.json"
    if content is not None:
        ref.write_text(content)
    cfg = OmegaConf.merge(_cfg(tmp_path / "nowhere", tmp_path / "o"), {"statistics": 5, "reference": str(ref)})
    with pytest.raises(ConfigError, match=message) as err:
        run_check(cfg)  # the data root does not exist: the reference is checked first
    assert "\n" not in str(err.value) and not (tmp_path / "o").exists()
