"""Raw model outputs on one data split, computed once and cached as a compact ``.npz``.

What is cached (everything a metric or a threshold sweep needs, nothing that depends on a threshold):

* classifiers: the class probabilities per image ((N, C) float32; column 1 is P(bad) for good/bad models);
* segmentation kinds (segmentation, instance, two_stage): per image the scratch-probability map cropped to
  the image (padding removed) as uint8 (probability x 255, rounded) and the true mask (uint8 0/1), at the
  geometry the network saw (the image's own size for ``resize=pad``), stored as one flat array each plus the
  per-image shapes;
* always: the labels, the image paths, the class names; Mask R-CNN also its box/mask mAP (which needs the
  instances, not the union map).

The cache key is the hash of the model's weights (``state_dict`` tensors, so rewriting a checkpoint's
operating point keeps the key), its model config, the data config that selects and prepares the images
(loader settings such as ``batch_size`` left out) and the split.
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

from scratchlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SEGMENTATION_KINDS = ("segmentation", "instance", "two_stage")
KINDS = ("classification", *SEGMENTATION_KINDS)
# Data settings that change how images are loaded, not which images or what the network sees.
LOADER_KEYS = ("batch_size", "num_workers", "pin_memory", "check", "augment")
TRAIN_ONLY_PREFIX = "synthetic_"  # data.synthetic_*: scratched copies added to the train split only


# ----------------------------------------------------------------------------------------------------------
# The model being evaluated


def _load_checkpoint(path: Path) -> dict:
    """The checkpoint dict, memory-mapped when possible; user errors come from ``read_checkpoint``."""
    import torch

    from scratchlab.checkpoints import read_checkpoint

    if path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
            if isinstance(ckpt, dict) and "config" in ckpt.get("hyper_parameters", {}):
                return ckpt
        except Exception:  # noqa: BLE001 - read_checkpoint gives the one-line message
            pass
    return read_checkpoint(path)


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
    """A trained model as evaluation needs it: its run config, class names, stored operating point and a
    fingerprint of its weights; ``load_task()`` builds the LightningModule (only on a cache miss)."""

    config: dict[str, Any]
    class_names: list[str]
    checkpoint: Path | None = None
    operating_point: Mapping[str, Any] | None = None
    fingerprint: str = ""
    class_counts: list[int] | None = None

    @property
    def kind(self) -> str:
        return str((self.config.get("model") or {}).get("task", "classification"))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> ModelSource:
        path = Path(path).expanduser().resolve()
        ckpt = _load_checkpoint(path)
        hp = ckpt["hyper_parameters"]
        config = hp["config"]
        if not isinstance(config, dict):
            config = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
        return cls(config=config, class_names=list(hp.get("class_names") or ["good", "bad"]), checkpoint=path,
                   operating_point=hp.get("operating_point"), fingerprint=weights_fingerprint(ckpt["state_dict"]),
                   class_counts=hp.get("class_counts"))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelSource:
        """A model rebuilt from its run config alone: two_stage runs, which train nothing and keep no checkpoint."""
        config = dict(config)
        model = config.get("model") or {}
        if model.get("task") != "two_stage":
            raise ConfigError("only two_stage runs can be evaluated without a checkpoint; give ckpt=PATH")
        parts = [ModelSource.from_checkpoint(model[k]).fingerprint for k in ("classifier_ckpt", "segmenter_ckpt")]
        return cls(config=config, class_names=["good", "bad"], fingerprint=hashlib.sha256("".join(parts).encode())
                   .hexdigest())

    def load_task(self) -> Any:
        """The LightningModule in eval mode (runs the network only after this)."""
        if self.checkpoint is not None:
            from scratchlab.checkpoints import load_task

            return load_task(self.checkpoint)
        from scratchlab.builders import build_task

        return build_task(OmegaConf.create(self.config), self.class_names, self.class_counts).eval()


# ----------------------------------------------------------------------------------------------------------
# Cached predictions


@dataclass
class Predictions:
    """Raw outputs of one model on one split (see the module docstring)."""

    kind: str
    labels: np.ndarray
    paths: list[str]
    class_names: list[str]
    probs: np.ndarray | None = None
    maps: list[np.ndarray] | None = None
    masks: list[np.ndarray] | None = None
    extra_metrics: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def segmentation(self) -> bool:
        return self.kind in SEGMENTATION_KINDS

    def prob_map(self, i: int) -> np.ndarray:
        """Image ``i``'s scratch probabilities as float32 in [0, 1]."""
        return self.maps[i].astype(np.float32) / 255.0

    def save(self, path: Path) -> None:
        """Write atomically (temporary file + rename), so a concurrent reader never sees half a file."""
        arrays: dict[str, np.ndarray] = {
            "kind": np.array(self.kind), "labels": np.asarray(self.labels, np.int64),
            "paths": np.array(self.paths, dtype=str), "class_names": np.array(self.class_names, dtype=str),
            "extra_metrics": np.array(json.dumps(self.extra_metrics)), "meta": np.array(json.dumps(self.meta))}
        if self.segmentation:
            arrays["shapes"] = np.array([m.shape for m in self.maps], np.int32).reshape(-1, 2)
            arrays["map_data"] = np.concatenate([m.ravel() for m in self.maps]) if self.maps else np.zeros(0, np.uint8)
            arrays["mask_data"] = (np.concatenate([m.ravel() for m in self.masks]) if self.masks
                                   else np.zeros(0, np.uint8))
        else:
            arrays["probs"] = np.asarray(self.probs, np.float32)
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
                kind = str(z["kind"])
                out = cls(kind=kind, labels=z["labels"].astype(np.int64), paths=[str(p) for p in z["paths"]],
                          class_names=[str(c) for c in z["class_names"]],
                          extra_metrics=json.loads(str(z["extra_metrics"])), meta=json.loads(str(z["meta"])),
                          path=path, from_cache=True)
                if kind in SEGMENTATION_KINDS:
                    shapes = z["shapes"]
                    bounds = np.concatenate([[0], np.cumsum(shapes[:, 0].astype(np.int64) * shapes[:, 1])])
                    map_data, mask_data = z["map_data"], z["mask_data"]
                    out.maps = [map_data[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes)]
                    out.masks = [mask_data[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes)]
                else:
                    out.probs = z["probs"]
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"prediction cache {path} cannot be read ({err}); delete it to recompute") from err
        return out


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
    """Run the model on every image of ``split`` of the data module built from ``cfg`` (a run config)."""
    import torch
    from torch.utils.data import DataLoader

    from scratchlab.builders import build_datamodule
    from scratchlab.data.dataset import ImageDataset, pad_collate
    from scratchlab.data.transforms import build_transform
    from scratchlab.tasks.classification import logits_to_probs

    kind = source.kind
    if kind not in KINDS:
        raise ConfigError(f"model.task={kind!r} cannot be evaluated; tasks are {', '.join(KINDS)}")
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    if split not in dm.splits:
        raise ConfigError(f"split={split!r} is not one of {', '.join(dm.splits)}")
    names = dm.class_names
    if kind == "classification" and len(names) != len(source.class_names):
        raise ConfigError(f"the model was trained on {len(source.class_names)} classes "
                          f"({', '.join(source.class_names)}) but data={cfg.data.name} has {len(names)}")
    if kind != "classification" and len(names) != 2:
        raise ConfigError(f"segmentation models need a binary data set (good/bad with masks), "
                          f"data={cfg.data.name} has {len(names)} classes")
    pad = dm.preprocess.resize == "pad"
    dataset = ImageDataset(dm.splits[split], build_transform(dm.preprocess), dm.mask_threshold, dm.preprocess)
    loader = DataLoader(dataset, batch_size=int(cfg.data.batch_size), shuffle=False,
                        num_workers=int(cfg.data.num_workers), collate_fn=pad_collate if pad else None)
    log.info("running the model on %d %s images (%s)", len(dataset), split, cfg.data.name)
    task = source.load_task().to(device).eval()
    task.log = lambda *args, **kwargs: None  # the tasks' own logging needs a Trainer; evaluation logs itself
    if kind == "instance":
        task.map_metrics["test"].reset()
    labels: list[int] = []
    paths: list[str] = []
    probs: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    with torch.no_grad():
        for batch in loader:
            batch = _to_device(batch, device)
            labels += batch["label"].cpu().tolist()
            paths += list(batch["path"])
            if kind == "classification":
                probs.append(logits_to_probs(task(batch["image"]).float()).cpu().numpy())
                continue
            _, p = task.loss_and_probs(batch, "test")
            for i in range(len(p)):
                h, w = batch["size"][i].tolist() if pad else p.shape[1:]
                maps.append((p[i, :h, :w].float() * 255).round().byte().cpu().numpy())
                masks.append(batch["mask"][i, :h, :w].byte().cpu().numpy())
    extra: dict[str, float] = {}
    if kind == "instance":
        from scratchlab.tasks.instance import MAP_KEYS

        values = task.map_metrics["test"].compute()
        extra = {f"{name}_{iou}": float(values[f"{iou}_{key}"]) for iou in ("bbox", "segm") for key, name in
                 MAP_KEYS.items()}
    meta = {"split": split, "data": str(cfg.data.name), "n_images": len(labels), "cache_version": CACHE_VERSION,
            "checkpoint": str(source.checkpoint) if source.checkpoint else None,
            "pad": pad, "probability_scale": 255 if kind != "classification" else None}
    out = Predictions(kind=kind, labels=np.asarray(labels, np.int64), paths=paths, class_names=list(names),
                      extra_metrics=extra, meta=meta)
    if kind == "classification":
        out.probs = np.concatenate(probs) if probs else np.zeros((0, len(names)), np.float32)
    else:
        out.maps, out.masks = maps, masks
    return out


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
