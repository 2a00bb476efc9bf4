"""Seeded, stratified, duplicate-aware splits; split files; predefined splits; k-fold."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchlab.data.splits import split_samples, splits_to_frame
from scratchlab.data.types import Sample
from scratchlab.errors import ConfigError, DataError


def _write(path: Path, value: int) -> Path:
    """A tiny image whose pixels encode ``value`` (distinct values -> distinct pixels)."""
    Image.fromarray(np.array([[value % 256, value // 256]], np.uint8), "L").save(path)
    return path


def _samples(folder: Path, n_good: int, n_bad: int, **meta) -> list[Sample]:
    return [Sample(_write(folder / f"img{i:03d}.png", i), int(i >= n_good), meta=dict(meta))
            for i in range(n_good + n_bad)]


def _names(splits: dict[str, list[Sample]]) -> dict[str, list[str]]:
    return {k: sorted(s.image.name for s in v) for k, v in splits.items()}


def test_deterministic_complete_and_order_independent(tmp_path):
    samples = _samples(tmp_path, 40, 10)
    a = split_samples(samples, (0.6, 0.2, 0.2), seed=3)
    assert _names(a) == _names(split_samples(samples[::-1], (0.6, 0.2, 0.2), seed=3))
    assert _names(a) != _names(split_samples(samples, (0.6, 0.2, 0.2), seed=4))
    names = [n for v in _names(a).values() for n in v]
    assert sorted(names) == sorted(s.image.name for s in samples) and len(set(names)) == len(names)
    assert [len(a[k]) for k in ("train", "val", "test")] == [30, 10, 10]


def test_stratified_by_label(tmp_path):
    samples = _samples(tmp_path, 80, 20)
    for seed in range(3):
        splits = split_samples(samples, (0.7, 0.15, 0.15), seed=seed)
        bad = {k: sum(s.label for s in v) for k, v in splits.items()}
        assert bad == {"train": 14, "val": 3, "test": 3}


def test_duplicates_never_cross_splits(tmp_path):
    samples = _samples(tmp_path, 30, 10)
    for i in range(8):  # copies under other names and encodings, same pixels
        suffix = ".bmp" if i % 2 else ".png"
        samples.append(Sample(_write(tmp_path / f"copy{i}{suffix}", i * 5), int(i * 5 >= 30)))
    for seed in range(10):
        split_of = {s.image.name: k for k, v in split_samples(samples, seed=seed).items() for s in v}
        for i in range(8):
            suffix = ".bmp" if i % 2 else ".png"
            assert split_of[f"copy{i}{suffix}"] == split_of[f"img{i * 5:03d}.png"]
    moved = False  # without dedupe the pairs are free to separate
    for seed in range(10):
        split_of = {s.image.name: k for k, v in split_samples(samples, seed=seed, dedupe=False).items() for s in v}
        moved |= any(split_of[f"copy{i}{'.bmp' if i % 2 else '.png'}"] != split_of[f"img{i * 5:03d}.png"]
                     for i in range(8))
    assert moved


def test_split_file_relative_absolute_and_exclude(tmp_path):
    (tmp_path / "data").mkdir()
    samples = _samples(tmp_path / "data", 3, 1)
    csv = tmp_path / "split.csv"
    csv.write_text("path,split\nimg000.png,train\nimg001.png,val\n"
                   f"{tmp_path / 'data' / 'img002.png'},test\nimg003.png,exclude\n")
    splits = split_samples(samples, split_file=csv, root=tmp_path / "data", seed=0)
    assert _names(splits) == {"train": ["img000.png"], "val": ["img001.png"], "test": ["img002.png"]}
    (tmp_path / "data" / "split.csv").write_text(csv.read_text())  # relative to the file's own folder
    assert _names(split_samples(samples, split_file=tmp_path / "data" / "split.csv")) == _names(splits)


@pytest.mark.parametrize("body, message", [
    ("path,split\nimg000.png,train\nimg001.png,val\nimg002.png,test\nghost.png,test\n", "ghost.png"),
    ("path,split\nimg000.png,train\nimg001.png,val\nimg002.png,holdout\n", "holdout"),
    ("path,split\nimg000.png,train\nimg001.png,val\n", "does not list 1"),
    ("file,part\nimg000.png,train\n", "path,split"),
])
def test_split_file_errors(tmp_path, body, message):
    samples = _samples(tmp_path, 2, 1)
    (tmp_path / "s.csv").write_text(body)
    with pytest.raises(DataError, match=message):
        split_samples(samples, split_file=tmp_path / "s.csv")


def test_predefined_split_is_honoured(tmp_path):
    (tmp_path / "tr").mkdir()
    (tmp_path / "te").mkdir()
    train = _samples(tmp_path / "tr", 16, 4, split="train")
    test = [Sample(_write(tmp_path / "te" / f"t{i}.png", 500 + i), i % 2, meta={"split": "test"}) for i in range(6)]
    splits = split_samples(train + test, (0.6, 0.2, 0.2), seed=1)
    assert _names(splits)["test"] == sorted(s.image.name for s in test)
    assert len(splits["val"]) == 5 and sum(s.label for s in splits["val"]) == 1  # 20/80 of train, stratified
    assert _names(splits) == _names(split_samples(train + test, (0.6, 0.2, 0.2), seed=1))


def test_k_fold_disjoint_cover_pool_test_fixed(tmp_path):
    samples = _samples(tmp_path, 40, 10)
    plain = split_samples(samples, (0.6, 0.2, 0.2), seed=5)
    pool = sorted(s.image.name for k in ("train", "val") for s in plain[k])
    vals, tests = [], []
    for fold in range(5):
        s = split_samples(samples, (0.6, 0.2, 0.2), seed=5, fold=fold, num_folds=5)
        vals.append(_names(s)["val"])
        tests.append(_names(s)["test"])
        assert sorted(_names(s)["train"] + _names(s)["val"]) == pool
        assert sum(x.label for x in s["val"]) in (1, 2)  # 8 bad in the pool, stratified over 5 folds -> 1 or 2
    assert all(t == _names(plain)["test"] for t in tests)
    flat = [n for v in vals for n in v]
    assert sorted(flat) == pool and len(set(flat)) == len(flat)


def test_k_fold_stratification_of_small_class(tmp_path):
    samples = _samples(tmp_path, 45, 15)
    for fold in range(3):
        s = split_samples(samples, (0.75, 0.0, 0.25), seed=0, fold=fold, num_folds=3, dedupe=False)
        assert sum(x.label for x in s["val"]) in (3, 4)  # 11 bad in the pool over 3 folds


@pytest.mark.parametrize("kwargs", [dict(fractions=(0.5, 0.5)), dict(fractions=(0.7, 0.2, 0.2)),
                                    dict(fractions=(1.1, -0.1, 0.0)), dict(fold=3, num_folds=3),
                                    dict(fold=0, num_folds=1), dict(fold=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        split_samples([], **kwargs)


def test_splits_to_frame(tmp_path):
    samples = _samples(tmp_path, 8, 2)
    frame = splits_to_frame(split_samples(samples, seed=0))
    assert list(frame.columns) == ["path", "label", "split"] and len(frame) == 10
    assert set(frame["split"]) <= {"train", "val", "test"} and frame["label"].sum() == 2
    assert set(frame["path"]) == {str(s.image) for s in samples}
