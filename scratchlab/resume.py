"""Interrupt and resume: Ctrl-C or SIGTERM ends a run as KILLED with its last checkpoint logged, and
``ckpt_path=PATH`` or ``resume=RUN_ID`` continues training into the same MLflow run.

``last.ckpt`` is written at the end of every epoch; besides Lightning's state (weights, optimizer,
scheduler, loops, callbacks) it holds the random number generators and the MLflow run id, so a resumed
run continues exactly where the uninterrupted one would have been.
"""
from __future__ import annotations

import logging
import random
import shlex
import signal
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.trainer.connectors import signal_connector

from scratchlab.errors import ConfigError

LAST_CHECKPOINT_TAG = "last_checkpoint"
FREE_ON_RESUME = ("paths.", "logger.", "tags.", "callbacks.model_checkpoint.dirpath", "callbacks.progress_bar.",
                  "data.num_workers", "data.pin_memory", "data.cache_", "trainer.max_epochs", "optimized_metric")
"""Settings a resumed run may change: where files and runs go, labels, the display, loading (results are the same
for any number of loader workers), how many epochs to train in all, and what a sweep reads back."""
MLFLOW_PARAM_CUT = 250
"""Param values at least this long may have been cut when logged: compared as a prefix."""
SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Interrupted(BaseException):
    """Raised by SIGINT / SIGTERM while a run trains; like KeyboardInterrupt, but passed on by Lightning."""

    def __init__(self, signum: int) -> None:
        super().__init__(SIGNAL_NAMES.get(signum, f"signal {signum}"))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class _InterruptState:
    """Whether interrupts wait (:func:`defer_interrupts`) and the signal that waits."""
    deferred = False
    pending: int | None = None


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while the block runs; while interrupts
    are deferred, the first one waits for :func:`release_interrupts` and a second one raises at once.

    The handler does no I/O: Lightning's own SIGTERM handler, which runs before it, is kept from logging, since
    a signal that lands while the same log file is being written would make that write re-entrant."""
    def handler(signum: int, frame: Any) -> None:
        if _InterruptState.deferred and _InterruptState.pending is None:
            _InterruptState.pending = signum
            return
        _InterruptState.deferred, _InterruptState.pending = False, None
        raise Interrupted(signum)

    lightning_log = logging.getLogger(signal_connector.__name__)
    level = lightning_log.level
    previous = {sig: signal.getsignal(sig) for sig in SIGNAL_NAMES}
    lightning_log.setLevel(logging.WARNING)
    for sig in SIGNAL_NAMES:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        lightning_log.setLevel(level)
        _InterruptState.deferred, _InterruptState.pending = False, None


def defer_interrupts() -> None:
    """Let an interrupt wait until :func:`release_interrupts`: for work that must not stop half-done."""
    _InterruptState.deferred = True


def release_interrupts(*, raise_pending: bool = True) -> None:
    """End :func:`defer_interrupts`; raise the interrupt that waited, if any (and ``raise_pending``)."""
    signum = _InterruptState.pending
    _InterruptState.deferred, _InterruptState.pending = False, None
    if signum is not None and raise_pending:
        raise Interrupted(signum)


class ResumeState(pl.Callback):
    """Keeps in every checkpoint what an exact continuation needs beyond Lightning's own state: the random
    number generators (Python, NumPy, torch) and the MLflow run id. Plain data and tensors only."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {"mlflow_run_id": self.run_id, "torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


@dataclass(frozen=True)
class ResumePoint:
    """Where training continues from: a checkpoint, and the MLflow run to continue (None: a new run)."""

    checkpoint: Path
    run_id: str | None


def _run_of_checkpoint(path: Path) -> str | None:
    from scratchlab.checkpoints import load_file

    states = load_file(path).get("callbacks") or {}
    for key, state in states.items():
        if str(key).startswith(ResumeState.__name__) and isinstance(state, dict):
            return state.get("mlflow_run_id")
    return None


def resume_point(cfg: DictConfig, client: MlflowClient) -> ResumePoint | None:
    """The checkpoint and run named by ``ckpt_path=`` or ``resume=RUN_ID``; None for a fresh run."""
    ckpt, run_id = cfg.get("ckpt_path"), cfg.get("resume")
    if ckpt and run_id:
        raise ConfigError("give ckpt_path=PATH or resume=RUN_ID, not both")
    if ckpt:
        path = Path(str(ckpt)).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"ckpt_path={ckpt}: no such file; give the last.ckpt of an interrupted run")
        return ResumePoint(path, _run_of_checkpoint(path))
    if not run_id:
        return None
    try:
        run = client.get_run(str(run_id))
    except MlflowException:
        raise ConfigError(f"resume={run_id} is not a run in {client.tracking_uri}; check the id") from None
    local = run.data.tags.get(LAST_CHECKPOINT_TAG)
    if local and Path(local).is_file():
        return ResumePoint(Path(local), run.info.run_id)
    try:
        path = client.download_artifacts(run.info.run_id, "checkpoints/last.ckpt", str(Path(cfg.paths.output_dir)))
    except (MlflowException, OSError):
        raise ConfigError(f"resume={run_id}: the run has no last.ckpt (it finished, or stopped before its first "
                          "epoch ended); train it again") from None
    return ResumePoint(Path(path), run.info.run_id)


def override_key(override: str) -> str:
    """The config key an override sets (``+a.b=1`` and ``~a.b`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


def setting_overrides(overrides: list[str], leave_out: Collection[str] = ()) -> list[str]:
    """The overrides that re-create a run's settings: Hydra's own (output folder, sweeper, launcher), the search
    and the way the run was started (``resume=``, ``ckpt_path=``) left out, as are the keys in ``leave_out``. Of an
    override given twice (same key, same ``+``/``~`` prefix) only the last is kept, where it stood: the one that
    counts."""
    last: dict[str, str] = {}
    for o in overrides:
        if o.lstrip("+~").startswith(("hydra.", "hydra/", "hparams_search=", "resume=", "ckpt_path=")) \
                or override_key(o) in leave_out:
            continue
        prefixed_key = o.split("=", 1)[0]
        last.pop(prefixed_key, None)
        last[prefixed_key] = o
    return list(last.values())


def resume_command(overrides: list[str], run_id: str) -> str:
    """The command that continues run ``run_id``: its own settings' overrides, then ``resume=``."""
    return " ".join(["python -m scratchlab.train", *map(shlex.quote, setting_overrides(overrides)), f"resume={run_id}"])


def run_overrides(run: Any) -> list[str] | None:
    """The task overrides a run was started with: its Hydra ``overrides.yaml``, else its
    ``hydra.overrides`` tag; None when neither is there."""
    output_dir = run.data.tags.get("hydra.output_dir")
    saved = Path(output_dir) / ".hydra" / "overrides.yaml" if output_dir else None
    if saved is not None and saved.is_file():
        return [str(o) for o in OmegaConf.load(saved)]
    tag = run.data.tags.get("hydra.overrides")
    return tag.split() if tag is not None else None


def check_same_settings(settings: dict[str, Any], derived: set[str], client: MlflowClient, run_id: str) -> None:
    """A ConfigError when ``settings`` (a flattened config) train something else than run ``run_id`` did, beyond
    what ``FREE_ON_RESUME`` allows: a resumed run would mix two experiments in one history. ``derived`` keys
    interpolate others (``${trainer.max_epochs}``): they change with their sources, which are compared."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return  # not in this store: reopening it says so
    held = run.data.params

    def differs(key: str, value: Any) -> bool:
        old, new = held[key], str(value)
        return old != new and not (len(old) >= MLFLOW_PARAM_CUT and new.startswith(old))

    changed = [f"{k}={settings[k]} (the run: {held[k]})" for k in sorted(settings)
               if k in held and k not in derived and not k.startswith(FREE_ON_RESUME) and differs(k, settings[k])]
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        own = run_overrides(run)
        hint = f"continue it with its own settings: {resume_command(own, run_id)}" if own is not None \
            else "give the same overrides as the interrupted run"
        raise ConfigError(f"resume: this command trains something else than run {run_id}: "
                          f"{', '.join(changed[:3])}{more}; {hint}")
