"""Console output of training: Lightning's progress bar on a terminal, one line per epoch elsewhere
(log files and CI), and no third-party tips."""
from __future__ import annotations

import logging
import sys
import time
import warnings

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ProgressBar

log = logging.getLogger("scratchlab")
_TIP_PREFIXES = ("💡 Tip", "Tip:")
_EPOCH_KEYS = ("loss", "acc", "precision_bad", "recall_bad", "f1_bad", "auroc", "dice", "map_segm", "f1_macro")


class DropTips(logging.Filter):
    """A logging filter that drops libraries' advertising tips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(_TIP_PREFIXES)


class EpochLine(Callback):
    """One log line per epoch: epoch number, seconds, and the epoch's losses and metrics."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith(("train/", "val/")) and k.split("/", 1)[1] in _EPOCH_KEYS}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        seconds = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        log.info(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} ({seconds:.1f} s) {shown}")


def console_callbacks(callbacks: list[Callback], interactive: bool | None = None) -> tuple[list[Callback], bool]:
    """The callbacks with the progress bar kept on a terminal, or replaced by :class:`EpochLine` when output
    goes to a file or pipe; and whether the trainer should show a progress bar."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        tips = logging.getLogger(name)
        if not any(isinstance(f, DropTips) for f in tips.filters):
            tips.addFilter(DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning-internal notice
    interactive = sys.stderr.isatty() if interactive is None else interactive
    if interactive:
        return callbacks, any(isinstance(c, ProgressBar) for c in callbacks)
    return [c for c in callbacks if not isinstance(c, ProgressBar)] + [EpochLine()], False
