"""Hydra override strings -> Optuna distributions (sweeps) or fixed values (plain overrides)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.types import Override, Transformer

if TYPE_CHECKING:  # optuna is imported when a sweep starts, not whenever Hydra scans its plugins
    from optuna.distributions import BaseDistribution


def _values(override: Override) -> list[Any]:
    return list(override.sweep_iterator(transformer=Transformer.encode))


def distribution(override: Override) -> "BaseDistribution":
    """The Optuna distribution of one sweep override: ``a,b,c`` / ``choice(...)`` -> categorical,
    ``range(start, stop, step)`` -> int or float with a step (stop excluded, as in Hydra),
    ``interval(low, high)`` -> float (int when cast with ``int(...)``), log-scaled with ``tag(log, ...)``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if override.is_choice_sweep():
        return CategoricalDistribution(_values(override))
    if override.is_range_sweep():
        value = override.value()
        values = _values(override)
        if value.shuffle or not values:
            return CategoricalDistribution(values)
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(int(values[0]), int(values[-1]), step=int(value.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if override.is_interval_sweep():
        value = override.value()
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(f"{override.input_line} is not a sweep Optuna can sample; use interval(), range() or a,b,c")


def grid_values(override: Override) -> list[Any]:
    """The points of a sweep override for ``GridSampler`` (intervals have none)."""
    if override.is_choice_sweep() or override.is_range_sweep():
        return _values(override)
    raise ValueError(f"{override.input_line}: the grid sampler needs a,b,c / choice() / range(), not an interval")


def split_overrides(overrides: list[Override]) -> tuple[dict[str, Override], list[str]]:
    """Sweep overrides by key, and the plain ``key=value`` overrides every trial gets."""
    sweeps: dict[str, Override] = {}
    fixed: list[str] = []
    for override in overrides:
        if override.is_sweep_override():
            sweeps[override.get_key_element()] = override
        else:
            fixed.append(override.input_line)
    return sweeps, fixed
