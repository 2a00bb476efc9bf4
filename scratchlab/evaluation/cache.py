"""Raw model outputs on one data split, computed once and cached as a compact ``.npz``.

What is cached (everything a metric or a threshold sweep needs, nothing that depends on a threshold):

* per image the task's raw outputs (``BaseTask.raw_outputs``: class probabilities, or the float32
  scratch-probability map at network geometry cut to the image's content), the image's original size and,
  for models with maps, the true mask at the same geometry (for pixel metrics);
* the labels, the image paths, the model's spec (task, preprocessing, decision rule); Mask R-CNN also its
  box/mask mAP (which needs the instances, not the union map).

Scoring judges each cached output with the task class's own ``judge`` at the original image size, as the
test step and ``Predictor`` do. The cache key is the hash of the model's weights (``state_dict`` tensors,
so rewriting a checkpoint's operating point keeps the key), its model config, the data config that selects
and prepares the images (loader settings such as ``batch_size`` left out) and the split.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from scratchlab.checkpoints import ModelSpec, read_checkpoint
from scratchlab.errors import ConfigError, DataError
from scratchlab.postprocess import DecisionParams, Verdict

log = logging.getLogger(__name__)

CACHE_VERSION = 2
# Data settings that change how images are loaded, not which images or what the network sees.
LOADER_KEYS = ("batch_size", "num_workers", "pin_memory", "check", "augment")
TRAIN_ONLY_PREFIX = "synthetic_"  # data.synthetic_*: scratched copies added to the train split only


# ----------------------------------------------------------------------------------------------------------
# The model being evaluated


def weights_fingerprint(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes (independent of the file's other contents)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r};".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


@dataclass
class ModelSource:
    """A trained model as evaluation needs it: its run config, spec, stored operating point and a
    fingerprint of its weights; ``load_task()`` builds the LightningModule (only on a cache miss)."""

    config: dict[str, Any]
    spec: ModelSpec
    checkpoint: Path | None = None
    operating_point: Mapping[str, Any] | None = None
    fingerprint: str = ""
    class_counts: list[int] | None = None

    @property
    def kind(self) -> str:
        return self.spec.task

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> ModelSource:
        ckpt = read_checkpoint(path)
        return cls(config=ckpt.config, spec=ckpt.spec, checkpoint=ckpt.path, operating_point=ckpt.operating_point,
                   fingerprint=weights_fingerprint(ckpt.state_dict), class_counts=ckpt.class_counts)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelSource:
        """A model rebuilt from its run config alone (a task that trains nothing, such as two_stage)."""
        from scratchlab.tasks import task_class

        config = dict(config)
        task = task_class(str((config.get("model") or {}).get("task")))
        if task.needs_training:
            raise ConfigError("only runs of models that train nothing (two_stage) can be evaluated without a "
                              "checkpoint; give ckpt=PATH")
        spec, parts = task.spec_from_config(config)
        fingerprint = hashlib.sha256("".join(weights_fingerprint(p.state_dict) for p in parts).encode()).hexdigest()
        return cls(config=config, spec=spec, fingerprint=fingerprint)

    def load_task(self) -> Any:
        """The LightningModule in eval mode (runs the network only after this)."""
        from scratchlab.builders import build_task, load_task

        if self.checkpoint is not None:
            return load_task(self.checkpoint)
        return build_task(OmegaConf.create(self.config), self.class_names, self.class_counts).eval()


# ----------------------------------------------------------------------------------------------------------
# Cached predictions


@dataclass
class Predictions:
    """Raw outputs of one model on one split (see the module docstring)."""

    spec: ModelSpec
    labels: np.ndarray
    paths: list[str]
    class_names: list[str]
    raws: list[dict[str, np.ndarray]]
    sizes: np.ndarray
    """(N, 2) original height and width of each image."""
    masks: list[np.ndarray] | None = None
    extra_metrics: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def kind(self) -> str:
        return self.spec.task

    @property
    def segmentation(self) -> bool:
        """Whether the model gives probability maps (and the cache holds true masks for pixel metrics)."""
        return self.masks is not None

    @property
    def probs(self) -> np.ndarray:
        """(N, C) class probabilities of a classifier."""
        return np.stack([r["probs"] for r in self.raws]) if self.raws else np.zeros((0, len(self.class_names)))

    def prob_map(self, i: int) -> np.ndarray:
        """Image ``i``'s scratch probabilities at network geometry."""
        return self.raws[i]["prob_map"]

    def verdicts(self, params: DecisionParams) -> list[Verdict]:
        """Each image judged under ``params`` by the task class's own ``judge`` (original-size areas)."""
        from scratchlab.tasks import task_class

        judge, spec = task_class(self.spec.task).judge, self.spec.with_decision(params)
        return [judge(raw, tuple(size), spec) for raw, size in zip(self.raws, self.sizes.tolist())]

    def save(self, path: Path) -> None:
        """Write atomically (temporary file + rename), so a concurrent reader never sees half a file."""
        keys = sorted(self.raws[0]) if self.raws else []
        arrays: dict[str, np.ndarray] = {
            "spec": np.array(json.dumps(self.spec.to_dict())), "labels": np.asarray(self.labels, np.int64),
            "paths": np.array(self.paths, dtype=str), "class_names": np.array(self.class_names, dtype=str),
            "sizes": np.asarray(self.sizes, np.int64).reshape(-1, 2), "raw_keys": np.array(keys, dtype=str),
            "extra_metrics": np.array(json.dumps(self.extra_metrics)), "meta": np.array(json.dumps(self.meta))}
        named = {f"raw_{k}": [np.asarray(r[k], np.float32) for r in self.raws] for k in keys}
        if self.masks is not None:
            named["mask"] = [np.asarray(m, np.uint8) for m in self.masks]
        for name, items in named.items():
            arrays[f"{name}_shapes"] = np.array([a.shape for a in items], np.int64).reshape(len(items), -1)
            arrays[f"{name}_data"] = (np.concatenate([a.ravel() for a in items]) if items
                                      else np.zeros(0, np.uint8 if name == "mask" else np.float32))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz.tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.path = path

    @classmethod
    def load(cls, path: Path) -> Predictions:
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = [str(k) for k in z["raw_keys"]]
                per_key = {k: _unflatten(z, f"raw_{k}") for k in keys}
                n = len(z["labels"])
                out = cls(spec=ModelSpec.from_dict(json.loads(str(z["spec"]))), labels=z["labels"].astype(np.int64),
                          paths=[str(p) for p in z["paths"]], class_names=[str(c) for c in z["class_names"]],
                          raws=[{k: per_key[k][i] for k in keys} for i in range(n)], sizes=z["sizes"],
                          masks=_unflatten(z, "mask") if "mask_data" in z else None,
                          extra_metrics=json.loads(str(z["extra_metrics"])), meta=json.loads(str(z["meta"])),
                          path=path, from_cache=True)
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"prediction cache {path} cannot be read ({err}); delete it to recompute") from err
        return out


def _unflatten(z: Any, name: str) -> list[np.ndarray]:
    shapes, data = z[f"{name}_shapes"], z[f"{name}_data"]
    sizes = np.prod(shapes, axis=1).astype(np.int64) if shapes.shape[1] else np.ones(len(shapes), np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [data[a:b].reshape(tuple(s)) for a, b, s in zip(bounds[:-1], bounds[1:], shapes.tolist())]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def data_fingerprint_config(data_cfg: Mapping[str, Any], split: str = "test") -> dict[str, Any]:
    """The part of a resolved data config that decides which images a split holds and how they look
    (synthetic training images only matter for the train split)."""
    return {k: v for k, v in data_cfg.items()
            if k not in LOADER_KEYS and not (split != "train" and k.startswith(TRAIN_ONLY_PREFIX))}


def prediction_cache_key(source: ModelSource, data_cfg: Mapping[str, Any], split: str) -> str:
    """Weights fingerprint + model config + data config (loader settings left out) + split, hashed."""
    model = {k: v for k, v in (source.config.get("model") or {}).items()}
    payload = json.dumps({"version": CACHE_VERSION, "weights": source.fingerprint, "model": model,
                          "data": data_fingerprint_config(data_cfg, split), "split": split}, sort_keys=True,
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------------------------------------
# Running the network


def _to_device(batch: dict, device: str) -> dict:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def compute_predictions(source: ModelSource, cfg: DictConfig, split: str, device: str = "cpu") -> Predictions:
    """Run the model on every image of ``split`` of the data module built from ``cfg`` (a run config), batch by
    batch as the test step does (``BaseTask.batch_verdicts``)."""
    from torch.utils.data import DataLoader

    from scratchlab.builders import build_datamodule
    from scratchlab.data.dataset import ImageDataset, pad_collate, worker_loading
    from scratchlab.data.transforms import build_transform

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    if split not in dm.splits:
        raise ConfigError(f"split={split!r} is not one of {', '.join(dm.splits)}")
    names = dm.class_names
    if len(names) != len(source.class_names):
        raise ConfigError(f"the model was trained on {len(source.class_names)} classes "
                          f"({', '.join(source.class_names)}) but data={cfg.data.name} has {len(names)}")
    pad = dm.preprocess.resize == "pad"
    dataset = ImageDataset(dm.splits[split], build_transform(dm.preprocess), dm.mask_threshold, dm.preprocess)
    loader = DataLoader(dataset, batch_size=int(cfg.data.batch_size), shuffle=False,
                        collate_fn=pad_collate if pad else None, **worker_loading(int(cfg.data.num_workers)))
    log.info("running the model on %d %s images (%s)", len(dataset), split, cfg.data.name)
    task = source.load_task().to(device).eval()
    task.reset_evaluation_metrics()
    labels: list[int] = []
    paths: list[str] = []
    raws: list[dict[str, np.ndarray]] = []
    sizes: list[list[int]] = []
    masks: list[np.ndarray] = []
    for batch in loader:
        batch = _to_device(batch, device)
        labels += batch["label"].cpu().tolist()
        paths += list(batch["path"])
        sizes += batch["original_size"].tolist()
        batch_raws, _ = task.batch_verdicts(batch)
        raws += batch_raws
        task.update_evaluation_metrics(batch)
        for i, raw in enumerate(batch_raws):
            if "prob_map" in raw:
                h, w = raw["prob_map"].shape
                masks.append(batch["mask"][i, :h, :w].byte().cpu().numpy())
    meta = {"split": split, "data": str(cfg.data.name), "n_images": len(labels), "cache_version": CACHE_VERSION,
            "checkpoint": str(source.checkpoint) if source.checkpoint else None}
    return Predictions(spec=source.spec, labels=np.asarray(labels, np.int64), paths=paths, class_names=list(names),
                       raws=raws, sizes=np.asarray(sizes, np.int64).reshape(-1, 2),
                       masks=masks if len(masks) == len(raws) and raws else None,
                       extra_metrics=task.compute_evaluation_metrics(), meta=meta)


def get_predictions(source: ModelSource, cfg: DictConfig, split: str, cache_dir: str | Path, device: str = "cpu",
                    refresh: bool = False, fetch: Callable[[str, Path], bool] | None = None) -> Predictions:
    """Cached predictions of ``source`` on ``split``, computing (and caching) them on a miss.

    ``fetch(key, path)`` may place a cache file found elsewhere (an MLflow artifact) at ``path`` before
    the network is run; it returns whether it did.
    """
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    key = prediction_cache_key(source, data_cfg, split)
    path = Path(cache_dir) / f"{key}.npz"
    if not refresh and (path.is_file() or (fetch is not None and fetch(key, path) and path.is_file())):
        log.info("prediction cache hit: %s", path)
        preds = Predictions.load(path)
        preds.meta["key"] = key
        return preds
    preds = compute_predictions(source, cfg, split, device)
    preds.meta["key"] = key
    preds.save(path)
    log.info("prediction cache written: %s", path)
    return preds
