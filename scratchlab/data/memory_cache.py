"""Images kept in memory after the geometry step, so decoding and resizing happen once per run."""
from __future__ import annotations

import logging

import albumentations as A
import numpy as np

from scratchlab.data.dataset import ImageDataset
from scratchlab.data.io import decode_pool
from scratchlab.data.transforms import Preprocess
from scratchlab.data.types import Sample

log = logging.getLogger(__name__)


def cache_bytes(pre: Preprocess, count: int) -> int | None:
    """Memory ``count`` images take at network geometry (RGB + mask, uint8); None when the size is not known
    before reading (native-resolution ``resize=pad``)."""
    if pre.image_size is None:
        return None
    side = pre.padded(pre.image_size, pre.image_size)[0] if pre.resize == "pad" else pre.image_size
    return count * side * side * 4


class CachedImageDataset(ImageDataset):
    """An ``ImageDataset`` whose images and masks are decoded and resized once, in ``fill()``, and then
    served from memory; ``transform`` holds only what follows the geometry (augmentations, normalization).
    Loader workers started after ``fill()`` share the filled cache."""

    def __init__(self, samples: list[Sample], transform: A.Compose, geometry: A.Compose, mask_threshold: int = 128,
                 preprocess: Preprocess | None = None) -> None:
        super().__init__(samples, transform, mask_threshold, preprocess)
        self.geometry = geometry
        self.cache: list[tuple[np.ndarray, np.ndarray, tuple[int, int]] | None] = [None] * len(samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        if self.cache[i] is None:
            image, mask, original = super().load(i)
            placed = self.geometry(image=image, mask=mask)
            self.cache[i] = (placed["image"], placed["mask"], original)
        return self.cache[i]

    def fill(self) -> None:
        """Decode and resize every image now, on ``decode_pool``'s threads (OpenCV and Pillow release the GIL)."""
        list(decode_pool().map(self.load, range(len(self.samples))))
