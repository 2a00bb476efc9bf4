"""A torch Dataset over ``Sample`` records: reads the image (and mask) and applies one transform."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.nn import functional as F
from torch.utils.data import Dataset, Sampler

from scratchlab.data.io import read_image, read_mask
from scratchlab.data.transforms import Preprocess, content_box
from scratchlab.data.types import Sample
from scratchlab.errors import DataError
from scratchlab.models.instance_targets import build_target, instances_from_mask

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Items are dicts: ``image`` (3,H,W float), ``label`` (int), ``mask`` (H,W float 0/1), ``path``,
    ``size``: the height and width the image takes in the input before padding (``resize=pad``), else as read;
    ``original_size``: the height and width of the image file. With ``instance_min_area`` set, also
    ``instances``: the Mask R-CNN target of the mask's connected components (built here, in the loader
    workers, not in the training step)."""

    instance_min_area: int | None = None
    crops: bool = False
    """True where the transform crops (training with ``augment=crops``): the whole crop counts as content."""

    def __init__(self, samples: list[Sample], transform: A.Compose, mask_threshold: int = 128,
                 preprocess: Preprocess | None = None) -> None:
        self.samples = samples
        self.transform = transform
        self.mask_threshold = mask_threshold
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Item ``key``: an index, or ``(index, augmentation seed)`` as ``EpochSampler`` yields them."""
        i, seed = key if isinstance(key, tuple) else (key, augmentation_seed(0, 0, key))
        seed_augmentations(self.transform, seed)
        s = self.samples[i]
        image, mask, original = self.load(i)
        out = self.transform(image=image, mask=mask)
        size = tuple(out["image"].shape[-2:]) if self.crops else self._content_size(*original)
        item = {"image": out["image"], "label": s.label, "mask": torch.as_tensor(out["mask"]).float(),
                "path": str(s.image), "size": torch.tensor(size), "original_size": torch.tensor(original)}
        if self.instance_min_area is not None:
            item["instances"] = instance_target(item["mask"], size, self.instance_min_area)
        return item

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Sample ``i``'s image and 0/1 mask as read (subclasses may return them already resized), and the
        (height, width) of the image file."""
        s = self.samples[i]
        image = read_image(s.image)
        if s.mask is not None:
            mask = read_mask(s.mask, threshold=self.mask_threshold)
            if mask.shape != image.shape[:2]:
                raise DataError(f"mask {s.mask} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                f"{image.shape[1]}x{image.shape[0]}; masks must match their images")
        else:
            mask = np.zeros(image.shape[:2], np.uint8)
        return image, mask, image.shape[:2]

    def _content_size(self, height: int, width: int) -> tuple[int, int]:
        """Height and width of the image inside the (padded) network input."""
        if self.preprocess is None or self.preprocess.resize != "pad":
            return height, width
        _, y1, _, x1 = content_box(self.preprocess, height, width)
        return y1, x1


def instance_target(mask: torch.Tensor, size: Sequence[int], min_area: int) -> dict[str, torch.Tensor]:
    """torchvision's detection target for the content (top-left ``size``) of one 0/1 network-geometry mask."""
    h, w = int(size[0]), int(size[1])
    return build_target(instances_from_mask(mask[:h, :w].numpy(), min_area))


def pad_collate(items: list[dict], fill: tuple[float, ...] = (0.0, 0.0, 0.0)) -> dict:
    """Collate items of different sizes by padding them at the bottom/right to the largest: images with
    the per-channel ``fill`` (``Preprocess.pad_value()``, the same black the transforms pad with), masks with 0."""
    height = max(it["image"].shape[-2] for it in items)
    width = max(it["image"].shape[-1] for it in items)
    value = torch.tensor(fill, dtype=items[0]["image"].dtype)[:, None, None]

    def pad_image(t: torch.Tensor) -> torch.Tensor:
        out = value.expand(t.shape[0], height, width).clone()
        out[:, : t.shape[-2], : t.shape[-1]] = t
        return out

    def pad_mask(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]))

    batch = {"image": torch.stack([pad_image(it["image"]) for it in items]),
             "mask": torch.stack([pad_mask(it["mask"]) for it in items]),
             "label": torch.tensor([it["label"] for it in items]),
             "size": torch.stack([it["size"] for it in items]),
             "original_size": torch.stack([it["original_size"] for it in items]),
             "path": [it["path"] for it in items]}
    if "instances" in items[0]:
        batch["instances"] = [it["instances"] for it in items]
    return batch


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The random seed of one sample's augmentations in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def seed_augmentations(transform: A.BaseCompose | A.BasicTransform, seed: int) -> None:
    """Seed ``transform`` and give each of its steps its own stream derived from ``seed``
    (albumentations' ``set_random_seed`` hands every step the same stream: both flips would always coincide)."""
    transform.set_random_seed(seed)
    steps = transform.transforms if isinstance(transform, A.BaseCompose) else []  # ColorJitter keeps functions there
    for step, child in zip(steps, np.random.SeedSequence(seed).generate_state(len(steps))):
        seed_augmentations(step, int(child))


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation seed)`` for ``n`` samples, shuffled (with ``shuffle``) from
    ``(seed, epoch)``, each sample's augmentation seeded from ``(seed, epoch, index)``: what a batch holds
    depends on neither the number of loader workers nor any global random state. Lightning calls
    ``set_epoch``; without it (a wrapping distributed sampler) each pass counts as the next epoch."""

    def __init__(self, n: int, seed: int, shuffle: bool, epoch: int = 0) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle else range(self.n)
        return iter([(int(i), augmentation_seed(self.seed, epoch, int(i))) for i in order])


def shape_batches(shapes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped by network input shape (groups in order of first appearance, each in index order) and
    cut into batches of at most ``batch_size``: no image is padded beyond its own input."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return [idx[k:k + batch_size] for idx in groups.values() for k in range(0, len(idx), batch_size)]


WORKER_GRACE_S = 30
"""How long a loader worker outlives a SIGTERM: the main process stops its workers itself; a stuck one still goes."""


def _exit_soon(signum: int, frame: Any) -> None:
    if hasattr(signal, "alarm"):  # SIGALRM's default action ends the worker
        signal.alarm(WORKER_GRACE_S)


_PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this worker when the thread of ``parent`` that started it ends: a worker
    stuck in C code runs no Python signal handler and no watchdog, and outlived a main process killed hard
    (``kill -9``, the out-of-memory killer) as an orphan holding its memory. Workers that ``parent`` did not
    start itself (a forkserver's) are left as they are."""
    if not sys.platform.startswith("linux") or os.getppid() != parent:
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL)) != 0:  # e.g. a container's seccomp filter refuses it
            log.debug("loader worker: prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it ended before the call above
        os._exit(1)


def worker_init(worker_id: int, rank: int = 0, parent: int | None = None) -> None:
    """Start of a loader worker. Ctrl-C and SIGTERM are left to the main process, which stops its workers
    itself: a terminal's Ctrl-C (or ``timeout``) signals the whole process group, and workers dying mid-batch
    turned an interrupt into a crash with nothing to resume from. The worker dies with ``parent`` (the process
    that made the loader). Then Lightning's worker seeding, as it adds it itself when
    ``seed_everything(workers=True)`` asked for it and a loader has no ``worker_init_fn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_soon)
    if parent is not None:
        _end_with_parent(parent)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank)


def worker_loading(num_workers: int, rank: int = 0) -> dict:
    """``DataLoader`` arguments for ``num_workers`` loader processes that start with :func:`worker_init`.

    With workers, OpenCV runs single-threaded from here on, here and in them: a worker forked while OpenCV's
    own thread pool held a lock inherits it locked, and hangs for good in its first parallel OpenCV call (seen
    in ``cv2.LUT`` on a loaded machine, a run that never ended). scratchlab's own decoding threads live as long
    as the process for the same reason (``scratchlab.data.io.decode_pool``)."""
    if num_workers <= 0:
        return {"num_workers": 0}
    cv2.setNumThreads(0)
    return {"num_workers": num_workers, "worker_init_fn": partial(worker_init, rank=rank, parent=os.getpid())}


def seeded_loading(n: int, seed: int, shuffle: bool, epoch: int = 0) -> dict:
    """``DataLoader`` arguments for ``n`` samples that make loading reproducible for any ``num_workers``:
    an ``EpochSampler`` starting at ``epoch`` and the loader's own generator (worker seeds drawn from it, not
    from torch's). Loader workers draw their first batches as the loader is iterated, before Lightning sets the
    epoch: a loader made for a resumed run must start at the run's epoch."""
    return {"sampler": EpochSampler(n, seed, shuffle, epoch), "generator": torch.Generator().manual_seed(seed)}
