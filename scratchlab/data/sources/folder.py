"""Your own images in folders: ``good/ bad/ masks/``, or ``train/ test/`` (and ``val/``) with masks beside."""
from __future__ import annotations

from pathlib import Path

from scratchlab.data.io import list_images
from scratchlab.data.splits import SPLITS
from scratchlab.data.types import BINARY_CLASSES, Sample, SampleIndex
from scratchlab.errors import DataError


class FolderSource:
    """Binary good / bad images, masks named like their bad image (any image extension).

    Layout A: ``root/good``, ``root/bad``, ``root/masks``. Layout B: ``root/<split>/good``,
    ``root/<split>/bad`` and ``root/<split>_masks`` (flat or with class subfolders) for split in
    train, val, test; each sample's ``meta["split"]`` then holds its given split.
    """

    def __init__(self, root: str | Path, mask_threshold: int = 128) -> None:
        self.root = Path(root)
        self.mask_threshold = mask_threshold

    def load(self) -> SampleIndex:
        """Find every image, its mask and the masks that match no bad image."""
        root = self.root
        if not root.is_dir():
            raise DataError(f"data root {root} is not a folder; set data.root to the folder that holds "
                            f"good/ and bad/ (or train/ and test/)")
        if (root / "good").is_dir() or (root / "bad").is_dir():
            parts = [(root, root / "masks", None)]
        else:
            parts = [(root / s, root / f"{s}_masks", s) for s in SPLITS if (root / s).is_dir()]
        if not parts:
            raise DataError(f"{root} has neither good/ and bad/ (with masks/) nor train/ and test/ "
                            f"(with good/ bad/ inside and train_masks/ test_masks/ beside); arrange it so")
        index = SampleIndex([], list(BINARY_CLASSES))
        for folder, mask_folder, split in parts:
            self._add(index, folder, mask_folder, split)
        if not index.samples:
            raise DataError(f"no images found in the good/ and bad/ folders under {root}; "
                            f"supported: png, bmp, jpg, jpeg, tif, tiff")
        return index

    def _add(self, index: SampleIndex, folder: Path, mask_folder: Path, split: str | None) -> None:
        masks = list_images(mask_folder, recursive=True)
        by_stem = {m.stem: m for m in masks}
        meta = {"split": split} if split else {}
        bad = list_images(folder / "bad")
        index.samples += [Sample(p, 0, meta=dict(meta)) for p in list_images(folder / "good")]
        for p in bad:
            mask = by_stem.get(p.stem)
            extra = {"mask_threshold": self.mask_threshold} if mask else {}
            index.samples.append(Sample(p, 1, mask=mask, meta={**meta, **extra}))
        stems = {p.stem for p in bad}
        index.orphans += [m for m in masks if m.stem not in stems]
