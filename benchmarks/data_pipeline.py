"""Does loading starve training? Images/s of the generator, the training loader and the training step.

    python benchmarks/data_pipeline.py                     # built-in synthetic data, model=cnn (100 px, batch 32)
    python benchmarks/data_pipeline.py --images 1000 data=neu data.root=/path/to/NEU-DET
    python benchmarks/data_pipeline.py model=convnext      # any Hydra override of conf/train.yaml

Everything is built through ``scratchlab.config.compose`` + ``scratchlab.builders``, so it measures the
pipeline a real run uses (source, check, split, albumentations augment + preprocess, DataLoader, model,
loss, optimizer). Measured:
  (a) the text_scratch generator (images rendered and written per second);
  (b) the training loader, iterated alone, with data.num_workers 0 and 2 (startup reported apart);
  (c) the training step: forward + loss + metrics + backward + optimizer step on random batches;
  (d) both together (a bare training loop), and the ratio loader/step: below 1 the step waits for data.
Nothing is written into the checkout: data, runs and logs go to a temporary folder, removed at the end
(``--keep`` keeps it). CPU steal (a shared VM's hypervisor taking time) is printed beside each figure.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scratchlab.builders import build_datamodule, build_task
from scratchlab.config import compose
from scratchlab.tasks.classification import logits_to_probs


class CpuSteal:
    """Share of CPU time the hypervisor took away (``steal`` in /proc/stat) while the block ran; None off Linux.

    On a shared VM a high share means the figure measured there is low and noisy, not the code."""

    def __enter__(self) -> "CpuSteal":
        self.start, self.share = self._read(), None
        return self

    def __exit__(self, *exc) -> None:
        end = self._read()
        if self.start and end:
            total = sum(end) - sum(self.start)
            self.share = (end[7] - self.start[7]) / total if total > 0 else 0.0

    @staticmethod
    def _read() -> list[int] | None:
        try:
            return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        except (OSError, ValueError, IndexError):
            return None

    def __str__(self) -> str:
        return "" if self.share is None else f", cpu steal {self.share:.0%}"


def _has(module: str, attr: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


def bench_generator(root: Path, n: int, base: list[str]) -> tuple[list[str] | None, str]:
    """(a) Render ``n`` text_scratch images; returns the data overrides that use them, and a result line."""
    if _has("scratchlab.data.sources.synthetic", "SyntheticSource"):
        data = ["data=text_scratch", f"data.source.count={n}", f"data.source.root={root / 'synthetic'}"]
        source = _instantiate_source(base + data)
        t = time.perf_counter()
        index = source.load()
        dt = time.perf_counter() - t
        return data, f"(a) generator (SyntheticSource.load, render + write): {len(index.samples) / dt:8.1f} images/s " \
                     f"({len(index.samples)} images in {dt:.1f} s)"
    if _has("scratchlab.data.synth.text", "render_text"):
        from scratchlab.data.synth.text import render_text

        folder = root / "rendered"
        t = time.perf_counter()
        render_s = 0.0
        for i in range(n):
            bad = i % 5 == 0  # about 4 good : 1 bad, as the real data
            r0 = time.perf_counter()
            result = render_text(seed=i, bad=bad, params=None)
            render_s += time.perf_counter() - r0
            _write_pair(folder, f"{'b' if bad else 'g'}{i:05d}.png", result.image, result.mask if bad else None)
        dt = time.perf_counter() - t
        return ["data=folder", f"data.root={folder}"], (
            f"(a) generator (render_text; SyntheticSource not there yet, files written by this script): "
            f"{n / render_s:8.1f} images/s rendering, {n / dt:.1f} images/s with PNG writing ({n} images)")
    return None, ("(a) generator: skipped, neither scratchlab.data.sources.synthetic nor "
                  "scratchlab.data.synth exists yet")


def _write_pair(folder: Path, name: str, image: np.ndarray, mask: np.ndarray | None) -> None:
    import cv2

    sub = "bad" if mask is not None else "good"
    for s in (sub, "masks"):
        (folder / s).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / sub / name), image[..., ::-1])
    if mask is not None:
        cv2.imwrite(str(folder / "masks" / name), mask)


def write_plain_folder(folder: Path, n: int, seed: int = 0) -> list[str]:
    """Fallback data when no generator exists: ~300x125 gray label-like images (sizes as the real data)."""
    import cv2

    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(98, 300)), int(rng.integers(177, 330))
        img = np.full((h, w), 250, np.uint8)
        cv2.putText(img, "68P0", (w // 8, h // 2 + 15), cv2.FONT_HERSHEY_SIMPLEX, h / 80, 40, max(2, h // 25))
        bad = i % 5 == 0
        mask = np.zeros_like(img)
        if bad:
            cv2.line(mask, (0, int(rng.integers(0, h))), (w - 1, int(rng.integers(0, h))), 255, 4)
            img = np.where(mask > 0, 200, img).astype(np.uint8)
        img = (img + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)
        _write_pair(folder, f"{'b' if bad else 'g'}{i:05d}.png", np.stack([img] * 3, -1), mask if bad else None)
    return ["data=folder", f"data.root={folder}"]


def _instantiate_source(overrides: list[str]):
    from hydra.utils import instantiate

    return instantiate(compose("train", overrides).data.source)


def bench_loader(overrides: list[str], workers: int, epochs: int) -> tuple[float, float, int]:
    """(b) Iterate the train loader alone: (steady images/s, first-batch seconds, images seen)."""
    dm = build_datamodule(compose("train", overrides + [f"data.num_workers={workers}"]))
    dm.setup("fit")
    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    first = None
    seen = 0
    for _ in range(epochs):
        for batch in loader:
            if first is None:
                first = time.perf_counter() - t0
                t1 = time.perf_counter()
                continue
            seen += len(batch["label"])
    dt = time.perf_counter() - t1
    _shutdown(loader)
    return seen / dt, first, seen


def _shutdown(loader) -> None:
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()


def _task_and_optimizer(cfg, class_names: list[str], counts: list[int]):
    task = build_task(cfg, class_names, counts)
    task.train()
    optimizer = task.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    return task, optimizer


def _step(task, optimizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    """What ``ClassificationTask.training_step`` does, plus the optimizer step Lightning adds."""
    logits = task(images)
    loss = task.loss(logits, labels)
    task.metrics["train_metrics"].update(logits_to_probs(logits.detach().float()), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bench_step(overrides: list[str], steps: int, chunks: int = 5) -> tuple[float, float, float, int, int]:
    """(c) Training steps on random batches at the configured size, timed in ``chunks`` groups:
    (median, min, max images/s over the groups, batch size, image size)."""
    cfg = compose("train", overrides)
    batch, size = int(cfg.data.batch_size), int(cfg.model.image_size)
    task, optimizer = _task_and_optimizer(cfg, ["good", "bad"], [4, 1])
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 2, (batch,))
    for _ in range(3):  # warm-up
        _step(task, optimizer, images, labels)
    per_chunk = max(1, steps // chunks)
    rates = []
    for _ in range(chunks):
        t = time.perf_counter()
        for _ in range(per_chunk):
            _step(task, optimizer, images, labels)
        rates.append(per_chunk * batch / (time.perf_counter() - t))
    return float(np.median(rates)), min(rates), max(rates), batch, size


def bench_loop(overrides: list[str], workers: int, epochs: int) -> float:
    """(d) Loader and step together, as in training (they share the CPU cores): images/s after the first batch."""
    cfg = compose("train", overrides + [f"data.num_workers={workers}"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    task, optimizer = _task_and_optimizer(cfg, dm.class_names, dm.class_counts("train"))
    loader = dm.train_dataloader()
    seen, t1 = 0, None
    for _ in range(epochs):
        for batch in loader:
            _step(task, optimizer, batch["image"], batch["label"])
            if t1 is None:
                t1 = time.perf_counter()
                continue
            seen += len(batch["label"])
    dt = time.perf_counter() - t1
    _shutdown(loader)
    return seen / dt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=600, help="synthetic images to render (default 600)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the train split per loader measurement")
    parser.add_argument("--steps", type=int, default=25, help="timed training steps on random batches")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, runs)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=neu data.root=PATH model=resnet50")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import warnings

    warnings.filterwarnings("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="scratchlab-bench-"))
    base = [f"paths.root_dir={tmp}", f"hydra.run.dir={tmp}/run", "model=cnn", *args.overrides]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; tmp {tmp}")

    user_data = any(o.startswith("data=") for o in args.overrides)
    if user_data:
        data: list[str] = []
        print("(a) generator: not measured (data=... given)")
    else:
        data, line = bench_generator(tmp, args.images, base)
        print(line, flush=True)
        if data is None:
            data = write_plain_folder(tmp / "plain", args.images)
            print(f"    loader data: {args.images} plain label-like images written by this script")
    overrides = base + data
    cfg = compose("train", overrides)
    print(f"config: data={cfg.data.name} model={cfg.model.name} image_size={cfg.model.image_size} "
          f"batch_size={cfg.data.batch_size} augment={list(cfg.data.get('augment') or [])} resize={cfg.data.resize}")

    with CpuSteal() as steal:
        step_ips, lo, hi, batch, size = bench_step(overrides, args.steps)
    print(f"(c) training step (fwd+bwd+optimizer, random {batch}x3x{size}x{size}): {step_ips:8.1f} images/s "
          f"(median of 5 groups, range {lo:.0f}-{hi:.0f}{steal})", flush=True)
    for workers in (0, 2):
        with CpuSteal() as steal_load:
            load_ips, first, seen = bench_loader(overrides, workers, args.epochs)
        with CpuSteal() as steal_loop:
            loop_ips = bench_loop(overrides, workers, args.epochs)
        print(f"(b) train loader, num_workers={workers}: {load_ips:8.1f} images/s (first batch {first:.2f} s, "
              f"{seen} images{steal_load}) | loader/step = {load_ips / step_ips:5.2f}", flush=True)
        print(f"(d) loader + step together, num_workers={workers}: {loop_ips:8.1f} images/s{steal_loop}", flush=True)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print("loader/step < 1: the step waits for data (loading starves training); > 1: the model is the bottleneck.\n"
          "(d) near (c): loading costs training nothing; (d) well below (c): loader and step fight for the cores.")


if __name__ == "__main__":
    sys.exit(main())
