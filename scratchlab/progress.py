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
    """One log line per epoch: epoch number, seconds, and that epoch's own losses and metrics.

    The epoch's training metrics are complete only after the module's ``on_train_epoch_end`` (which runs after
    this callback's, and after the epoch's validation), so the line is written when the next epoch starts or
    training ends. Validation metrics are shown only for epochs that ran a validation."""

    def __init__(self) -> None:
        self._start, self._validated = time.perf_counter(), False
        self._pending: tuple[int, float, bool] | None = None  # epoch, seconds, validated

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_pending(trainer)
        self._start, self._validated = time.perf_counter(), False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = (trainer.current_epoch + 1, time.perf_counter() - self._start, self._validated)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_pending(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._write_pending(trainer)  # an interrupt right after an epoch: its line is not lost

    def _write_pending(self, trainer: pl.Trainer) -> None:
        """Write the line of the epoch that ended last, if not written yet."""
        pending, self._pending = self._pending, None
        if pending is None or not trainer.is_global_zero:
            return
        epoch, seconds, validated = pending
        stages = ("train/", "val/") if validated else ("train/",)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith(stages) and k.split("/", 1)[1] in _EPOCH_KEYS}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        log.info(f"epoch {epoch}/{trainer.max_epochs} ({seconds:.1f} s) {shown}")


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
