"""Where a model's starting weights come from: one ``model.pretrained`` switch for every factory, and the
``weights_source`` tag each run carries."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from scratchlab.errors import ConfigError

IMAGENET = "imagenet"
"""smp's name of the ImageNet encoder weights, what ``model.pretrained=true`` asks of a segmenter."""


def apply_pretrained(cfg: dict[str, Any], accepted: Collection[str]) -> dict[str, Any]:
    """Turn ``cfg["pretrained"]`` into the argument the factory (taking ``accepted`` arguments) understands:
    timm classifiers take it as is, smp segmenters as ``encoder_weights`` (``imagenet`` or ``None``);
    a factory with no pretrained weights of its own accepts only ``pretrained=false``."""
    if "pretrained" not in cfg:
        return cfg
    out = dict(cfg)
    pretrained = bool(out.pop("pretrained"))
    if "pretrained" in accepted:
        out["pretrained"] = pretrained
    elif "encoder_weights" in accepted:
        out["encoder_weights"] = (out.get("encoder_weights") or IMAGENET) if pretrained else None
        if pretrained:
            _require_encoder_weights(str(out.get("encoder_name")), out["encoder_weights"])
    elif pretrained:
        raise ConfigError(f"model={out.get('name', out.get('_target_'))} has no pretrained weights to load: set "
                          f"model.pretrained=false (random init), or model.weights_path=FILE where the model takes one")
    return out


def is_checkpoint(weights_path: str | None) -> bool:
    """Whether ``model.weights_path`` names a scratchlab checkpoint (``.ckpt``) rather than a plain weights file."""
    return bool(weights_path) and str(weights_path).endswith(".ckpt")


def load_checkpoint_weights(model: nn.Module, path: str | Path) -> None:
    """Start ``model`` from the network of a scratchlab checkpoint (e.g. pre-trained on synthetic data, to
    fine-tune on real images); the architecture must be the same. Read with ``weights_only=True``."""
    from scratchlab.checkpoints import load_file

    state = {k[len("net."):]: v for k, v in load_file(path)["state_dict"].items() if k.startswith("net.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err).splitlines()[0]
        raise ConfigError(f"model.weights_path={path} holds another network than model= builds ({first.strip()}); "
                          f"fine-tune with the model config and the number of classes the checkpoint was "
                          f"trained with") from None


def weights_source(model_cfg: Mapping[str, Any]) -> str:
    """``file`` (``model.weights_path``, or the checkpoints a two-stage model joins), ``hub/cache``
    (ImageNet weights through timm / smp: the local cache, or the hub where it is reachable), else ``random``."""
    if any(model_cfg.get(key) for key in ("weights_path", "classifier_ckpt", "segmenter_ckpt")):
        return "file"
    pretrained = model_cfg.get("pretrained")
    if pretrained is not None:
        return "hub/cache" if pretrained else "random"
    return "hub/cache" if model_cfg.get("encoder_weights") else "random"


def _require_encoder_weights(encoder: str, weights: str) -> None:
    """Fail at once, in one line, when smp's ``weights`` for ``encoder`` are neither cached nor downloadable
    (smp itself would retry the hub for half a minute first)."""
    import segmentation_models_pytorch as smp
    from huggingface_hub import try_to_load_from_cache

    from scratchlab.models.classifiers import _hub_reachable

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights)
    if settings is None or "repo_id" not in settings or _hub_reachable():
        return  # smp reports unknown names itself; timm (tu-*) encoders load through timm
    cached = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings.get("revision"))
    if not isinstance(cached, str):
        raise ConfigError(f"model.pretrained=true but the {weights} weights of encoder {encoder!r} are not in the "
                          f"local cache and the hub cannot be reached: pass model.weights_path=FILE or "
                          f"model.pretrained=false (random init)")
