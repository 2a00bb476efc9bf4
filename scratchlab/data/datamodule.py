"""The LightningDataModule every task uses: source -> check -> split -> datasets -> loaders."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import albumentations as A
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from scratchlab.data.io import image_info, read_mask
from scratchlab.data.dataset import ImageDataset, pad_collate, seeded_loading, shape_batches, worker_loading
from scratchlab.data.memory_cache import CachedImageDataset, cache_bytes
from scratchlab.data.splits import split_samples, splits_to_frame
from scratchlab.data.transforms import Preprocess, build_transform, content_box, holds_crop
from scratchlab.data.types import SampleIndex
from scratchlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class ScratchDataModule(pl.LightningDataModule):
    """Loads a ``SampleIndex`` from ``source``, checks it, splits it and serves the three splits."""

    def __init__(self, source: Any, preprocess: Preprocess, split: Mapping, augment: Mapping | None = None,
                 batch_size: int = 32, num_workers: int = 0, pin_memory: bool | str = False, mask_threshold: int = 128,
                 check: bool = True, seed: int = 0, synthetic_fraction: float = 0.0,
                 synthetic_appearance: str = "ink", synthetic_dir: str | Path | None = None,
                 cache_images: bool | str = "auto", cache_max_gb: float = 2.0,
                 instance_min_area: int | None = None, learns_masks: bool = False) -> None:
        super().__init__()
        self.source = source
        self.preprocess = preprocess
        self.split_cfg = dict(split)
        self.augment = augment
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        if cache_images not in (True, False, "auto"):
            raise ConfigError(f"data.cache_images={cache_images!r}: use true, false or auto")
        self.cache_images = cache_images
        self.cache_max_gb = float(cache_max_gb)
        self.mask_threshold = mask_threshold
        self.instance_min_area = instance_min_area
        """Set for instance models: the loader workers build their Mask R-CNN targets."""
        self.learns_masks = learns_masks
        """True for models that learn from pixel masks: training needs bad images with masks, and its
        augmentations may crop (a crop keeps the mask exact)."""
        self.check = check
        self.seed = seed
        self.synthetic_fraction = float(synthetic_fraction or 0.0)
        self.synthetic_appearance = synthetic_appearance
        self.synthetic_dir = Path(synthetic_dir) if synthetic_dir else Path("data") / "synthetic_train"
        if self.synthetic_fraction < 0:
            raise ConfigError(f"data.synthetic_fraction={synthetic_fraction} must be >= 0")
        self.index: SampleIndex | None = None
        self.splits: dict[str, list] = {}
        self.datasets: dict[str, ImageDataset] = {}

    @property
    def class_names(self) -> list[str]:
        return self.load_index().class_names

    def prepare_data(self) -> None:
        """Generate / download-free caching happens once, on the main process."""
        self.source.load()

    def load_index(self) -> SampleIndex:
        if self.index is None:
            index = self.source.load()
            if not index.samples:
                raise DataError(f"the data source {type(self.source).__name__} found no images; check data.root")
            if self.check:
                self._stop_on_fatal(index)
            self.index = index
        return self.index

    def _stop_on_fatal(self, index: SampleIndex) -> None:
        from scratchlab.data.checking import check_index, stop_on_fatal

        stop_on_fatal(check_index(index, mask_threshold=self.mask_threshold), log)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        index = self.load_index()
        s = self.split_cfg
        self.splits = split_samples(
            index.samples, fractions=(s["train"], s["val"], s["test"]), seed=s["seed"],
            stratify=s.get("stratify", True), dedupe=s.get("dedupe", True), split_file=s.get("file"),
            fold=s.get("fold"), num_folds=s.get("num_folds"))
        if self.synthetic_fraction > 0 and self.splits.get("train"):
            self.splits["train"] = self.splits["train"] + self._synthetic_train(index)
        if stage == "fit" and self.learns_masks:
            self._require_masks(index)
        cache = self._cache_wanted(sum(len(self.splits.get(name) or []) for name in SPLITS))
        for name in SPLITS:
            if not self.splits.get(name):
                raise DataError(f"the {name} split is empty ({len(index.samples)} images in all); "
                                f"add images or change data.split fractions")
            transform = build_transform(self.preprocess, self.augment, train=name == "train", seed=self.seed,
                                        geometry=not cache, crops=self.learns_masks)
            if cache:
                self.datasets[name] = CachedImageDataset(self.splits[name], transform, A.Compose(self.preprocess.geometry()),
                                                         self.mask_threshold, self.preprocess)
            else:
                self.datasets[name] = ImageDataset(self.splits[name], transform, self.mask_threshold, self.preprocess)
            self.datasets[name].instance_min_area = self.instance_min_area
            self.datasets[name].crops = name == "train" and self.learns_masks and holds_crop(transform)

    def _cache_wanted(self, count: int) -> bool:
        """Keep the images in memory after resizing: always (true), never (false), or when ``count`` of them
        fit in ``cache_max_gb`` (auto; native-resolution inputs, whose size is unknown, are not cached)."""
        if self.cache_images != "auto":
            return bool(self.cache_images)
        need = cache_bytes(self.preprocess, count)
        return need is not None and need <= self.cache_max_gb * 2**30

    def _synthetic_train(self, index: SampleIndex) -> list:
        """``round(synthetic_fraction * len(train))`` bad images scratched from the training split's good
        images (never val or test), cached under ``synthetic_dir``; deterministic for the split seed."""
        from scratchlab.data.synth.appearance import APPEARANCES
        from scratchlab.data.synth.expand import synthesize_train

        if len(index.class_names) != 2:
            raise ConfigError(f"data.synthetic_fraction needs a binary good/bad data set; this one has "
                              f"{len(index.class_names)} classes ({', '.join(index.class_names)}); "
                              f"set data.synthetic_fraction=0")
        if self.synthetic_appearance not in APPEARANCES:
            raise ConfigError(f"data.synthetic_appearance={self.synthetic_appearance!r} is not one of "
                              f"{', '.join(APPEARANCES)}")
        train = self.splits["train"]
        goods = [s.image for s in train if s.label == 0]
        count = int(round(self.synthetic_fraction * len(train)))
        if count and not goods:
            raise DataError("data.synthetic_fraction needs good images in the training split to scratch")
        added = synthesize_train(goods, count, int(self.split_cfg.get("seed", 0)), self.synthetic_appearance,
                                 self.synthetic_dir)
        log.info("training split: %d images + %d synthetic bad images", len(train), len(added))
        return added

    def split_frame(self) -> pd.DataFrame:
        """The split actually used, one row per image (path, label, split, synthetic: made by
        data.synthetic_fraction)."""
        frame = splits_to_frame(self.splits)
        frame["synthetic"] = [bool(s.meta.get("synthetic", False)) for items in self.splits.values() for s in items]
        return frame

    def mask_pixel_counts(self, split: str = "train") -> tuple[int, int]:
        """(background, scratch) pixel counts over a split's images, from mask files and image headers."""
        total = scratch = 0
        for s in self.splits[split]:
            width, height, _ = image_info(s.image)
            total += width * height
            if s.mask is not None:
                scratch += int(read_mask(s.mask, threshold=self.mask_threshold).sum())
        return total - scratch, scratch

    def class_counts(self, split: str = "train") -> list[int]:
        counts = [0] * len(self.class_names)
        for s in self.splits[split]:
            counts[s.label] += 1
        return counts

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        common = {**worker_loading(self.num_workers, self.trainer.global_rank if self.trainer else 0),
                  "pin_memory": self.pin_memory, "persistent_workers": self.num_workers > 0,
                  "collate_fn": self._collate()}
        if isinstance(dataset, CachedImageDataset):
            dataset.fill()  # before the workers start, so they share it
        if not shuffle and self.preprocess.resize == "pad" and not self._distributed():
            # Native-size evaluation batches hold images of one input shape: none is padded beyond its own
            # input, and a segmenter judges each image from the batch's own forward pass.
            return DataLoader(dataset, batch_sampler=shape_batches(self._input_shapes(split), self.batch_size), **common)
        # A last training batch of one image breaks batch norm; drop it when there is more than one batch.
        drop_last = shuffle and len(dataset) > self.batch_size
        return DataLoader(dataset, batch_size=self.batch_size, drop_last=drop_last,
                          **seeded_loading(len(dataset), self.seed, shuffle, self._epoch()), **common)

    def _require_masks(self, index: SampleIndex) -> None:
        """A model that learns from masks needs bad training images with one: without any it would learn that
        no pixel is a scratch (a DataError); a bad image without a mask teaches the same of its scratches (a
        warning)."""
        bad = [s for s in self.splits.get("train") or [] if s.label != 0]
        unmasked = [s for s in bad if s.mask is None]
        if bad and len(unmasked) == len(bad):
            names = (f"; {len(index.orphans)} mask files match no image name (e.g. {index.orphans[0].name}): "
                     f"a mask must have its image's file name" if index.orphans else "")
            raise DataError(f"this model learns from pixel masks, but none of the {len(bad)} bad training images "
                            f"has one (e.g. {unmasked[0].image}){names}; add masks (masks/ beside bad/, named like "
                            f"the images) or train a classifier (model=cnn)")
        if unmasked:
            log.warning("%d of %d bad training images have no mask (e.g. %s); this model learns them as scratch-free",
                        len(unmasked), len(bad), unmasked[0].image)

    def _epoch(self) -> int:
        """The epoch Lightning hands the samplers next (``set_epoch``): a resumed run's, once restored; 0 outside
        a trainer."""
        return self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0

    def _distributed(self) -> bool:
        return self.trainer is not None and self.trainer.world_size > 1

    def _input_shapes(self, split: str) -> list[tuple[int, int]]:
        """Each image's network input (H, W) at native size: its content rounded up to ``pad_multiple``."""
        known, shapes = {}, []
        for s in self.splits[split]:
            width, height, _ = image_info(s.image)
            if (height, width) not in known:
                y0, y1, x0, x1 = content_box(self.preprocess, height, width)
                known[height, width] = self.preprocess.padded(y1 - y0, x1 - x0)
            shapes.append(known[height, width])
        return shapes

    def _collate(self) -> Callable | None:
        """Native-size (pad) batches are padded to their largest image with the preprocessing's black."""
        if self.preprocess.resize != "pad":
            return None
        return partial(pad_collate, fill=self.preprocess.pad_value())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
