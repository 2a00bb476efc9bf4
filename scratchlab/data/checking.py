"""Data check: what a data set holds and what is wrong with it, before any training (the library behind
``python -m scratchlab.data.check``; training runs ``check_index`` and ``stop_on_fatal`` too).

Exit code of ``run_check``: 0 when fine, 1 for warnings with ``strict=true``, 2 for fatal problems.
"""
from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from scratchlab.data.io import decode_pool, file_digest, image_header, low_bits_advice, low_bits_max, read_image, read_mask
from scratchlab.data.statistics import (
    PRINTED_CODE_REFERENCE,
    comparison_table,
    load_reference,
    measure,
    percentiles,
    save_percentiles,
)
from scratchlab.data.types import Sample, SampleIndex
from scratchlab.errors import ConfigError, DataError
from scratchlab.safe_output import refuse_existing, write_text
from scratchlab.visualize import draw_overlay, make_grid, save_png

FATAL, WARNING = "fatal", "warning"
PERCENTILES = (5, 25, 50, 75, 95)
_SHOWN = 10
"""Problems of one kind listed on the console (the report file and ``to_dict`` hold all)."""


@dataclass(frozen=True)
class Problem:
    """One finding: ``kind`` such as ``empty_mask``, a one-line ``message`` and the files concerned."""

    severity: str
    kind: str
    message: str
    files: tuple[str, ...]


@dataclass
class CheckReport:
    """Counts, image and mask statistics, and problems of one data set."""

    counts: dict[str, int]
    split_counts: dict[str, dict[str, int]]
    sizes: dict[str, dict[str, float]]
    modes: dict[str, int]
    coverage: dict[str, float]
    problems: list[Problem] = field(default_factory=list)

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == FATAL]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    def exit_code(self, strict: bool = False) -> int:
        """2 with fatal problems, 1 with warnings when ``strict``, else 0."""
        return 2 if self.fatal else 1 if strict and self.warnings else 0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self, shown: int | None = _SHOWN) -> str:
        """The report as text, with at most ``shown`` problems of each kind (None: all)."""
        lines = [f"images: {sum(self.counts.values())}  ("
                 + ", ".join(f"{k} {v}" for k, v in self.counts.items()) + ")"]
        for split, counts in self.split_counts.items():
            lines.append(f"  {split}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if self.sizes:
            lines.append("size (min / median / max): " + ", ".join(
                f"{axis} {s['min']:g} / {s['median']:g} / {s['max']:g}" for axis, s in self.sizes.items()))
        lines.append("modes: " + ", ".join(f"{k} {v}" for k, v in self.modes.items()))
        if self.coverage:
            lines.append(f"mask share of defect images (n={self.coverage['n']:g}): " + ", ".join(
                f"{k} {v:.4f}" for k, v in self.coverage.items() if k != "n"))
        lines.append(f"problems: {len(self.fatal)} fatal, {len(self.warnings)} warnings")
        by_kind: dict[tuple[str, str], list[Problem]] = defaultdict(list)
        for p in self.problems:
            by_kind[(p.severity, p.kind)].append(p)
        for (severity, kind), items in sorted(by_kind.items()):
            lines.append(f"  {severity.upper()} {kind} ({len(items)})")
            lines += [f"    {p.message}" for p in items[:shown]]
            if shown is not None and len(items) > shown:
                lines.append(f"    ... and {len(items) - shown} more (all in the report file)")
        return "\n".join(lines)


@dataclass
class _Facts:
    """What reading one sample's image and mask found."""

    size: tuple[int, int] | None = None
    mode: str | None = None
    digest: str | None = None
    mask_size: tuple[int, int] | None = None
    mask_share: float | None = None
    frames: int = 1
    low_bits_max: int | None = None
    """``low_bits_max`` of the image: set for unscaled 10- to 12-bit data in a 16-bit file."""
    errors: list[tuple[str, str]] = field(default_factory=list)
    """``(file, message)`` of each file that could not be read."""


def _threshold(sample: Sample, default: int) -> int:
    return int(sample.meta.get("mask_threshold", default))


def _inspect(sample: Sample, mask_threshold: int) -> _Facts:
    facts = _Facts()
    try:  # facts of an image only once all of it decodes (a readable header alone says nothing)
        width, height, mode, frames = image_header(sample.image)
        facts.digest = file_digest(sample.image)
        facts.low_bits_max = low_bits_max(sample.image)
        facts.size, facts.mode, facts.frames = (width, height), mode, frames
    except DataError as e:
        facts.errors.append((str(sample.image), str(e)))
    if sample.mask is not None:
        try:
            mask = read_mask(sample.mask, _threshold(sample, mask_threshold))
            facts.mask_size, facts.mask_share = (mask.shape[1], mask.shape[0]), float(mask.mean())
        except DataError as e:
            facts.errors.append((str(sample.mask), str(e)))
    return facts


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def _counts(samples: list[Sample], names: list[str]) -> dict[str, int]:
    found = Counter(s.label for s in samples)
    return {name: found[i] for i, name in enumerate(names)}


def check_index(index: SampleIndex, *, mask_threshold: int = 128,
                splits: dict[str, list[Sample]] | None = None) -> CheckReport:
    """Read every image and mask of ``index`` once and report counts, statistics and problems.

    Label 0 is the good class; a sample's ``meta["mask_threshold"]`` (set by its source) wins over
    ``mask_threshold``. Split counts come from ``splits``, else from ``meta["split"]`` when all have one.
    """
    samples, names = index.samples, index.class_names
    facts = list(decode_pool().map(lambda s: _inspect(s, mask_threshold), samples))
    if splits is None and samples and all("split" in s.meta for s in samples):
        splits = defaultdict(list)
        for s in samples:
            splits[s.meta["split"]].append(s)
    problems = _class_problems(samples, names)
    problems += [Problem(FATAL, "unreadable", message, (file,)) for f in facts for file, message in f.errors]
    problems += [Problem(WARNING, "multi_frame", f"{s.image} holds {f.frames} frames (an animation or pages); only "
                         f"the first is used: save that frame alone to silence this", (str(s.image),))
                 for s, f in zip(samples, facts) if f.frames > 1 and f.digest]
    problems += [Problem(WARNING, "low_bit_depth", f"{s.image} is {low_bits_advice(f.low_bits_max)}",
                         (str(s.image),))
                 for s, f in zip(samples, facts) if f.low_bits_max is not None]
    problems += _box_problems(samples, facts)
    problems += _mask_problems(index, facts, mask_threshold)
    problems += _duplicates(samples, facts, names, splits)
    sized = [f for f in facts if f.size]
    shares = [f.mask_share for s, f in zip(samples, facts)
              if s.label != 0 and f.mask_share is not None and f.mask_size == f.size]
    coverage = {}
    if shares:
        coverage = {"n": float(len(shares)), "mean": float(np.mean(shares)),
                    **{f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(shares, PERCENTILES))}}
    return CheckReport(
        counts=_counts(samples, names),
        split_counts={k: _counts(v, names) for k, v in (splits or {}).items()},
        sizes={"width": _stats([f.size[0] for f in sized]), "height": _stats([f.size[1] for f in sized])}
        if sized else {},
        modes=dict(Counter(f.mode for f in sized).most_common()),
        coverage=coverage,
        problems=problems)


def _class_problems(samples: list[Sample], names: list[str]) -> list[Problem]:
    """A class without images: fatal for a two-class (good/bad) set, which cannot learn from one class."""
    counts = _counts(samples, names)
    out = []
    for name, n in counts.items():
        if n == 0 and samples:
            others = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            severity = FATAL if len(names) == 2 else WARNING
            out.append(Problem(severity, "empty_class", f"no {name} images ({others}): a model cannot learn "
                               f"{' / '.join(names)} from this set; add {name} images", ()))
    return out


def _box_problems(samples: list[Sample], facts: list[_Facts]) -> list[Problem]:
    """Boxes that are empty or reach outside their image (named with their annotation file)."""
    out = []
    for s, f in zip(samples, facts):
        if not s.boxes or f.size is None:
            continue
        width, height = f.size
        wrong = [b for b in s.boxes if not (0 <= b.x1 < b.x2 <= width and 0 <= b.y1 < b.y2 <= height)]
        if wrong:
            b, where = wrong[0], s.meta.get("annotation", "its annotation")
            out.append(Problem(WARNING, "box_outside", f"{len(wrong)} box(es) in {where} leave the {width}x{height} "
                               f"image {s.image} (first: x {b.x1}..{b.x2}, y {b.y1}..{b.y2}); fix the annotation",
                               tuple(dict.fromkeys((str(where), str(s.image))))))
    return out


def _mask_problems(index: SampleIndex, facts: list[_Facts], mask_threshold: int) -> list[Problem]:
    """Missing, empty and wrongly sized masks, and masks without an image."""
    out = [Problem(WARNING, "orphan_mask", f"mask {m} belongs to no bad image; add the image or delete the mask",
                   (str(m),)) for m in index.orphans]
    has_masks = bool(index.orphans) or any(s.mask is not None for s in index.samples)
    for s, f in zip(index.samples, facts):
        if s.label != 0 and s.mask is None and has_masks:
            out.append(Problem(WARNING, "missing_mask", f"defect image {s.image} has no mask; add one named "
                               f"like the image or leave it out of segmentation", (str(s.image),)))
        if s.mask is None or f.mask_size is None or f.size is None:
            continue
        if f.mask_size != f.size:
            out.append(Problem(FATAL, "mask_size", f"mask {s.mask} is {f.mask_size[0]}x{f.mask_size[1]} but image "
                               f"{s.image} is {f.size[0]}x{f.size[1]}; re-export the mask at the image size",
                               (str(s.mask), str(s.image))))
        elif s.label != 0 and f.mask_share == 0:
            out.append(Problem(WARNING, "empty_mask", f"mask {s.mask} of defect image {s.image} has no pixel >= "
                               f"{_threshold(s, mask_threshold)}; draw the defect or move the image to good",
                               (str(s.mask), str(s.image))))
    return out


def _duplicates(samples: list[Sample], facts: list[_Facts], names: list[str],
                splits: dict[str, list[Sample]] | None) -> list[Problem]:
    """Groups of images with identical pixels: a warning, fatal when their labels differ."""
    split_of = {id(s): name for name, items in (splits or {}).items() for s in items}
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s, f in zip(samples, facts):
        if f.digest:
            groups[f.digest].append(s)
    out = []
    for group in groups.values():
        if len(group) < 2:
            continue
        files = tuple(str(s.image) for s in group)
        listed = ", ".join(f"{s.image} ({names[s.label]})" for s in group)
        if len({s.label for s in group}) > 1:
            out.append(Problem(FATAL, "duplicate_across_classes", f"identical images carry different labels: "
                               f"{listed}; delete the wrongly labelled copy", files))
        else:
            out.append(Problem(WARNING, "duplicate", f"identical images: {listed}; keep one", files))
        in_splits = {split_of[id(s)] for s in group if id(s) in split_of}
        if len(in_splits) > 1:
            out.append(Problem(WARNING, "duplicate_across_splits", f"identical images sit in splits "
                               f"{sorted(in_splits)}: {listed}; use split dedupe or fix the split file", files))
    return out


def stop_on_fatal(report: CheckReport, log: logging.Logger) -> None:
    """Before training: log every fatal problem (one line each) and raise one DataError that counts them;
    log the first warnings."""
    fatal = report.fatal
    if len(fatal) == 1:
        raise DataError(f"data check failed: {fatal[0].message}")
    if fatal:
        for problem in fatal:
            log.error("data check: %s", problem.message)
        raise DataError(f"data check failed: {len(fatal)} fatal problems, listed above; fix them and see "
                        f"python -m scratchlab.data.check for the whole report")
    for problem in report.warnings[:_SHOWN]:
        log.warning("data check: %s", problem.message)


def save_grid(index: SampleIndex, path: str | Path, n: int = 16, seed: int = 0, tile: int = 256) -> Path:
    """A PNG of ``n`` random samples (half of them defect images where there are enough), each
    with its mask outlined (green), its boxes and its class name."""
    rng = np.random.default_rng(seed)
    bad = [i for i, s in enumerate(index.samples) if s.label != 0]
    good = [i for i, s in enumerate(index.samples) if s.label == 0]
    n_bad = min(len(bad), max(n // 2, n - len(good)))
    chosen = [*rng.permutation(bad)[:n_bad], *rng.permutation(good)[:n - n_bad]]
    cells, titles = [], []
    for i in chosen:
        s = index.samples[i]
        try:
            image = read_image(s.image)
            mask = read_mask(s.mask, _threshold(s, 128)) if s.mask is not None else None
            if mask is not None and mask.shape != image.shape[:2]:
                mask = None
            cells.append(draw_overlay(image, gt_mask=mask, gt_boxes=s.boxes))
            titles.append(index.class_names[s.label])
        except DataError:
            cells.append(np.full((tile, tile, 3), 128, np.uint8))
            titles.append("unreadable")
    if not cells:
        raise DataError("save_grid got an empty data set; check data.root")
    return save_png(path, make_grid(cells, ncols=math.ceil(math.sqrt(len(cells))), tile=tile, titles=titles))


def run_check(cfg: DictConfig) -> int:
    """Load ``cfg.data.source``, check it, write the report, grid and statistics file, print; returns the exit
    code. An existing output is an error before any work unless ``overwrite=true``."""
    from hydra.utils import instantiate

    statistics = int(cfg.get("statistics") or 0)
    _refuse_unsafe_outputs(cfg, statistics)
    reference, reference_name = PRINTED_CODE_REFERENCE, "real printed-code photos"
    if cfg.get("reference"):
        reference, reference_name = load_reference(cfg.reference), str(cfg.reference)
    index = instantiate(cfg.data.source).load()
    threshold = int(cfg.data.get("mask_threshold", 128))
    report = check_index(index, mask_threshold=threshold)
    print(report.to_text())
    if cfg.get("report"):
        full = report.to_text(shown=None) + "\n"
        print(f"report: {write_text(Path(cfg.report), full)}")
    if cfg.get("grid") and index.samples:
        print(f"grid: {save_grid(index, cfg.grid)}")
    if statistics and index.samples:
        measured, n = appearance_percentiles(index, statistics, threshold)
        print(f"appearance of {n} images (left) and of {reference_name} (right):\n"
              + comparison_table(measured, reference))
        if cfg.get("statistics_file"):
            print(f"statistics: {save_percentiles(Path(cfg.statistics_file), measured, n)}  "
                  "(reference= of a later check)")
    return report.exit_code(strict=bool(cfg.get("strict", False)))


def _refuse_unsafe_outputs(cfg: DictConfig, statistics: int) -> None:
    """One ConfigError, before any work, for outputs that exist (without ``overwrite``), that name one file, or
    a statistics file that is the reference; and for ``reference=`` without ``statistics=N``."""
    if cfg.get("reference") and not statistics:
        raise ConfigError(f"reference={cfg.reference} compares appearance statistics; add statistics=N (images to "
                          "measure, e.g. 1000)")
    named = {"report": cfg.get("report"), "grid": cfg.get("grid"),
             "statistics_file": cfg.get("statistics_file") if statistics else None}
    outputs = {key: Path(str(value)).expanduser().resolve() for key, value in named.items() if value}
    if len(set(outputs.values())) < len(outputs):
        raise ConfigError(f"{', '.join(f'{k}={named[k]}' for k in outputs)}: two outputs name one file; give each "
                          "its own path")
    if cfg.get("reference") and outputs.get("statistics_file") == Path(str(cfg.reference)).expanduser().resolve():
        raise ConfigError(f"statistics_file={named['statistics_file']} is the reference; write the new statistics "
                          "to another file")
    refuse_existing(outputs.values(), bool(cfg.get("overwrite", False)))


def appearance_percentiles(index: SampleIndex, n: int, mask_threshold: int = 128,
                           seed: int = 0) -> tuple[dict[str, tuple[float, ...]], int]:
    """Appearance percentiles (``scratchlab.data.statistics``) of up to ``n`` images of ``index`` (a seeded
    sample), and how many images that was."""
    rng = np.random.default_rng(seed)
    picked = [index.samples[i] for i in sorted(rng.permutation(len(index.samples))[:n])]

    def pairs():
        for s in picked:
            yield read_image(s.image), (read_mask(s.mask, _threshold(s, mask_threshold)) if s.mask else None)

    return percentiles(measure(pairs())), len(picked)
