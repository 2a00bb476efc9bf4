"""Losses as small modules with one interface: ``loss(logits, target)`` (labels or masks).

Classification losses know how many outputs they need (``num_outputs``) and can weight classes
from the training split's counts (``"auto"``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from segmentation_models_pytorch import losses as smp_losses

from scratchlab.errors import ConfigError


def _auto_weights(class_counts: Sequence[int]) -> list[float]:
    counts = torch.tensor(class_counts, dtype=torch.float).clamp(min=1)
    return (counts.sum() / (len(counts) * counts)).tolist()


class BCELoss(nn.Module):
    """Binary cross-entropy on logits; targets are reshaped to the logits' shape (labels or masks).

    ``pos_weight`` weights the positive (bad / scratch) class: a number, or ``"auto"`` for
    n_negative / n_positive of the training split (images for classifiers, pixels for segmenters).
    """

    def __init__(self, pos_weight: float | str | None = None) -> None:
        super().__init__()
        if isinstance(pos_weight, str) and pos_weight != "auto":
            raise ConfigError(f"loss.pos_weight={pos_weight!r}: use a number, 'auto' or null")
        self.pos_weight_spec = pos_weight
        # Always a tensor (1 = unweighted), so checkpoints carry the resolved "auto" value and reload it.
        self.register_buffer("pos_weight", torch.tensor(1.0 if pos_weight in (None, "auto") else float(pos_weight)))

    def num_outputs(self, num_classes: int) -> int:
        if num_classes != 2:
            raise ConfigError(f"loss=bce needs 2 classes but the data has {num_classes}; use loss=ce")
        return 1

    def fit_class_counts(self, class_counts: Sequence[int]) -> None:
        """Resolve ``pos_weight="auto"`` from the training split's (negative, positive) counts."""
        if self.pos_weight_spec == "auto":
            self.pos_weight = torch.tensor(max(class_counts[0], 1) / max(class_counts[1], 1))

    def fit_pixel_counts(self, background: int, scratch: int, cap: float = 100.0) -> None:
        """Resolve ``pos_weight="auto"`` for segmentation: background / scratch pixels, at most ``cap``."""
        if self.pos_weight_spec == "auto":
            self.pos_weight = torch.tensor(min(max(background, 1) / max(scratch, 1), cap))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            logits, target.reshape(logits.shape).to(logits.dtype), pos_weight=self.pos_weight)


class CELoss(nn.Module):
    """Cross-entropy over one logit per class; ``class_weights`` a list or ``"auto"`` (inverse frequency)."""

    def __init__(self, class_weights: Sequence[float] | str | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if isinstance(class_weights, str) and class_weights != "auto":
            raise ConfigError(f"loss.class_weights={class_weights!r}: use a list of numbers, 'auto' or null")
        self.weight_spec = class_weights
        fixed = class_weights not in (None, "auto")
        self.register_buffer("weight", torch.tensor(list(class_weights), dtype=torch.float) if fixed else None)
        self.label_smoothing = label_smoothing

    def num_outputs(self, num_classes: int) -> int:
        if self.weight is not None and len(self.weight) != num_classes:
            raise ConfigError(f"loss.class_weights has {len(self.weight)} entries but the data has {num_classes} classes")
        return num_classes

    def fit_class_counts(self, class_counts: Sequence[int]) -> None:
        """Resolve ``class_weights="auto"`` from the training split's per-class counts."""
        if self.weight_spec == "auto":
            self.weight = torch.tensor(_auto_weights(class_counts))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target.long(), weight=self.weight, label_smoothing=self.label_smoothing)


class DiceLoss(nn.Module):
    """Soft Dice loss on scratch-probability maps (segmentation-models-pytorch), 1 - Dice."""

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.dice = smp_losses.DiceLoss(mode="binary", from_logits=True, smooth=smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target.reshape(logits.shape))


class FocalLoss(nn.Module):
    """Binary focal loss (segmentation-models-pytorch): down-weights easy background pixels."""

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.focal = smp_losses.FocalLoss(mode="binary", alpha=alpha, gamma=gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, target.reshape(logits.shape))


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * Dice``, the loss of the earlier U-Net work."""

    def __init__(self, bce_weight: float = 0.5, dice_weight: float = 0.5, pos_weight: float | None = None) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
            raise ConfigError(f"loss weights bce={bce_weight}, dice={dice_weight}: use non-negative weights, not both 0")
        self.bce, self.dice = BCELoss(pos_weight), DiceLoss()
        self.bce_weight, self.dice_weight = bce_weight, dice_weight

    @property
    def pos_weight_spec(self) -> float | str | None:
        return self.bce.pos_weight_spec

    def fit_pixel_counts(self, background: int, scratch: int, cap: float = 100.0) -> None:
        """Resolve the BCE term's ``pos_weight="auto"`` (see ``BCELoss.fit_pixel_counts``)."""
        self.bce.fit_pixel_counts(background, scratch, cap)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(logits, target)
