"""Plain records shared by every data source, split and data module."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixel coordinates, ``x1, y1`` inclusive, ``x2, y2`` exclusive."""

    x1: int
    y1: int
    x2: int
    y2: int
    label: str = "scratch"


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    ``label`` indexes the source's ``class_names``; in binary sets ``0`` is good and ``1`` is bad.
    ``mask`` is the path of a defect mask (``None`` for good images or sets without masks).
    ``polygons`` are per-defect outlines (lists of ``(x, y)``) where the source has them (VIA);
    ``boxes`` are detection boxes where the source has them (NEU-DET).
    """

    image: Path
    label: int
    mask: Path | None = None
    boxes: tuple[Box, ...] = ()
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class SampleIndex:
    """Everything a data source found: its samples, the names of their classes, and mask files
    that belong to no image (``orphans``, reported by the data check)."""

    samples: list[Sample]
    class_names: list[str]
    orphans: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of samples per class name."""
        out = {name: 0 for name in self.class_names}
        for s in self.samples:
            out[self.class_names[s.label]] += 1
        return out


BINARY_CLASSES = ["good", "bad"]
