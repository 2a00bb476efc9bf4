"""A Hydra sweeper on Optuna's ask-and-tell API (Optuna >= 4), configured like hydra-optuna-sweeper.

``hydra/sweeper=optuna``; search spaces are Hydra override strings (``interval``, ``tag(log, ...)``,
``range``, ``choice`` or ``a,b,c``); samplers ``tpe`` / ``random`` / ``grid`` / ``cmaes``; pruners
``median`` / ``percentile`` / ``successive_halving`` / ``hyperband`` / ``none``; RDB storage resumes a
study. A job learns its trial through :func:`current_trial`, to report intermediate values for pruning.
"""
from hydra_plugins.scratchlab_optuna_sweeper.trial_handoff import current_trial

__all__ = ["current_trial"]
