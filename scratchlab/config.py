"""Hydra/OmegaConf glue: custom resolvers, config location, and composing configs from code."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_DIR = Path(__file__).resolve().parent / "conf"  # links to the top-level conf/ in a checkout; copied in a wheel
# Data settings that change how fast data arrives, not what it is: left out of a data set's fingerprint.
_PROCESS_ID = uuid.uuid4().hex[:6]  # tells apart run folders of commands started in the same second
_LOADING_KEYS = frozenset({"num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "cache"})


def _ddp_devices() -> int:
    """All GPUs when there are any, else two CPU processes."""
    import torch

    return torch.cuda.device_count() or 2


def data_fingerprint(data: Any) -> str:
    """Eight hex digits that identify a data config (source, task, split...), loading settings aside."""
    node = OmegaConf.to_container(data, resolve=True) if OmegaConf.is_config(data) else data
    if isinstance(node, dict):
        node = {k: v for k, v in node.items() if k not in _LOADING_KEYS}
    return hashlib.sha1(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()[:8]


def resolve_tracking_uri(configured: str | None, mlruns_dir: str | Path) -> str:
    """Where MLflow runs go: ``MLFLOW_TRACKING_URI``, then ``logger.tracking_uri``, then a SQLite store in
    ``mlruns_dir``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    return str(uri) if uri else f"sqlite:///{Path(mlruns_dir).resolve()}/mlflow.db"


def display_uri(uri: str) -> str:
    """A tracking URI as users type it for ``mlflow ui`` (a SQLite store's connection options left out)."""
    return uri.split("?", 1)[0] if uri.startswith("sqlite:") else uri


def ui_command(uri: str) -> str:
    """The ``mlflow ui`` command that serves a local store (one worker: it starts fastest on a small machine)."""
    return f"mlflow ui --backend-store-uri {display_uri(uri)} --workers 1"


def ui_hint(configured: str | None, mlruns_dir: str | Path) -> str:
    """How to look at the runs: the server's address, or the ``mlflow ui`` command for a local store."""
    uri = resolve_tracking_uri(configured, mlruns_dir)
    return f"open {uri}" if uri.startswith(("http://", "https://")) else ui_command(uri)


def register_resolvers() -> None:
    """Register the ``sl.*`` resolvers used in ``conf/`` (idempotent)."""
    if not OmegaConf.has_resolver("sl.abspath"):
        OmegaConf.register_new_resolver("sl.abspath", lambda p: str(Path(os.path.expanduser(str(p))).resolve()))
    if not OmegaConf.has_resolver("sl.ddp_devices"):
        OmegaConf.register_new_resolver("sl.ddp_devices", _ddp_devices)
    if not OmegaConf.has_resolver("sl.uid"):
        OmegaConf.register_new_resolver("sl.uid", lambda: _PROCESS_ID)
    if not OmegaConf.has_resolver("sl.ui_hint"):
        OmegaConf.register_new_resolver("sl.ui_hint", ui_hint)
    if not OmegaConf.has_resolver("sl.data_id"):
        OmegaConf.register_new_resolver("sl.data_id", data_fingerprint)


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
