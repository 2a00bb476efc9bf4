"""Semantic segmentation networks from segmentation-models-pytorch, one scratch-logit channel."""
from __future__ import annotations

import math
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from scratchlab.errors import ConfigError


def smp_segmenter(arch: str = "Unet", encoder_name: str = "efficientnet-b0", num_outputs: int = 1,
                  encoder_weights: str | None = None, weights_path: str | None = None, in_chans: int = 3,
                  bn_momentum: float | None = None, head_prior: float | None = None, **arch_kwargs) -> nn.Module:
    """``smp.create_model(arch, encoder_name, ...)``; timm encoders are named ``tu-<timm name>``.

    ``encoder_weights`` (e.g. ``imagenet``) is smp's own loading and needs its cache or network;
    ``weights_path`` loads a local state dict of the whole network. ``bn_momentum`` sets the momentum of
    every batch norm (smp's ``efficientnet-*`` encoders use 0.01, whose running statistics lag far behind
    in short runs from scratch, so evaluation-mode predictions collapse). ``head_prior`` starts every pixel's
    scratch probability there (the output bias is its logit, as in RetinaNet): scratches are a few percent of
    the pixels, and from 0.5 the first steps drive every output to background, where Dice gradients vanish.
    """
    try:
        model = smp.create_model(arch, encoder_name=encoder_name, encoder_weights=encoder_weights,
                                 in_channels=in_chans, classes=num_outputs, **arch_kwargs)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"model arch={arch!r} encoder={encoder_name!r} cannot be built: {err}") from err
    except OSError as err:
        raise ConfigError(f"encoder weights {encoder_weights!r} for {encoder_name!r} are not available offline "
                          f"({err.__class__.__name__}); use model.encoder_weights=null or model.weights_path=FILE") from err
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    if head_prior is not None:
        if not 0 < head_prior < 1:
            raise ConfigError(f"model.head_prior={head_prior} must lie strictly between 0 and 1 (e.g. 0.01), or be null")
        head = [m for m in model.segmentation_head.modules() if isinstance(m, nn.Conv2d)][-1]
        nn.init.constant_(head.bias, math.log(head_prior / (1 - head_prior)))
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.weights_path={weights_path} does not exist; give the path of a local weights file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state))
    return model
