"""Flip test-time augmentation: a network's probabilities averaged over its input and flipped copies of it.

A model's flips (``model.tta``, e.g. ``[hflip, vflip]``) are stored in its spec (``options["tta"]``), and
``BaseTask.inference_network`` wraps the network in ``FlipAverage``, which every inference path runs: the
test step, ``scratchlab.evaluate``, ``Predictor`` and the exported graph.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from scratchlab.errors import ConfigError

KEY = "tta"
FLIPS: dict[str, tuple[int, ...]] = {"hflip": (-1,), "vflip": (-2,), "hvflip": (-2, -1)}
"""Flip name -> the dimensions it reverses, the same for an (N, 3, H, W) input and an (N, H, W) map."""


def flip_names(value: Any) -> tuple[str, ...]:
    """``model.tta`` as a tuple of flip names; a ConfigError for anything else."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"model.tta={value} must be a list of flips, e.g. model.tta=[hflip,vflip]")
    unknown = [v for v in value if v not in FLIPS]
    if unknown or len(set(value)) != len(value):
        raise ConfigError(f"model.tta={list(value)} must list distinct flips out of {', '.join(FLIPS)}")
    return tuple(value)


def tta_options(flips: Sequence[str]) -> dict[str, list[str]]:
    """The spec options recording ``flips`` (none for a model without TTA)."""
    return {KEY: list(flips)} if flips else {}


def spec_flips(options: Mapping[str, Any]) -> tuple[str, ...]:
    """The flips recorded in a spec's options."""
    return tuple(options.get(KEY) or ())


class FlipAverage(nn.Module):
    """``net`` (normalized (N, 3, H, W) input -> probabilities) averaged over the input and each flipped copy.
    With ``maps`` the outputs are (N, H, W) probability maps, flipped back before averaging; otherwise they are
    per-image class probabilities, averaged as they are."""

    def __init__(self, net: nn.Module, flips: Sequence[str], maps: bool) -> None:
        super().__init__()
        self.net = net
        self.dims = [list(FLIPS[name]) for name in flips]
        self.maps = maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.net(x)]
        for dims in self.dims:
            y = self.net(torch.flip(x, dims))
            outputs.append(torch.flip(y, dims) if self.maps else y)
        return torch.stack(outputs).mean(dim=0)
