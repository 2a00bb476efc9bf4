"""Magnetic tile defects: ``MT_<class>/Imgs/<name>.jpg`` with the mask ``<name>.png`` beside it."""
from __future__ import annotations

from pathlib import Path

from scratchlab.data.io import list_images
from scratchlab.data.types import BINARY_CLASSES, Sample, SampleIndex
from scratchlab.errors import ConfigError, DataError

MT_CLASSES = ["Free", "Blowhole", "Break", "Crack", "Fray", "Uneven"]
"""Label order of the ``multiclass`` task; Free (defect-free) is label 0, as good is in ``binary``."""
TASKS = ("binary", "multiclass", "crack_vs_free")


class MagneticTileSource:
    """``binary``: Free = good (0), every defect class = bad (1); ``multiclass``: the six classes;
    ``crack_vs_free``: Free = good, Crack = bad (the scratch-like defect), the other classes left out.
    Bad images get their ``.png`` mask (soft edges, defect = value >= ``mask_threshold``)."""

    def __init__(self, root: str | Path, task: str = "binary", mask_threshold: int = 128) -> None:
        if task not in TASKS:
            raise ConfigError(f"magnetic tile task {task!r} is unknown; use one of {', '.join(TASKS)}")
        self.root = Path(root)
        self.task = task
        self.mask_threshold = mask_threshold

    def load(self) -> SampleIndex:
        """Find the images of every ``MT_<class>`` folder and their masks."""
        folders = sorted(p for p in self.root.glob("MT_*") if p.is_dir())
        if not folders:
            raise DataError(f"no MT_<class> folders in {self.root}; set data.root to the folder holding "
                            f"MT_Free/, MT_Crack/, ...")
        names = MT_CLASSES if self.task == "multiclass" else BINARY_CLASSES
        index = SampleIndex([], list(names))
        for folder in folders:
            cls = folder.name[3:]
            if cls not in MT_CLASSES:
                raise DataError(f"{folder} is no magnetic tile class; expected MT_ + one of {MT_CLASSES}")
            if self.task == "crack_vs_free" and cls not in ("Free", "Crack"):
                continue
            label = MT_CLASSES.index(cls) if self.task == "multiclass" else int(cls != "Free")
            files = list_images(folder / "Imgs")
            masks = {p.stem: p for p in files if p.suffix.lower() == ".png"}
            images = [p for p in files if p.suffix.lower() != ".png"]
            for p in images:
                mask = masks.get(p.stem) if cls != "Free" else None
                meta = {"defect": cls, **({"mask_threshold": self.mask_threshold} if mask else {})}
                index.samples.append(Sample(p, label, mask=mask, meta=meta))
            stems = {p.stem for p in images}
            index.orphans += [m for stem, m in masks.items() if stem not in stems]
        if not index.samples:
            raise DataError(f"no images in {self.root}/MT_*/Imgs; expected <name>.jpg with <name>.png masks")
        return index
