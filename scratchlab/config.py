"""Hydra/OmegaConf glue: custom resolvers, config location, and composing configs from code."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def _ddp_devices() -> int:
    """All GPUs when there are any, else two CPU processes."""
    import torch

    return torch.cuda.device_count() or 2


def register_resolvers() -> None:
    """Register the ``sl.*`` resolvers used in ``conf/`` (idempotent)."""
    if not OmegaConf.has_resolver("sl.abspath"):
        OmegaConf.register_new_resolver("sl.abspath", lambda p: str(Path(os.path.expanduser(str(p))).resolve()))
    if not OmegaConf.has_resolver("sl.ddp_devices"):
        OmegaConf.register_new_resolver("sl.ddp_devices", _ddp_devices)


register_resolvers()


def require_complete(cfg: DictConfig) -> None:
    """Stop with one line when a mandatory value (``???``, e.g. ``data.root``) was not given."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        from scratchlab.errors import ConfigError

        raise ConfigError(f"{', '.join(missing)} must be given: add {missing[0]}=VALUE to the command")


def compose(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose a config from ``conf/`` like the command line would (for notebooks and tests).

    The run folder (``hydra.run.dir``) is created and filled in as ``paths.output_dir``.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    output_dir = Path(str(cfg.hydra.run.dir)).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        if "paths" in cfg:
            cfg.paths.output_dir = str(output_dir)
    return cfg
