"""Image- and pixel-level metrics (torchmetrics), with the same names for every model.

Binary tasks name their classes ``good`` / ``bad`` in metric names (``val/recall_bad``) whatever
the data set calls them, so runs on different data compare side by side.
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from scratchlab.data.types import BINARY_CLASSES

PADDING = -1
"""Target value of the pixels that only pad an image to the network's size: ignored by the pixel metrics."""


def metric_class_names(class_names: list[str]) -> list[str]:
    """Names used in metric keys: good/bad for any binary task, the data set's names otherwise."""
    return list(BINARY_CLASSES) if len(class_names) == 2 else list(class_names)


def predict_classes(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Binary: bad iff P(bad) >= threshold; multiclass: the most probable class."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).long()
    return probs.argmax(dim=1)


class ClassificationMetrics(nn.Module):
    """Accuracy, per-class precision / recall / F1, macro F1, AUROC (+ average precision when binary).

    Argument checks are off (``validate_args=False``): they read values back to the host at every update,
    a GPU synchronisation per metric and step; labels come from the data check, predictions from here."""

    def __init__(self, class_names: list[str], threshold: float = 0.5, sync_on_compute: bool = True) -> None:
        """``sync_on_compute=False`` computes on this process's data only (reports built after a DDP run)."""
        super().__init__()
        n = len(class_names)
        kw = {"sync_on_compute": sync_on_compute, "validate_args": False}
        self.names = metric_class_names(class_names)
        self.threshold = threshold
        self.accuracy = MulticlassAccuracy(n, average="micro", **kw)
        self.precision = MulticlassPrecision(n, average=None, **kw)
        self.recall = MulticlassRecall(n, average=None, **kw)
        self.f1 = MulticlassF1Score(n, average=None, **kw)
        self.confusion = MulticlassConfusionMatrix(n, **kw)
        self.binary = n == 2
        self.auroc = BinaryAUROC(**kw) if self.binary else MulticlassAUROC(n, **kw)
        self.average_precision = BinaryAveragePrecision(**kw) if self.binary else None

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """``probs``: (B, n_classes) probabilities; ``target``: (B,) class indices."""
        preds = predict_classes(probs, self.threshold)
        for metric in (self.accuracy, self.precision, self.recall, self.f1, self.confusion):
            metric.update(preds, target)
        if self.binary:
            self.auroc.update(probs[:, 1], target)
            self.average_precision.update(probs[:, 1], target)
        else:
            self.auroc.update(probs, target)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {"acc": self.accuracy.compute()}
        for key, metric in (("precision", self.precision), ("recall", self.recall), ("f1", self.f1)):
            values = metric.compute()
            out.update({f"{key}_{name}": v for name, v in zip(self.names, values)})
        out["f1_macro"] = self.f1.compute().mean()
        out["auroc"] = self.auroc.compute()
        if self.binary:
            out["average_precision"] = self.average_precision.compute()
        return out

    def confusion_matrix(self) -> torch.Tensor:
        """Rows: true class, columns: predicted class."""
        return self.confusion.compute()

    def reset(self) -> None:
        for m in self.children():
            m.reset()


class SegmentationMetrics(nn.Module):
    """Pixel Dice (= pixel F1), IoU, precision, recall on the valid (unpadded) pixels, and (with
    ``image_metrics``) image-level accuracy / precision / recall / F1 of bad from the area rule, and AUROC /
    average precision of the images' scores (the verdicts' maximum scratch probability), named as in
    ``ClassificationMetrics``.

    Everything stays on the device: padding is an ignored target value rather than a boolean selection,
    argument checks (which read values back to the host) are off, and the metrics that share one set of
    counts (Dice, precision, recall) update it once (``MetricCollection`` compute groups)."""

    def __init__(self, mask_threshold: float = 0.5, image_metrics: bool = True) -> None:
        super().__init__()
        self.mask_threshold = mask_threshold
        quiet = {"ignore_index": PADDING, "validate_args": False}
        self.pixel = MetricCollection({"dice": BinaryF1Score(**quiet), "iou": BinaryJaccardIndex(**quiet),
                                       "pixel_precision": BinaryPrecision(**quiet),
                                       "pixel_recall": BinaryRecall(**quiet)}, compute_groups=True)
        self.image = nn.ModuleDict({"acc": MulticlassAccuracy(2, average="micro", validate_args=False),
                                    "precision": MulticlassPrecision(2, average=None, validate_args=False),
                                    "recall": MulticlassRecall(2, average=None, validate_args=False),
                                    "f1": MulticlassF1Score(2, average=None, validate_args=False)}
                                   ) if image_metrics else None
        self.ranking = nn.ModuleDict({"auroc": BinaryAUROC(validate_args=False),
                                      "average_precision": BinaryAveragePrecision(validate_args=False)}
                                     ) if image_metrics else None

    def update(self, probs: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor,
               image_bad: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               image_scores: torch.Tensor | None = None) -> None:
        """``probs``/``masks``/``valid``: (B, H, W); ``image_bad``: (B,) decisions; ``labels``: (B,) 0 good 1 bad;
        ``image_scores``: (B,) the verdicts' scores (higher: more likely bad)."""
        p = (probs >= self.mask_threshold).long()  # >=, as the area rule
        self.pixel.update(p, torch.where(valid, masks.long(), PADDING))
        if self.image is not None:
            for metric in self.image.values():
                metric.update(image_bad.long(), labels.long())
            for metric in self.ranking.values():
                metric.update(image_scores.float(), labels.long())

    def compute(self) -> dict[str, torch.Tensor]:
        out = dict(self.pixel.compute())
        if self.image is not None:
            out["acc"] = self.image["acc"].compute()
            for key in ("precision", "recall", "f1"):
                good, bad = self.image[key].compute()
                out.update({f"{key}_good": good, f"{key}_bad": bad})
            out.update({key: metric.compute() for key, metric in self.ranking.items()})
        return out

    def reset(self) -> None:
        self.pixel.reset()
        for m in [*(self.image or {}).values(), *(self.ranking or {}).values()]:
            m.reset()
