"""Training callbacks that scratchlab configures beyond Lightning's own (``conf/callbacks``)."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging as _LightningEMA


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
