"""Model factories; ``build_model`` turns a ``model=`` config into a network."""
from __future__ import annotations

import inspect

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from scratchlab.errors import ConfigError, ScratchlabError
from scratchlab.models.weights import apply_pretrained, is_checkpoint, load_checkpoint_weights

# Keys every model config may carry for the rest of the pipeline; passed on only if the factory takes them.
_SHARED_KEYS = ("task", "name", "image_size", "resize", "score_threshold", "min_instance_area", "tta")


def build_model(model_cfg: DictConfig, num_outputs: int) -> nn.Module:
    """Instantiate ``model_cfg`` (a ``model=`` config) with ``num_outputs`` outputs; ``model.weights_path`` to a
    scratchlab ``.ckpt`` starts any model from that checkpoint's network, other files go to the factory;
    ``model.channels_last`` stores its 4-D weights channels-last, so its convolutions run in that layout."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True)
    channels_last = bool(cfg.pop("channels_last", False))  # absent in older checkpoints' configs: as they trained
    accepted = inspect.signature(get_object(cfg["_target_"])).parameters
    checkpoint = cfg.pop("weights_path", None) if is_checkpoint(cfg.get("weights_path")) else None
    if checkpoint:
        cfg.pop("pretrained", None)  # the checkpoint's weights replace whatever the factory would load
    cfg = apply_pretrained(cfg, accepted)
    for key in _SHARED_KEYS:
        if key not in accepted:
            cfg.pop(key, None)
    if "weights_path" not in accepted and cfg.pop("weights_path", None):
        raise ConfigError(f"model={cfg.get('name', cfg['_target_'])} loads weights only from a scratchlab checkpoint: "
                          f"pass model.weights_path=PATH.ckpt")
    try:
        model = instantiate(cfg, num_outputs=num_outputs, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ScratchlabError):  # the factory's own one-line error, not Hydra's wrapping
            raise err.__cause__ from None
        raise
    if checkpoint:
        load_checkpoint_weights(model, checkpoint)
    return model.to(memory_format=torch.channels_last) if channels_last else model
