"""Augmentations are seeded per sample from (seed, epoch, index): results do not depend on data.num_workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scratchlab.config import compose
from scratchlab.data.dataset import ImageDataset, seed_augmentations, seeded_loading, worker_loading
from scratchlab.data.sources.folder import FolderSource
from scratchlab.data.transforms import Preprocess, build_transform
from scratchlab.training import run_training
from tests.conftest import tiny_overrides

AUGMENT = {"hflip": {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
           "vflip": {"_target_": "albumentations.VerticalFlip", "p": 0.5},
           "brightness": {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5}}


def _epochs(dataset: ImageDataset, workers: int, epochs: int = 2) -> list[torch.Tensor]:
    loader = DataLoader(dataset, batch_size=4, num_workers=workers, persistent_workers=workers > 0,
                        **seeded_loading(len(dataset), seed=3, shuffle=True))
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out.append(torch.cat([batch["image"] for batch in loader]))
    return out


def test_batches_are_the_same_for_any_number_of_workers(tiny_dataset: Path) -> None:
    samples = FolderSource(tiny_dataset).load().samples[:16]
    dataset = ImageDataset(samples, build_transform(Preprocess(image_size=32), AUGMENT, train=True, seed=3))
    serial, parallel = _epochs(dataset, workers=0), _epochs(dataset, workers=2)
    for a, b in zip(serial, parallel):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(serial[0], serial[1]), "each epoch gets its own shuffle and augmentations"


def test_each_augmentation_step_has_its_own_stream() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    seen = set()
    for seed in range(40):
        seed_augmentations(flips, seed)
        corner = int(flips(image=image)["image"][0, 0])
        seen.add((corner in (3, 11), corner in (8, 11)))  # (flipped left-right, flipped up-down)
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_training_metrics_are_the_same_with_0_and_2_workers(tmp_path: Path, tiny_dataset: Path) -> None:
    runs = []
    for workers in (0, 2):
        overrides = tiny_overrides(tmp_path, tiny_dataset, f"w{workers}") + [
            f"data.num_workers={workers}", "augment=light", "data.cache_images=false", "seed=5"]
        runs.append(run_training(compose("train", overrides)))
    assert runs[0] == runs[1]


class _OpenCVThreads(torch.utils.data.Dataset):
    """Each item: the number of threads OpenCV uses where the item is loaded."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return cv2.getNumThreads()


def test_loader_workers_run_opencv_single_threaded() -> None:
    """A worker forked while OpenCV's thread pool holds a lock hangs in its first parallel OpenCV call: loaders
    with workers run OpenCV single-threaded in the process that forks them and in the workers."""
    cv2.setNumThreads(-1)  # OpenCV's default: one thread per core
    if cv2.getNumThreads() < 2:
        pytest.skip("one core: OpenCV is single-threaded anyway")
    try:
        assert [int(n) for n in DataLoader(_OpenCVThreads(), batch_size=None, **worker_loading(2))] == [1] * 4
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(-1)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie awaiting its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


STUCK_LOADER = """
import os, time
from torch.utils.data import DataLoader, Dataset
from scratchlab.data.dataset import worker_loading

class Stuck(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        print(os.getpid(), flush=True)
        time.sleep(300)  # a worker that never returns to Python's signal handling or the loader's watchdog
        return index

next(iter(DataLoader(Stuck(), batch_size=None, **worker_loading(1))))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_stuck_loader_worker_ends_with_a_main_process_killed_hard() -> None:
    main = subprocess.Popen([sys.executable, "-c", STUCK_LOADER], stdout=subprocess.PIPE, text=True)
    worker = int(main.stdout.readline())
    try:
        main.kill()
        main.wait()
        deadline = time.monotonic() + 20
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(worker), "the loader worker outlived its killed main process"
    finally:
        if _running(worker):
            os.kill(worker, signal.SIGKILL)
