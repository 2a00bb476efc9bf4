"""What every task shares: the one inference path, the checkpoint's spec block, optimizer/scheduler from
config factories, per-stage metrics logged per epoch.

Every way of judging an image (the test step, ``scratchlab.evaluate``, ``Predictor`` and exported models)
goes through two steps each task class defines once:

1. ``raw_outputs``: network input batch -> per image a dict of numpy arrays at network geometry
   (``probs`` for classifiers, ``prob_map`` for models that localize scratches);
2. ``judge`` (a classmethod, so exported files without a task object use it too): one raw output and the
   image's original size -> ``Verdict``. Probability maps are brought back to the original size first,
   so every area is counted in original-image pixels.

``predict_images`` chains them for images given at their original size.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import wraps
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torchmetrics import Metric

from scratchlab.checkpoints import KEY, Checkpoint, ModelSpec, checkpoint_block
from scratchlab.data.transforms import Preprocess, build_transform, content_box
from scratchlab.errors import ConfigError
from scratchlab.postprocess import DecisionParams, Verdict
from scratchlab.tta import FlipAverage, flip_names, spec_flips, tta_options

STAGES = ("train", "val", "test")
Raw = dict[str, np.ndarray]
INPUT_NAME = "image"
"""The input of an exported graph: (N, H, W, 3) uint8 RGB images at network geometry (``pre.geometry()``)."""


def full_precision(step: Callable) -> Callable:
    """A validation or test step that runs in float32 under a mixed-precision trainer (``trainer=gpu``'s
    16-mixed), as ``evaluate``, ``predict`` and exported models do: its metrics, verdicts and the best checkpoint's
    choice are then those of the inference path. Training steps keep the trainer's precision."""

    @wraps(step)
    def step_in_float32(self: pl.LightningModule, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device.type, enabled=False):
            return step(self, *args, **kwargs)

    return step_in_float32


class TrainCounts(NamedTuple):
    """What the training split holds, for "auto" loss weights: images per class, (background, scratch) pixels."""

    classes: list[int] | None = None
    pixels: tuple[int, int] | None = None


class NormalizedInput(nn.Module):
    """uint8 (N, H, W, 3) RGB at network geometry -> ``net`` on the normalized (N, 3, H, W) float input;
    normalization as albumentations does it: ``(x - mean * 255) * (1 / (std * 255))`` in float32."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        mean255 = (np.asarray(mean, np.float64) * 255).astype(np.float32)
        inv = np.reciprocal(np.asarray(std, np.float64) * 255).astype(np.float32)
        self.register_buffer("mean", torch.from_numpy(mean255).view(1, -1, 1, 1))
        self.register_buffer("inv_std", torch.from_numpy(inv).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> Any:
        return self.net((image.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std)


def require_binary(spec: ModelSpec, what: str) -> None:
    if len(spec.class_names) != 2:
        raise ConfigError(f"{what} needs a binary data set (good/bad with masks), got {len(spec.class_names)} classes")


def input_shape(pre: Preprocess, content: tuple[int, int], batch_shape: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) an image's own network input has: a padded batch holds extra padding for the largest image."""
    if pre.resize != "pad":
        return batch_shape
    return pre.padded(*content)


def content_size(pre: Preprocess, height: int, width: int) -> tuple[int, int]:
    """Height and width of an image's content inside its network input (before padding)."""
    y0, y1, x0, x1 = content_box(pre, height, width)
    return y1 - y0, x1 - x0


class BaseTask(pl.LightningModule):
    """Subclasses set ``self.metrics`` via ``init_metrics``, call ``self.stage_metrics(stage).update`` and
    define ``raw_outputs`` and ``judge`` (see the module docstring).

    Metric objects expose ``compute() -> dict`` and ``reset()``; each value is logged as ``{stage}/{key}``.
    After testing, ``test_results`` holds per image its path, label, score, decision and scratch area.
    """

    name: ClassVar[str] = ""
    progress_metrics: tuple[str, ...] = ()
    needs_training: ClassVar[bool] = True
    localizes: ClassVar[bool] = False
    """True where the model draws a scratch-probability map (masks, boxes and areas come with its verdicts)."""
    pixel_weighted_loss: ClassVar[bool] = False
    """True where ``loss.pos_weight=auto`` is fitted to the training split's scratch / background pixels."""
    one_image_per_forward: ClassVar[bool] = False
    """True where a network's output for one image depends on the others in its batch (Mask R-CNN)."""
    takes_tta: ClassVar[bool] = True
    """True where ``model.tta`` applies (``scratchlab.tta``): its flips go into the spec at ``build``."""

    @classmethod
    def loader_options(cls, cfg: DictConfig) -> dict[str, Any]:
        """Extra ``ScratchDataModule`` arguments this task's batches need (none by default)."""
        return {}

    def __init__(self, net: nn.Module | None, loss: nn.Module | None, optimizer: Callable | None,
                 scheduler: Callable | None, spec: ModelSpec) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.spec = spec
        self.test_results: list[dict[str, Any]] = []

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    @property
    def decision(self) -> DecisionParams:
        return self.spec.decision

    @property
    def preprocess(self) -> Preprocess:
        return self.spec.preprocess

    @property
    def tta(self) -> tuple[str, ...]:
        """The flips this model's outputs are averaged over (``scratchlab.tta``); none by default."""
        return spec_flips(self.spec.options)

    def use_decision(self, decision: DecisionParams) -> None:
        """Judge with ``decision`` from now on (an operating point chosen after training)."""
        self.spec = replace(self.spec, decision=decision)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = checkpoint_block(self.spec)

    # -- building ----------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, cfg: DictConfig, class_names: Sequence[str], counts: TrainCounts = TrainCounts()) -> BaseTask:
        """This task for run config ``cfg``: spec from its data, model and decision; optimizer and scheduler
        factories; the training split's ``counts`` resolve "auto" loss weights."""
        flips = flip_names(cfg.model.get("tta"))
        if flips and not cls.takes_tta:
            raise ConfigError(f"model.tta does not apply to model.task={cls.name}; remove it")
        spec = ModelSpec(task=cls.name, class_names=tuple(class_names), preprocess=Preprocess.from_run_config(cfg),
                         decision=DecisionParams.from_config(OmegaConf.to_container(cfg.decision, resolve=True)),
                         options=tta_options(flips))
        common = {"optimizer": instantiate(cfg.optimizer),
                  "scheduler": instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
                  "config": OmegaConf.to_container(cfg, resolve=True)}
        return cls.from_config(cfg, spec, counts, common)

    @classmethod
    def from_config(cls, cfg: DictConfig, spec: ModelSpec, counts: TrainCounts, common: dict[str, Any]) -> BaseTask:
        """The task's own part of ``build``: network and loss from ``cfg.model`` / ``cfg.loss``; ``common``
        holds the optimizer and scheduler factories and the resolved config."""
        raise NotImplementedError

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> BaseTask:
        """The trained task of a read checkpoint, in eval mode on the CPU. The network is built without its
        starting weights (``model.weights_path``, ``pretrained``): the checkpoint's own replace them, and the
        file it started from need not exist any more."""
        config = OmegaConf.create(ckpt.config)
        with open_dict(config):
            if "weights_path" in config.model:
                config.model.weights_path = None
            if "pretrained" in config.model:
                config.model.pretrained = False
        task = cls.build(config, ckpt.spec.class_names, TrainCounts(ckpt.class_counts))
        task.spec = ckpt.spec
        task.load_state_dict(ckpt.state_dict)
        return task.eval()

    # -- the one inference path ------------------------------------------------------------------------------

    def raw_outputs(self, x: torch.Tensor, content_sizes: Sequence[tuple[int, int]],
                    images: Sequence[np.ndarray] | None = None) -> list[Raw]:
        """Per image of the batch ``x`` (all of one input shape) the network's output as numpy arrays;
        ``images`` are the original RGB images where the caller has them."""
        raise NotImplementedError

    @classmethod
    def judge(cls, raw: Mapping[str, np.ndarray], size: tuple[int, int], spec: ModelSpec) -> Verdict:
        """One image's raw output and original (height, width) -> its ``Verdict`` under ``spec.decision``."""
        raise NotImplementedError

    @torch.no_grad()
    def network_outputs(self, inputs: Sequence[torch.Tensor], content_sizes: Sequence[tuple[int, int]],
                        images: Sequence[np.ndarray] | None = None) -> list[Raw]:
        """``raw_outputs`` for network inputs of any shapes: inputs of equal shape run as one batch, so a
        result never depends on the other images."""
        groups: dict[Any, list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(i if self.one_image_per_forward else tuple(x.shape), []).append(i)
        out: list[Raw] = [{} for _ in inputs]
        for idx in groups.values():
            x = torch.stack([inputs[i] for i in idx]).to(self.device)
            subset = None if images is None else [images[i] for i in idx]
            for i, raw in zip(idx, self.raw_outputs(x, [tuple(content_sizes[i]) for i in idx], subset)):
                out[i] = raw
        return out

    def predict_raw(self, images: Sequence[np.ndarray]) -> list[Raw]:
        """RGB uint8 images at their original size -> raw outputs, one each (preprocessing as in evaluation)."""
        transform = build_transform(self.preprocess)
        inputs = [transform(image=im)["image"] for im in images]
        contents = [content_size(self.preprocess, *im.shape[:2]) for im in images]
        return self.network_outputs(inputs, contents, images)

    def predict_images(self, images: Sequence[np.ndarray]) -> list[Verdict]:
        """RGB uint8 images at their original size -> one verdict each, under this model's spec."""
        return [self.judge(r, im.shape[:2], self.spec) for r, im in zip(self.predict_raw(images), images)]

    # -- export ----------------------------------------------------------------------------------------------

    export_outputs: ClassVar[dict[str, dict[int, str]]] = {}
    """Names of the exported graph's outputs (the keys of a raw output) and their dynamic axes; empty for
    tasks that cannot be exported."""

    def export_network(self) -> nn.Module:
        """Normalized (N, 3, H, W) input -> the raw outputs named in ``export_outputs``, batched."""
        raise NotImplementedError

    def inference_network(self) -> nn.Module:
        """``export_network`` averaged over this model's flips (``tta``): what ``raw_outputs`` and the exported
        graph run."""
        net = self.export_network()
        return FlipAverage(net, self.tta, maps=self.localizes) if self.tta else net

    def export_module(self) -> nn.Module:
        """The exported graph: uint8 inputs (those of ``export_inputs``, in order) -> ``export_outputs``."""
        return NormalizedInput(self.inference_network(), self.preprocess.mean, self.preprocess.std)

    @classmethod
    def export_geometry(cls, pre: Preprocess) -> list[Any]:
        """The geometry steps an exported graph's input gets in Python (the graph normalizes)."""
        return pre.geometry()

    @classmethod
    def export_inputs(cls, spec: ModelSpec) -> dict[str, tuple[Preprocess, list[Any]]]:
        """Input name -> (its preprocessing, the geometry steps it gets in Python) of the exported graph."""
        return {INPUT_NAME: (spec.preprocess, cls.export_geometry(spec.preprocess))}

    def batch_input_shapes(self, batch: Mapping[str, Any]) -> list[tuple[int, int]]:
        """The (H, W) of each batch image's own network input (the batch may pad beyond it)."""
        batch_shape = tuple(batch["image"].shape[-2:])
        return [input_shape(self.preprocess, tuple(s), batch_shape) for s in batch["size"].tolist()]

    def batch_verdicts(self, batch: Mapping[str, Any], raws: list[Raw] | None = None) -> tuple[list[Raw], list[Verdict]]:
        """``predict_images`` for a data-module batch: each image cut to its own input shape first; ``raws``
        where the caller already has them from a forward pass equal to the inference path's."""
        if raws is None:
            sizes = [tuple(s) for s in batch["size"].tolist()]
            inputs = [x[:, :h, :w] for x, (h, w) in zip(batch["image"], self.batch_input_shapes(batch))]
            raws = self.network_outputs(inputs, sizes, self.batch_images(batch))
        originals = [tuple(s) for s in batch["original_size"].tolist()]
        return raws, [self.judge(r, s, self.spec) for r, s in zip(raws, originals)]

    def batch_images(self, batch: Mapping[str, Any]) -> list[np.ndarray] | None:
        """The original images of a batch, for tasks whose ``raw_outputs`` need them (none by default)."""
        return None

    def reset_evaluation_metrics(self) -> None:
        """Start the metrics that need more than the raw outputs (``scratchlab.evaluate``); none by default."""

    def update_evaluation_metrics(self, batch: Mapping[str, Any]) -> None:
        """Feed one batch to the metrics of ``reset_evaluation_metrics``."""

    def compute_evaluation_metrics(self) -> dict[str, float]:
        return {}

    def record_test_results(self, batch: Mapping[str, Any], verdicts: Sequence[Verdict]) -> None:
        for path, label, v in zip(batch["path"], batch["label"].tolist(), verdicts):
            self.test_results.append({"path": path, "label": int(label), "score": v.score, "is_bad": v.is_bad,
                                      "scratch_area": v.scratch_area})

    def on_test_epoch_start(self) -> None:
        self.test_results = []

    # -- metrics and optimization ------------------------------------------------------------------------------

    def init_metrics(self, make: Callable[[str], nn.Module]) -> None:
        """``make(stage)`` builds the metrics of one stage (train, val, test)."""
        # ModuleDict keys cannot be "train" (a Module method), hence the suffix.
        self.metrics = nn.ModuleDict({f"{s}_metrics": make(s) for s in STAGES})

    def stage_metrics(self, stage: str) -> nn.Module:
        return self.metrics[f"{stage}_metrics"]

    def log_loss(self, stage: str, loss: Any, batch_size: int) -> None:
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=batch_size, sync_dist=True)

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self.stage_metrics(stage)
        if not any(m.update_count for m in metrics.modules() if isinstance(m, Metric)):
            return  # no batches: a resumed run whose last.ckpt was written after this epoch's last batch
        for key, value in metrics.compute().items():
            self.log(f"{stage}/{key}", value, prog_bar=stage == "val" and key in self.progress_metrics,
                     sync_dist=True)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")
        self.test_results = gather_test_outputs(self, {"r": self.test_results})["r"]

    def log_test_artifacts(self, run: Any) -> None:
        """Write this task's test reports into the MLflow ``run`` (a ``TrackedRun``) after testing."""

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch"}}


def component_block(task: BaseTask, prefix: str) -> dict[str, Any]:
    """How a checkpoint describes one network of a model made of several (``Checkpoint.components``): its
    spec, run config and class counts, and the ``prefix`` of its weights in the state dict."""
    return {"spec": task.spec.to_dict(), "config": task.hparams.get("config"),
            "class_counts": task.hparams.get("class_counts"), "prefix": prefix}


def gather_test_outputs(task: pl.LightningModule, outputs: dict[str, list]) -> dict[str, list]:
    """Under DDP every process saw a share of the test split: return all shares (on every process)."""
    if task.trainer.world_size == 1:
        return outputs
    import torch.distributed as dist

    shards: list[dict] = [{} for _ in range(task.trainer.world_size)]
    dist.all_gather_object(shards, outputs)
    return {k: [x for shard in shards for x in shard[k]] for k in outputs}
