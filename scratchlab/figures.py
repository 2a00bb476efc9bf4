"""Result figures and text: classification report, confusion matrix, precision-recall curve, training curves."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torchmetrics.classification import (
    BinaryPrecisionRecallCurve,
    MulticlassConfusionMatrix,
    MulticlassPrecisionRecallCurve,
)

from scratchlab.task_metrics import ClassificationMetrics, metric_class_names


def classification_report(probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str],
                          threshold: float) -> str:
    """Per-class precision / recall / F1 / support, accuracy and AUROC as a fixed-width table."""
    metrics = ClassificationMetrics(list(class_names), threshold, sync_on_compute=False)
    metrics.update(probs, targets)
    values = {k: float(v) for k, v in metrics.compute().items()}
    keys = metric_class_names(list(class_names))
    width = max(12, *(len(n) for n in class_names)) + 2
    lines = [f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for i, (name, key) in enumerate(zip(class_names, keys)):
        support = int((targets == i).sum())
        lines.append(f"{name:<{width}}{values[f'precision_{key}']:>10.4f}{values[f'recall_{key}']:>10.4f}"
                     f"{values[f'f1_{key}']:>10.4f}{support:>10d}")
    lines += ["", f"{'accuracy':<{width}}{values['acc']:>40.4f}", f"{'macro f1':<{width}}{values['f1_macro']:>40.4f}",
              f"{'auroc':<{width}}{values['auroc']:>40.4f}"]
    if len(class_names) == 2:
        lines.append(f"{'threshold':<{width}}{threshold:>40.4f}  (bad iff P({class_names[1]}) >= threshold)")
    return "\n".join(lines) + "\n"


def confusion_matrix_figure(probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str],
                            threshold: float) -> Figure:
    from scratchlab.task_metrics import predict_classes

    cm = MulticlassConfusionMatrix(len(class_names), sync_on_compute=False)
    cm.update(predict_classes(probs, threshold), targets)
    fig, ax = cm.plot(labels=list(class_names))
    ax.set_title("confusion matrix (rows: true, columns: predicted)")
    return fig


def precision_recall_figure(probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> Figure:
    if len(class_names) == 2:
        curve = BinaryPrecisionRecallCurve(sync_on_compute=False)
        curve.update(probs[:, 1], targets)
    else:
        curve = MulticlassPrecisionRecallCurve(len(class_names), sync_on_compute=False)
        curve.update(probs, targets)
    fig, ax = curve.plot(score=True)
    ax.set_title(f"precision-recall ({class_names[1]} positive)" if len(class_names) == 2 else "precision-recall")
    return fig


def training_curves_figure(history: Mapping[str, Sequence[tuple[int, float]]]) -> Figure:
    """One panel per metric family (loss, then the rest); ``history`` maps metric -> [(step, value)]."""
    families: dict[str, list[str]] = {}
    for key in sorted(history):
        families.setdefault(key.split("/", 1)[-1], []).append(key)
    names = sorted(families, key=lambda n: (n != "loss", n))
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        for key in families[name]:
            steps, values = zip(*history[key]) if history[key] else ((), ())
            ax.plot(steps, values, marker="o", ms=3, label=key.split("/")[0])
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    return fig
