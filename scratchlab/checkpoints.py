"""The one module that reads and writes scratchlab checkpoints.

A checkpoint is Lightning's file with one plain-data block added, ``checkpoint["scratchlab"]``: the
format version, the model's ``ModelSpec`` (task, class names, ``Preprocess``, ``DecisionParams`` and
task options such as Mask R-CNN's score threshold) and the operating point that
``scratchlab.evaluate choose=...`` may store later. The run config and the training split's class counts
stay in Lightning's ``hyper_parameters``.

Files are loaded with ``torch.load(weights_only=True)``: tensors and plain data (dicts, lists, strings,
numbers) only. A file that holds anything else is refused before any of its objects is built, so a
checkpoint from a stranger is data, never code. A path that is no checkpoint at all (a folder, an ONNX or
TorchScript export, an image) is named as such before ``torch.load`` sees it.
"""
from __future__ import annotations

import datetime as _dt
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.postprocess import DecisionParams, resolve_decision
from scratchlab.safe_output import atomic_path

FORMAT = 2
KEY = "scratchlab"
NOTE_KEYS = ("original", "previous", "written_at")


@dataclass(frozen=True)
class ModelSpec:
    """Everything besides the weights that decides how a model judges an image; stored once per checkpoint
    and copied into exported files."""

    task: str
    class_names: tuple[str, ...]
    preprocess: Preprocess
    decision: DecisionParams
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "class_names": list(self.class_names), "preprocess": self.preprocess.to_dict(),
                "decision": asdict(self.decision), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        return cls(task=str(d["task"]), class_names=tuple(d["class_names"]),
                   preprocess=Preprocess.from_dict(d["preprocess"]), decision=DecisionParams.from_config(d["decision"]),
                   options=dict(d.get("options") or {}))

    def with_decision(self, decision: DecisionParams) -> ModelSpec:
        return replace(self, decision=decision)


@dataclass
class Checkpoint:
    """A scratchlab checkpoint as read from ``path``."""

    path: Path
    spec: ModelSpec
    config: dict[str, Any]
    state_dict: dict[str, Any]
    operating_point: dict[str, Any] | None = None
    class_counts: list[int] | None = None
    components: dict[str, Checkpoint] = field(default_factory=dict)
    """The trained parts of a model made of several (two_stage), each with its own spec, config and weights."""

    @property
    def task(self) -> str:
        return self.spec.task

    def decision(self, overrides: Mapping[str, Any] | None = None, use_operating_point: bool = True) -> DecisionParams:
        """The rule to apply: run config < stored operating point < ``overrides``."""
        point = self.operating_point if use_operating_point else None
        return resolve_decision(asdict(self.spec.decision), point, overrides)


def checkpoint_block(spec: ModelSpec) -> dict[str, Any]:
    """What a task adds to the checkpoint it saves (``on_save_checkpoint``)."""
    return {"format": FORMAT, "spec": spec.to_dict(), "operating_point": None}


def _refusal(path: Path, err: Exception) -> ConfigError:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    what = f"the Python object {found.group(1)}" if found else "Python objects that are not plain data"
    return ConfigError(f"checkpoint {path} was refused: it holds {what}, which could run code when loaded; "
                       "a scratchlab checkpoint holds only tensors and plain data, so use one written by scratchlab.train")


def _file_kind(path: Path) -> str:
    """``checkpoint`` (torch.save's zip archive), ``torchscript``, ``pickle`` (legacy torch.save or a bare
    pickle) or ``other``, judged from the file's bytes without unpickling anything."""
    try:
        with open(path, "rb") as f:
            head = f.read(1)
        if not zipfile.is_zipfile(path):
            return "pickle" if head == b"\x80" else "other"
        with zipfile.ZipFile(path) as archive:
            records = {name.split("/", 1)[-1] for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile) as err:
        raise ConfigError(f"checkpoint {path} cannot be read ({err.__class__.__name__}); check the path and "
                          "its permissions") from None
    if "constants.pkl" in records:
        return "torchscript"
    return "checkpoint" if "data.pkl" in records else "other"


def _folder_hint(path: Path) -> str:
    """A .ckpt file inside the folder ``path`` to name in the error, or the usual place of one."""
    for candidate in (path / "checkpoints" / "best.ckpt", path / "best.ckpt"):
        if candidate.is_file():
            return str(candidate)
    found = sorted(path.glob("*.ckpt")) or sorted(path.glob("checkpoints/*.ckpt"))
    return str(found[0] if found else path / "checkpoints" / "best.ckpt")


def _check_is_checkpoint(path: Path) -> None:
    """One ``ConfigError`` line for a path that is no checkpoint file: missing, a folder, an exported model
    (ONNX, TorchScript) or any other file, before ``torch.load`` sees it."""
    if path.is_dir():
        raise ConfigError(f"checkpoint {path} is a folder; give the .ckpt file inside it, e.g. {_folder_hint(path)}")
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; pass the path of a scratchlab .ckpt file")
    kind = _file_kind(path)
    if kind == "torchscript" or (kind == "other" and path.suffix.lower() == ".onnx"):
        name = "a TorchScript" if kind == "torchscript" else "an ONNX"
        raise ConfigError(f"checkpoint {path} is {name} export, not a PyTorch checkpoint (.ckpt); predict runs it "
                          f"as model_path={path}, everything else needs the .ckpt file written by scratchlab.train")
    if kind == "other":
        raise ConfigError(f"checkpoint {path} is not a PyTorch checkpoint (.ckpt); pass a .ckpt file written "
                          "by scratchlab.train")


def load_file(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, read with ``weights_only=True``; every failure is one ``ConfigError`` line."""
    path = Path(path).expanduser()
    _check_is_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"checkpoint {path} cannot be read ({err.__class__.__name__}); is it a .ckpt file?") from None
    if not isinstance(ckpt, dict) or "config" not in (ckpt.get("hyper_parameters") or {}):
        raise ConfigError(f"checkpoint {path} was not written by scratchlab.train (no config inside)")
    block = ckpt.get(KEY)
    if not isinstance(block, dict) or block.get("format") != FORMAT:
        found = block.get("format") if isinstance(block, dict) else 1
        raise ConfigError(f"checkpoint {path} is in scratchlab checkpoint format {found}; this version reads "
                          f"format {FORMAT} only: train the model again with python -m scratchlab.train")
    return ckpt


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path`` with its spec, config, weights and operating point."""
    path = Path(path).expanduser().resolve()
    ckpt = load_file(path)
    hp = ckpt["hyper_parameters"]
    block = ckpt[KEY]
    try:
        spec = ModelSpec.from_dict(block["spec"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"checkpoint {path} has an incomplete scratchlab block ({err}); train the model again") from None
    point = block.get("operating_point")
    return Checkpoint(path=path, spec=spec, config=dict(hp["config"]), state_dict=ckpt["state_dict"],
                      operating_point=dict(point) if isinstance(point, Mapping) else None,
                      class_counts=hp.get("class_counts"),
                      components=_components(path, block.get("components") or {}, ckpt["state_dict"]))


def _components(path: Path, parts: Mapping[str, Any], state_dict: Mapping[str, Any]) -> dict[str, Checkpoint]:
    """Each part's Checkpoint: its weights are the keys under its ``prefix`` (the part with the empty prefix
    takes the keys no other part claims)."""
    prefixes = tuple(p["prefix"] for p in parts.values() if isinstance(p, Mapping) and p.get("prefix"))
    out = {}
    try:
        for name, part in parts.items():
            prefix = part.get("prefix") or ""
            weights = ({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)} if prefix else
                       {k: v for k, v in state_dict.items() if not k.startswith(prefixes)})
            out[name] = Checkpoint(path=path, spec=ModelSpec.from_dict(part["spec"]), config=dict(part["config"]),
                                   state_dict=weights, class_counts=part.get("class_counts"))
    except (AttributeError, KeyError, TypeError) as err:
        raise ConfigError(f"checkpoint {path} has an incomplete description of its parts ({err}); "
                          "train the model again") from None
    return out


def save_checkpoint(task: Any, path: str | Path) -> Path:
    """Write ``task`` (a scratchlab LightningModule that trains nothing, so Lightning never saves it) as a
    checkpoint in Lightning's layout, atomically; returns the path."""
    import pytorch_lightning as pl

    path = Path(path)
    ckpt: dict[str, Any] = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                            "pytorch-lightning_version": pl.__version__}
    task.on_save_checkpoint(ckpt)
    _save_atomically(ckpt, path)
    return path


def _save_atomically(ckpt: dict[str, Any], path: Path, mode: int | None = None) -> None:
    """``torch.save`` through ``safe_output.atomic_path``; ``mode`` keeps a rewritten file's permissions."""
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
        if mode is not None:
            tmp.chmod(mode)


def write_operating_point(path: str | Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Store decision ``values`` as the checkpoint's operating point, rewriting the file atomically
    (temporary file in the same folder + rename). The stored mapping also notes the run config's rule
    (``original``) and the operating point it replaces (``previous``)."""
    path = Path(path).expanduser()
    ckpt = load_file(path)
    block = ckpt[KEY]
    previous = block.get("operating_point")
    point = {**values, "original": dict(block["spec"]["decision"]),
             "previous": {k: v for k, v in previous.items() if k not in NOTE_KEYS} if previous else None,
             "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    block["operating_point"] = point
    _save_atomically(ckpt, path, mode=path.stat().st_mode & 0o777)
    return point
