"""Train / val / test splits: seeded, stratified by label, duplicate-aware, from a file, or k-fold."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scratchlab.data.io import file_digests
from scratchlab.data.types import Sample
from scratchlab.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
EXCLUDE = "exclude"
"""Split-file value that leaves an image out of every split."""


def split_samples(samples: list[Sample], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                  stratify: bool = True, dedupe: bool = True, split_file: str | Path | None = None,
                  fold: int | None = None, num_folds: int | None = None,
                  root: str | Path | None = None) -> dict[str, list[Sample]]:
    """Samples divided into ``{"train", "val", "test"}`` lists (each in input order).

    The base split comes from, in this order: ``split_file`` (CSV ``path,split``; relative paths are
    taken from ``root``, else from the file's folder; split ``exclude`` drops an image); a split the
    source predefined (every sample has ``meta["split"]``; without a given val, val is carved out of
    train by ``fractions``); else a seeded cut by ``fractions``, per label with ``stratify``.
    With ``dedupe``, images with identical pixels form one group that is never divided. With
    ``num_folds``, test stays as it is and train + val is cut into that many stratified folds, fold
    ``fold`` being val. The result depends on ``seed`` and the set of samples, not on their order.
    """
    weights = _check_fractions(fractions)
    _check_folds(fold, num_folds)
    if split_file is not None:
        assign = _read_split_file(samples, Path(split_file), root)
    elif samples and all("split" in s.meta for s in samples):
        assign = _predefined(samples, weights, seed, stratify, dedupe)
    else:
        assign = _cut_pool(samples, list(range(len(samples))), weights, SPLITS, [seed, 0], stratify, dedupe)
    if num_folds is not None:
        pool = sorted(i for i, a in assign.items() if a in ("train", "val"))
        names = ["val" if k == fold else "train" for k in range(num_folds)]
        assign.update(_cut_pool(samples, pool, [1.0] * num_folds, names, [seed, 1], stratify, dedupe))
    return {name: [s for i, s in enumerate(samples) if assign.get(i) == name] for name in SPLITS}


def splits_to_frame(splits: dict[str, list[Sample]]) -> pd.DataFrame:
    """One row per sample (``path``, ``label``, ``split``), e.g. to log the split as a CSV artifact."""
    rows = [(str(s.image), s.label, name) for name, items in splits.items() for s in items]
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    weights = [float(f) for f in fractions]
    if len(weights) != 3 or min(weights) < 0 or abs(sum(weights) - 1) > 1e-6:
        raise ConfigError(f"split fractions {list(fractions)} must be three non-negative numbers "
                          f"(train, val, test) that sum to 1")
    return weights


def _check_folds(fold: int | None, num_folds: int | None) -> None:
    if num_folds is None and fold is None:
        return
    if num_folds is None or fold is None or num_folds < 2 or not 0 <= fold < num_folds:
        raise ConfigError(f"k-fold needs num_folds >= 2 and 0 <= fold < num_folds, got fold={fold}, "
                          f"num_folds={num_folds}; set both or neither")


def _groups(samples: list[Sample], members: list[int], dedupe: bool) -> list[list[int]]:
    """Indices grouped by identical pixels (or one per sample), in an order independent of the input's."""
    if dedupe:
        by_digest: dict[str, list[int]] = defaultdict(list)
        for i, digest in zip(members, file_digests([samples[i].image for i in members])):
            by_digest[digest].append(i)
        groups = list(by_digest.values())
    else:
        groups = [[i] for i in members]
    return sorted(groups, key=lambda g: min(str(samples[i].image) for i in g))


def _cut_pool(samples: list[Sample], members: list[int], weights: Sequence[float], names: Sequence[str],
              seed: list[int], stratify: bool, dedupe: bool) -> dict[int, str]:
    """Assign ``members`` to ``names`` in proportion to ``weights``: groups are shuffled per stratum
    (the group's most common label), laid end to end and cut where the cumulative weights fall."""
    strata: dict[int, list[list[int]]] = defaultdict(list)
    for g in _groups(samples, members, dedupe):
        label = Counter(samples[i].label for i in g).most_common(1)[0][0] if stratify else 0
        strata[label].append(g)
    bounds = np.cumsum(weights) / np.sum(weights)
    assign: dict[int, str] = {}
    for label, groups in sorted(strata.items()):
        order = np.random.default_rng([*seed, label]).permutation(len(groups))
        sizes = np.array([len(groups[j]) for j in order], dtype=float)
        middles = (np.cumsum(sizes) - sizes / 2) / sizes.sum()
        parts = np.minimum(np.searchsorted(bounds, middles, side="right"), len(names) - 1)
        for j, part in zip(order, parts):
            assign.update({i: names[part] for i in groups[j]})
    return assign


def _predefined(samples: list[Sample], weights: list[float], seed: int, stratify: bool,
                dedupe: bool) -> dict[int, str]:
    assign = {i: str(s.meta["split"]) for i, s in enumerate(samples)}
    unknown = sorted(set(assign.values()) - set(SPLITS))
    if unknown:
        raise DataError(f"predefined split names {unknown} (e.g. in meta of {samples[0].image}) are not "
                        f"one of {list(SPLITS)}; rename the split folders")
    if "val" not in assign.values() and weights[1] > 0:
        train = [i for i, a in assign.items() if a == "train"]
        assign.update(_cut_pool(samples, train, weights[:2], ["train", "val"], [seed, 0], stratify, dedupe))
    return assign


def _read_split_file(samples: list[Sample], path: Path, root: str | Path | None) -> dict[int, str]:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(f"split file {path} cannot be read ({e}); give a CSV with columns path,split") from None
    if not {"path", "split"} <= set(table.columns):
        raise DataError(f"split file {path} has columns {list(table.columns)}; it needs the columns path,split")
    base = Path(root) if root is not None else path.parent
    by_path = {Path(s.image).resolve(): i for i, s in enumerate(samples)}
    assign: dict[int, str] = {}
    for name, split in zip(table["path"], table["split"].str.strip()):
        file = Path(name.strip())
        i = by_path.get((file if file.is_absolute() else base / file).resolve())
        if i is None:
            raise DataError(f"split file {path} lists {name!r}, which is no image of the data set; paths "
                            f"must be absolute or relative to {base}")
        if split not in (*SPLITS, EXCLUDE):
            raise DataError(f"split file {path} gives {name!r} the split {split!r}; use one of "
                            f"{[*SPLITS, EXCLUDE]}")
        if assign.setdefault(i, split) != split:
            raise DataError(f"split file {path} lists {name!r} twice with different splits; keep one row")
    missing = [s.image for i, s in enumerate(samples) if i not in assign]
    if missing:
        raise DataError(f"split file {path} does not list {len(missing)} image(s) of the data set "
                        f"(first: {missing[0]}); add a row for each, with split {EXCLUDE!r} to leave it out")
    return assign
