"""Typed schemas of the config sections, checked once a config is composed, before anything runs.

Each schema is a dataclass: the annotation is the type a value must have, ``limits(...)`` its range.
``validate_config`` reads the composed config and raises one ``ConfigError`` that names every bad
value once (``key=value must be ...``), plus the keys a user added that no entry point reads, data
source arguments the chosen source does not take, and accelerators this machine lacks.
"""
from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scratchlab.errors import ConfigError

PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed",
              "bf16-mixed", "transformer-engine", "transformer-engine-float16")
"""Values Lightning's Trainer takes as ``precision``."""
SEED_MAX = 2**32 - 1
_HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def limits(*, gt: float | None = None, ge: float | None = None, le: float | None = None,
           also: tuple = ()) -> Any:
    """A schema field with a range: ``gt`` / ``ge`` lower bound, ``le`` upper bound, ``also`` extra values."""
    return field(default=None, metadata={"gt": gt, "ge": ge, "le": le, "also": also})


@dataclass
class DecisionSchema:
    threshold: float | None = limits(ge=0, le=1)
    mask_threshold: float | None = limits(ge=0, le=1)
    min_component_area: int | None = limits(ge=0)
    min_area: float | None = limits(ge=0)
    min_area_ratio: float | None = limits(ge=0, le=1)
    area_mode: Literal["sum", "max"] | None = limits()
    score_top_k: int | None = limits(ge=1)
    target_recall: float | None = limits(gt=0, le=1)


@dataclass
class SplitSchema:
    train: float = limits(ge=0, le=1)
    val: float = limits(ge=0, le=1)
    test: float = limits(ge=0, le=1)
    seed: int = limits(ge=0, le=SEED_MAX)
    stratify: bool = limits()
    dedupe: bool = limits()
    file: str | None = limits()
    fold: int | None = limits(ge=0)
    num_folds: int | None = limits(ge=2)


@dataclass
class DataSchema:
    batch_size: int = limits(ge=1)
    num_workers: int = limits(ge=0)
    pin_memory: bool | Literal["auto"] = limits()
    cache_images: bool | Literal["auto"] = limits()
    cache_max_gb: float = limits(ge=0)
    mask_threshold: int = limits(ge=0, le=255)
    crop_size: int = limits(ge=8)
    check: bool = limits()
    resize: Literal["stretch", "letterbox", "pad"] = limits()
    synthetic_fraction: float = limits(ge=0)
    split: SplitSchema = limits()


@dataclass
class ModelSchema:
    task: Literal["classification", "segmentation", "instance", "two_stage", "ensemble"] = limits()
    image_size: int | None = limits(ge=8)
    dropout: float = limits(ge=0, le=1)
    resize: Literal["stretch", "letterbox", "pad"] | None = limits()
    channels_last: bool = limits()


@dataclass
class OptimizerSchema:
    lr: float = limits(gt=0)
    weight_decay: float = limits(ge=0)
    momentum: float = limits(ge=0, le=1)
    nesterov: bool = limits()


@dataclass
class TrainerSchema:
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "tpu", "auto"] = limits()
    precision: Literal[PRECISIONS] = limits()  # type: ignore[valid-type]
    max_epochs: int | None = limits(ge=1, also=(-1,))
    min_epochs: int | None = limits(ge=0)
    gradient_clip_val: float | None = limits(ge=0)
    accumulate_grad_batches: int = limits(ge=1)
    log_every_n_steps: int = limits(ge=1)
    limit_train_batches: int | float | None = limits(ge=0)
    limit_val_batches: int | float | None = limits(ge=0)
    limit_test_batches: int | float | None = limits(ge=0)
    num_sanity_val_steps: int = limits(ge=-1)
    deterministic: bool | Literal["warn"] | None = limits()
    benchmark: bool | None = limits()


@dataclass
class TopSchema:
    """Top-level keys shared by entry points (each checked where the entry point has it)."""

    seed: int = limits(ge=0, le=SEED_MAX)
    batch_size: int = limits(ge=1)
    device: str = limits()
    decision: DecisionSchema = limits()
    data: DataSchema = limits()
    model: ModelSchema = limits()
    optimizer: OptimizerSchema = limits()
    trainer: TrainerSchema = limits()


def _is_schema(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "__dataclass_fields__")


def _matches(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in get_args(tp))
    if origin is Literal:
        return any(value == arg and isinstance(value, type(arg)) for arg in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(tp) if arg is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(dict.fromkeys(str(arg) for arg in get_args(tp)))
    return {float: "a number", int: "a whole number", bool: "true or false", str: "a text"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _nullable(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _in_range(value: Any, meta: dict) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value in meta["also"]:
        return True
    gt, ge, le = meta["gt"], meta["ge"], meta["le"]
    return (gt is None or value > gt) and (ge is None or value >= ge) and (le is None or value <= le)


def _range(meta: dict) -> str:
    """`` > 0``, `` between 0 and 1`` (`` (or -1)``), or nothing for an unbounded field."""
    gt, ge, le = meta["gt"], meta["ge"], meta["le"]
    if ge is not None and le is not None:
        text = f"between {_shown(ge)} and {_shown(le)}"
    else:
        text = " and ".join(f"{op} {_shown(b)}" for op, b in ((">", gt), (">=", ge), ("<=", le)) if b is not None)
    text += "".join(f" (or {extra})" for extra in meta["also"])
    return f" {text}" if text else ""


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def check_schema(node: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """``key=value must be ...`` for each key of ``node`` that breaks ``schema`` (absent keys are fine)."""
    problems = []
    hints = get_type_hints(schema)
    for f in fields(schema):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if f.name not in node:
            continue
        try:
            value = node[f.name]
        except OmegaConfBaseException as err:
            problems.append(f"{key} cannot be resolved ({str(err).splitlines()[0]})")
            continue
        if _is_schema(tp):
            if isinstance(value, DictConfig):
                problems += check_schema(value, tp, f"{key}.")
            elif value is not None:
                problems.append(f"{key}={_shown(value)} must be a group of settings")
            continue
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not (_matches(value, tp) and _in_range(value, f.metadata)):
            wanted = _describe(tp) + _range(f.metadata) + (", or null" if _nullable(tp) else "")
            problems.append(f"{key}={_shown(value)} must be {wanted}")
    return problems


def added_unknown_keys(cfg: DictConfig) -> list[str]:
    """``+key=...`` overrides whose top-level key is neither a key nor a config group of the entry point."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from scratchlab.config import CONFIG_DIR

    if not HydraConfig.initialized():
        return []
    hydra_cfg = HydraConfig.get()
    primary = OmegaConf.load(CONFIG_DIR / f"{hydra_cfg.job.config_name}.yaml")
    known = {str(k) for k in primary} | {str(g).split("/")[0].split("@")[0] for g in hydra_cfg.runtime.choices}
    problems = []
    for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
        top = override.key_or_group.split("/")[0].split(".")[0].split("@")[0]
        if (override.is_add() or override.is_force_add()) and top not in known:
            problems.append(f"{override.input_line} adds {top}, a key this command does not read; check the "
                            f"spelling (its keys: {', '.join(sorted(known - {'defaults'}))})")
        elif override.is_add() and (section := _added_data_setting(override.key_or_group, cfg)) is not None:
            known_keys = sorted(f"{k}" for k in OmegaConf.select(cfg, section)
                                if f"{section}.{k}" != override.key_or_group)
            problems.append(f"{override.input_line} adds {override.key_or_group}, a setting no data set reads; check "
                            f"the spelling ({section} settings: {', '.join(known_keys)})")
    return problems


def _added_data_setting(key: str, cfg: DictConfig) -> str | None:
    """The section (``data`` or ``data.split``) to which ``+data.KEY`` or ``+data.split.KEY`` adds a setting of a
    composed data config, which holds every setting the data pipeline reads; None for other keys
    (``evaluate``'s own ``+data.KEY`` tweaks a run's data config, composed later)."""
    parts = key.split(".")
    if parts[0] != "data" or not isinstance(cfg.get("data"), DictConfig) or "source" not in cfg.data:
        return None
    if len(parts) == 2:
        return "data"
    if len(parts) == 3 and parts[1] == "split" and isinstance(cfg.data.get("split"), DictConfig):
        return "data.split"
    return None


def unknown_partial_data_settings(partial: dict, run_data: DictConfig) -> list[str]:
    """Keys of ``evaluate``'s partial ``+data.KEY=VALUE`` values (and ``+data.split.KEY``) that neither the run's
    data config nor the shared data settings (conf/data/base.yaml) hold: merged, they would be read by nothing."""
    from scratchlab.config import CONFIG_DIR

    base = OmegaConf.load(CONFIG_DIR / "data" / "base.yaml")
    problems = []
    for key, value in partial.items():
        known = {str(k) for k in run_data} | {str(k) for k in base}
        if key not in known:
            problems.append(f"+data.{key} is a setting no data set reads; check the spelling (data settings: "
                            f"{', '.join(sorted(known - {'source'}))})")
        elif key == "split" and isinstance(value, dict):
            split_known = {str(k) for k in run_data.get("split") or {}} | {str(k) for k in base.split}
            problems += [f"+data.split.{k} is a setting no data set reads; check the spelling (data.split "
                         f"settings: {', '.join(sorted(split_known))})" for k in value if k not in split_known]
    return problems


TARGET_SECTIONS = {"data.source": "the data source", "optimizer": "the optimizer", "scheduler": "the scheduler",
                   "loss": "the loss"}
"""Config nodes built by ``instantiate``: each key must be an argument of their ``_target_``."""


def unknown_target_arguments(cfg: DictConfig) -> list[str]:
    """Settings of the data source, optimizer, scheduler and loss (e.g. set by an experiment, or added with
    ``+optimizer.KEY``) that the class or function they build does not take."""
    problems = []
    for section, what in TARGET_SECTIONS.items():
        node = OmegaConf.select(cfg, section)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        try:
            target = get_object(str(node._target_))
        except Exception:  # Hydra's lookup wraps import errors of every kind, in several lines
            problems.append(f"{section}._target_={node._target_} cannot be imported (no module or object of that "
                            f"name); check the config")
            continue
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):  # a builtin without a signature: nothing to compare with
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        title = getattr(target, "__name__", str(node._target_))
        choice = f"data={cfg.data.get('name', '?')}, which" if section == "data.source" else "it"
        takes = ", ".join(p for p in params if p not in ("self", "params", "optimizer"))
        problems += [f"{section}.{key} is not a setting of {what} {title} ({choice} takes {takes}); "
                     f"check the spelling or remove it" for key in node if key not in params and key not in _HYDRA_KEYS]
    return problems


def missing_accelerators(cfg: DictConfig) -> list[str]:
    """Settings that ask for a CUDA or MPS device this machine does not have."""
    wanted = {key: str(OmegaConf.select(cfg, key, default=None) or "").lower()
              for key in ("trainer.accelerator", "device")}
    problems = []
    for key, value in wanted.items():
        if value in ("gpu", "cuda") or value.startswith("cuda:"):
            import torch

            if not torch.cuda.is_available():
                fix = "trainer=cpu" if key.startswith("trainer") else "device=cpu"
                problems.append(f"{key}={value} needs a CUDA GPU but this machine has none; use {fix}")
        elif value == "mps":
            import torch

            if not torch.backends.mps.is_available():
                problems.append(f"{key}=mps needs Apple's MPS backend, which this machine lacks; use cpu")
        elif key == "device" and value and value != "cpu":
            problems.append(f"device={value} is not a device; use cpu, cuda or cuda:N")
    return problems


def missing_keys(cfg: DictConfig) -> list[str]:
    """Keys left at ``???`` (mandatory values not given), found without resolving interpolations."""
    def walk(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return [prefix.rstrip(".")] if node == "???" else []
        return [key for name, value in node.items() for key in walk(value, f"{prefix}{name}.")]

    return walk(OmegaConf.to_container(cfg, resolve=False), "")


def validate_config(cfg: DictConfig) -> None:
    """Raise one ConfigError naming every problem of a composed config (see the module docstring)."""
    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be given: add {missing[0]}=VALUE to the command")
    problems = added_unknown_keys(cfg) + check_schema(cfg, TopSchema)
    if not problems:
        problems = unknown_target_arguments(cfg) + missing_accelerators(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
