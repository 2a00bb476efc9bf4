"""Scratch segmentation as a LightningModule: pixel metrics, the area rule for the image decision, pictures."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn

from hydra.utils import instantiate
from omegaconf import DictConfig

from scratchlab.checkpoints import ModelSpec
from scratchlab.models import build_model
from scratchlab.data.io import read_image
from scratchlab.data.transforms import restore_geometry
from scratchlab.task_metrics import SegmentationMetrics
from scratchlab.postprocess import DecisionParams, Verdict, decide_from_probability, verdict_from_probability
from scratchlab.tasks.base import BaseTask, Raw, TrainCounts, full_precision, gather_test_outputs, require_binary
from scratchlab.visualize import draw_overlay, make_grid

N_PICTURES = 8


def valid_pixels(batch: Mapping[str, Any], shape: tuple[int, ...], pad_mode: bool) -> torch.Tensor:
    """(B, H, W) bool: the pixels of each image, without the padding added to reach the network's size
    (computed on the device: no sizes are read back to the host)."""
    device = batch["image"].device
    if not pad_mode:
        return torch.ones(shape, dtype=torch.bool, device=device)
    sizes = batch["size"].to(device)
    rows = torch.arange(shape[-2], device=device)[None, :, None] < sizes[:, 0, None, None]
    cols = torch.arange(shape[-1], device=device)[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


def prob_maps(probs: torch.Tensor, content_sizes: Sequence[tuple[int, int]], pad_mode: bool) -> list[Raw]:
    """(B, H, W) probabilities -> per image its map, cut to the image's content where inputs are padded."""
    out = []
    for p, (h, w) in zip(probs.float().cpu().numpy(), content_sizes):
        out.append({"prob_map": np.ascontiguousarray(p[:h, :w] if pad_mode else p)})
    return out


class ScratchProbabilities(nn.Module):
    """``net`` followed by a sigmoid on its one channel: (N, H, W) scratch probabilities, as exported."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x).float()[:, 0])


class SegmentationTask(BaseTask):
    """Trains a one-channel scratch segmenter; the image is bad when the scratch area passes ``decision``.

    Pixel metrics (dice, IoU) compare the map with the mask at network geometry; the image decision is the
    area rule on the map brought back to the original image size (``judge``), so ``min_area`` counts
    original-image pixels. Per validation epoch a fixed grid of validation images (truth outlined green,
    prediction red, boxes yellow) is logged; at test the worst false negatives and false positives.
    """

    name = "segmentation"
    localizes = True
    pixel_weighted_loss = True
    progress_metrics = ("dice", "f1_bad")
    export_outputs = {"prob_map": {0: "batch", 1: "height", 2: "width"}}

    @classmethod
    def loader_options(cls, cfg: DictConfig) -> dict[str, Any]:
        """Training needs masks, and images may be cropped (``augment=crops``): the loss is per pixel and a crop
        keeps the mask exact."""
        return {"learns_masks": True}

    def __init__(self, net: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable | None,
                 spec: ModelSpec, config: dict[str, Any] | None = None) -> None:
        super().__init__(net, loss, optimizer, scheduler, spec)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "spec"], logger=False)  # params: the flat config
        self.pad_mode = spec.preprocess.resize == "pad"
        self.init_metrics(lambda stage: SegmentationMetrics(self.decision.mask_threshold, image_metrics=stage != "train"))
        self.pictures: list[dict] = []
        self._picture_thread: ThreadPoolExecutor | None = None
        self._pending_pictures: list[Future] = []
        self.test_outputs: dict[str, list] = {}

    @classmethod
    def from_config(cls, cfg: DictConfig, spec: ModelSpec, counts: TrainCounts,
                    common: dict[str, Any]) -> SegmentationTask:
        require_binary(spec, "segmentation")
        loss = instantiate(cfg.loss)
        if getattr(loss, "pos_weight_spec", None) == "auto" and counts.pixels is not None:
            loss.fit_pixel_counts(*counts.pixels)
        return cls(net=build_model(cfg.model, num_outputs=1), loss=loss, spec=spec, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def use_decision(self, decision: DecisionParams) -> None:
        super().use_decision(decision)
        for stage in ("train", "val", "test"):
            self.stage_metrics(stage).mask_threshold = decision.mask_threshold

    def raw_outputs(self, x: torch.Tensor, content_sizes: Sequence[tuple[int, int]],
                    images: Sequence[np.ndarray] | None = None) -> list[Raw]:
        return prob_maps(self.inference_network()(x), content_sizes, self.pad_mode)

    def export_network(self) -> nn.Module:
        return ScratchProbabilities(self.net)

    @classmethod
    def judge(cls, raw: Mapping[str, np.ndarray], size: tuple[int, int], spec: ModelSpec) -> Verdict:
        prob = restore_geometry(raw["prob_map"], spec.preprocess, *size)
        return verdict_from_probability(prob, spec.decision)

    def loss_and_probs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss and (B, H, W) scratch probabilities of a batch."""
        logits = self(batch["image"])
        return self.loss(logits, batch["mask"][:, None]), torch.sigmoid(logits.detach().float()[:, 0])

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor, list[Verdict]]:
        """Loss and metrics of one batch. Training logs the loss and pixel metrics of the batch's own forward
        pass and stays on the device; validation and test judge each image on its own input, as every
        inference path does (reusing the batch's maps where they are the same), and add the image-level
        metrics of those verdicts."""
        loss, probs = self.loss_and_probs(batch, stage)
        valid = valid_pixels(batch, probs.shape, self.pad_mode)
        verdicts: list[Verdict] = []
        if stage == "train":
            self.stage_metrics(stage).update(probs, batch["mask"], valid)
        else:
            raws, verdicts = self.batch_verdicts(batch, self.reused_maps(batch, probs))
            probs = self.maps_to_batch(raws, probs)
            image_bad = torch.tensor([v.is_bad for v in verdicts], device=probs.device)
            scores = torch.tensor([v.score for v in verdicts], device=probs.device)
            self.stage_metrics(stage).update(probs, batch["mask"], valid, image_bad, batch["label"] > 0, scores)
        self.log_loss(stage, loss, len(probs))
        return loss, probs, verdicts

    def reused_maps(self, batch: dict, probs: torch.Tensor) -> list[Raw] | None:
        """The batch forward pass's maps as the inference path's raw outputs, where they are the same: this
        class's own forward, loss and raw outputs (not a subclass's), no flips to average, and every image's own
        input the batch's shape; else None (each image then runs on its own input)."""
        own = all(getattr(type(self), name) is getattr(SegmentationTask, name)
                  for name in ("loss_and_probs", "raw_outputs", "export_network", "forward"))
        batch_shape = tuple(probs.shape[-2:])
        if not own or self.tta or any(shape != batch_shape for shape in self.batch_input_shapes(batch)):
            return None
        return prob_maps(probs, [tuple(s) for s in batch["size"].tolist()], self.pad_mode)

    @staticmethod
    def maps_to_batch(raws: Sequence[Raw], like: torch.Tensor) -> torch.Tensor:
        """Per-image maps placed into a zero (B, H, W) tensor shaped ``like`` (top-left, as padded inputs)."""
        out = torch.zeros_like(like)
        for i, raw in enumerate(raws):
            m = torch.from_numpy(raw["prob_map"])
            out[i, : m.shape[0], : m.shape[1]] = m.to(out.device)
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    @full_precision
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, probs, _ = self._step(batch, "val")
        if len(self.pictures) < N_PICTURES:
            self.pictures += self._records(batch, probs)[: N_PICTURES - len(self.pictures)]

    @full_precision
    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, probs, verdicts = self._step(batch, "test")
        self.record_test_results(batch, verdicts)
        for record, v in zip(self._records(batch, probs), verdicts):
            self.test_outputs["records"].append({**record, "area": v.scratch_area, "pred_bad": v.is_bad})

    def _records(self, batch: dict, probs: torch.Tensor) -> list[dict]:
        """Per image: path, label, and the probability (uint8) and truth maps cropped to the image."""
        out = []
        for i, path in enumerate(batch["path"]):
            h, w = batch["size"][i].tolist() if self.pad_mode else probs.shape[1:]
            out.append({"path": path, "label": int(batch["label"][i]),
                        "prob": (probs[i, :h, :w] * 255).round().byte().cpu().numpy(),
                        "mask": batch["mask"][i, :h, :w].byte().cpu().numpy()})
        return out

    def on_validation_epoch_start(self) -> None:
        self.pictures = []

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.pictures and not self.trainer.sanity_checking:  # drawn and logged beside the next epoch
            if self._picture_thread is None:
                self._picture_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="val-pictures")
            self._pending_pictures.append(self._picture_thread.submit(
                self._log_picture, self.pictures, f"val_overlays/epoch_{self.current_epoch:03d}.png"))

    def on_fit_end(self) -> None:
        """Every validation picture is in MLflow before the run goes on (a failed one raises here)."""
        pending, self._pending_pictures = self._pending_pictures, []
        for future in pending:
            future.result()
        if self._picture_thread is not None:
            self._picture_thread.shutdown()
            self._picture_thread = None

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.test_outputs = {"records": []}

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.test_outputs = gather_test_outputs(self, self.test_outputs)
        records = self.test_outputs["records"]
        misses = sorted((r for r in records if r["label"] > 0 and not r["pred_bad"]), key=lambda r: r["area"])
        false_alarms = sorted((r for r in records if r["label"] == 0 and r["pred_bad"]), key=lambda r: -r["area"])
        for name, chosen in (("test_worst_false_negatives.png", misses), ("test_worst_false_positives.png",
                                                                           false_alarms)):
            if chosen:
                self._log_picture(chosen[:N_PICTURES], name)

    def overlay(self, record: dict) -> np.ndarray:
        """The image with its true scratches outlined and the predicted ones tinted and boxed."""
        image = read_image(record["path"])
        h, w = image.shape[:2]
        prob = record["prob"].astype(np.float32) / 255
        if prob.shape != (h, w):  # scaled input: bring the maps back to the image's size
            prob = restore_geometry(prob, self.preprocess, h, w)
            truth = (restore_geometry(record["mask"].astype(np.float32), self.preprocess, h, w) >= 0.5).astype(np.uint8)
            record = {**record, "mask": truth}
        decision = decide_from_probability(prob, self.decision)
        verdict = "bad" if decision.is_bad else "good"
        truth = self.class_names[record["label"]] if record["label"] < len(self.class_names) else record["label"]
        return draw_overlay(image, pred_mask=decision.mask, gt_mask=record["mask"], boxes=decision.components,
                            label=f"true {truth} / pred {verdict}")

    def _log_picture(self, records: list[dict], artifact_file: str) -> None:
        if not isinstance(self.logger, MLFlowLogger) or not self.trainer.is_global_zero:
            return
        grid = make_grid([self.overlay(r) for r in records], ncols=4, tile=320)
        self.logger.experiment.log_image(self.logger.run_id, grid, artifact_file)
