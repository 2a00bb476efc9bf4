"""Images kept in memory after resizing: read once per run, and the batches are those of the uncached path."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import scratchlab.data.dataset as dataset_module
from scratchlab.builders import build_datamodule
from scratchlab.config import compose
from scratchlab.data.memory_cache import CachedImageDataset
from scratchlab.errors import ConfigError


def _datamodule(tmp_path: Path, data: Path, *overrides: str):
    cfg = compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", "data=folder",
                            f"data.root={data}", "data.num_workers=0", "data.batch_size=8", *overrides])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("model", ["model=cnn", "model=unet"])  # stretch to a square; scale + pad
def test_cached_batches_equal_uncached_ones(tmp_path: Path, tiny_dataset: Path, model: str) -> None:
    cached = _datamodule(tmp_path, tiny_dataset, model, "model.image_size=48", "data.cache_images=true")
    plain = _datamodule(tmp_path, tiny_dataset, model, "model.image_size=48", "data.cache_images=false")
    assert isinstance(cached.datasets["val"], CachedImageDataset)
    assert not isinstance(plain.datasets["val"], CachedImageDataset)
    for a, b in zip(cached.val_dataloader(), plain.val_dataloader()):
        assert a["path"] == b["path"]
        for key in ("image", "mask", "size", "original_size"):
            torch.testing.assert_close(a[key], b[key])
    train = next(iter(cached.train_dataloader()))
    assert train["image"].shape[-2:] == next(iter(plain.train_dataloader()))["image"].shape[-2:]


def test_images_are_read_once_per_run(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path: reads.append(path) or real(path))
    dm = _datamodule(tmp_path, tiny_dataset, "model=cnn", "model.image_size=32")
    assert isinstance(dm.datasets["train"], CachedImageDataset)  # auto: a tiny set fits
    for _ in range(3):
        for _ in dm.train_dataloader():
            pass
    assert len(reads) == len(set(reads)) == len(dm.splits["train"])


def test_auto_leaves_data_that_does_not_fit_on_disk(tmp_path: Path, tiny_dataset: Path) -> None:
    dm = _datamodule(tmp_path, tiny_dataset, "model=cnn", "model.image_size=32", "data.cache_max_gb=0.000001")
    assert not isinstance(dm.datasets["train"], CachedImageDataset)
    native = _datamodule(tmp_path, tiny_dataset, "model=unet", "model.image_size=null")
    assert not isinstance(native.datasets["train"], CachedImageDataset)  # size unknown before reading
    with pytest.raises(ConfigError, match="data.cache_images"):
        _datamodule(tmp_path, tiny_dataset, "data.cache_images=sometimes")
