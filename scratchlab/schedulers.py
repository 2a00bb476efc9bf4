"""Learning-rate schedules built from torch's own schedulers; the ``conf/scheduler`` configs target them with
``_partial_: true`` and the task calls the result with its optimizer."""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from scratchlab.errors import ConfigError


def warmup_cosine(optimizer: Optimizer, warmup_epochs: int, max_epochs: int, start_factor: float = 0.01,
                  eta_min: float = 0.0) -> LRScheduler:
    """Linear warm-up from ``start_factor`` x lr to lr over ``warmup_epochs`` epochs, then cosine annealing to
    ``eta_min`` until ``max_epochs`` (stepped once per epoch)."""
    if max_epochs is None or max_epochs < 1:
        raise ConfigError(f"scheduler=warmup_cosine needs a finite run: set trainer.max_epochs (got {max_epochs})")
    if not 0 <= warmup_epochs < max_epochs:
        raise ConfigError(f"scheduler.warmup_epochs={warmup_epochs} must be at least 0 and less than "
                          f"trainer.max_epochs={max_epochs}")
    if not 0 < start_factor <= 1:
        raise ConfigError(f"scheduler.start_factor={start_factor} must be in (0, 1]")
    cosine = CosineAnnealingLR(optimizer, T_max=max_epochs - warmup_epochs, eta_min=eta_min)
    if warmup_epochs == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
