"""Training callbacks that scratchlab configures beyond Lightning's own (``conf/callbacks``)."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging as _LightningEMA
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from scratchlab.resume import defer_interrupts, release_interrupts


class EMAWeightAveraging(_LightningEMA):
    """Lightning's EMA of the weights, averaging during ``fit`` only.

    Validation runs the averaged weights and every checkpoint's ``state_dict`` holds them (the raw ones go to
    ``current_model_state``, for resuming). Lightning's callback would also act after ``fit``: a ``test`` or
    ``validate`` of the best checkpoint would reload its raw weights (or swap in the last average); here the
    average is dropped when ``fit`` ends, so they run the averaged ``state_dict`` like every other path.
    """

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._average_model = None

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self._average_model is not None:  # resuming a fit; otherwise the state_dict already is the average
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` holds the last finished epoch.

    Lightning writes ``last.ckpt`` only when it also writes a top-k checkpoint, so after epochs that did not
    improve the monitored metric, or ran no validation (``trainer.check_val_every_n_epoch``), it still held an
    older epoch, and an interrupted run lost the epochs since. Here every epoch's end (after its validation, if
    any) writes ``last.ckpt``, unless it was written at that step already.

    An interrupt (:mod:`scratchlab.resume`) that lands between an epoch's logged metrics and its ``last.ckpt``
    waits until both are written, so a resumed run neither repeats nor loses that epoch.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.ckpt_path:  # resumed: the restored step's checkpoint exists; Lightning may replay its epoch end
            self._last_global_step_saved = trainer.global_step

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            defer_interrupts()  # its metrics are logged next: they and the checkpoint that follows go together

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_of_epoch(trainer)
            release_interrupts()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        defer_interrupts()  # until the next epoch starts, when this one's checkpoint and metrics are all written
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_of_epoch(trainer)  # Lightning calls it after the epoch's validation

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        release_interrupts()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        release_interrupts()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        release_interrupts(raise_pending=False)

    def _save_last_of_epoch(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer) \
                and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
