"""Albumentations pipelines: the one geometry every path shares, training augmentations at that geometry,
then normalization."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop, _BaseRandomSizedCrop
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate

from scratchlab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("stretch", "letterbox", "pad")


@dataclass(frozen=True)
class Preprocess:
    """How an RGB uint8 image becomes a network input; stored with every model so inference matches training.

    Resizing averages pixel areas (``INTER_AREA``) so thin scratches fade rather than alias away.
    ``stretch`` resizes to a square ``image_size`` (as the earlier work did); ``letterbox`` keeps the
    aspect ratio and pads with black to a square; ``pad`` pads the bottom/right edges to a multiple of
    ``pad_multiple`` (segmentation: predictions are cropped back), after scaling the longest side to
    ``image_size`` when that is set (``None``: native resolution).
    """

    image_size: int | None
    resize: str = "stretch"
    pad_multiple: int = 32
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"data.resize={self.resize!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.image_size is None and self.resize != "pad":
            raise ConfigError(f"data.resize={self.resize} needs a model.image_size; only resize=pad works without")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"model.image_size={self.image_size} is too small; use at least 8")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Preprocess":
        size = d.get("image_size")
        return cls(image_size=None if size is None else int(size), resize=d.get("resize", "stretch"),
                   pad_multiple=int(d.get("pad_multiple", 32)),
                   mean=tuple(d.get("mean", IMAGENET_MEAN)), std=tuple(d.get("std", IMAGENET_STD)))

    @classmethod
    def from_run_config(cls, cfg: Mapping) -> "Preprocess":
        """A run config's preprocessing: ``model.image_size`` and ``data.resize``."""
        size = cfg["model"].get("image_size")
        return cls(image_size=None if size is None else int(size), resize=cfg["data"]["resize"])

    def geometry(self) -> list[A.BasicTransform]:
        size = self.image_size
        if self.resize == "stretch":
            return [A.Resize(size, size, interpolation=cv2.INTER_AREA)]
        if self.resize == "pad":
            m = self.pad_multiple
            scale = [] if size is None else [A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_AREA)]
            return scale + [A.PadIfNeeded(min_height=None, min_width=None, pad_height_divisor=m, pad_width_divisor=m,
                                  position="top_left", border_mode=0, fill=0, fill_mask=0)]
        return [A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_AREA),
                A.PadIfNeeded(size, size, border_mode=0, fill=0, fill_mask=0)]

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) rounded up to ``pad_multiple``: the network input of content that size under ``pad``."""
        m = self.pad_multiple
        return -(-height // m) * m, -(-width // m) * m

    def pad_value(self) -> tuple[float, ...]:
        """What a black (0) pixel becomes after normalization, to the bit: the fill for padding normalized
        tensors, equal to the padding the geometry adds before normalizing."""
        black = np.zeros((1, 1, len(self.mean)), np.uint8)
        return tuple(float(v) for v in A.Normalize(mean=self.mean, std=self.std)(image=black)["image"][0, 0])

    def tail(self) -> list[A.BasicTransform]:
        return [A.Normalize(mean=self.mean, std=self.std), ToTensorV2()]


def build_augmentations(augment: Mapping | None, crops: bool = False, multiple: int = 32) -> list[A.BasicTransform]:
    """Instantiate the ``data.augment`` mapping (name -> albumentations ``_target_`` node), in order.

    They run on the network input (after resizing), so each must keep its size and all of its content:
    crops and resizes are refused (``crops``: crops are allowed, for models that learn from pixel masks, which
    a crop keeps exact, when their sides are multiples of ``multiple`` as network inputs must be), and whatever
    fills borders (rotations, shifts, padded crops) must fill with the black (0) that letterbox / pad borders
    have, masks with 0 (no scratch)."""
    out = []
    for name, node in (augment or {}).items():
        if node is None:
            continue
        try:
            transform = instantiate(node, _convert_="all")
        except Exception as err:  # noqa: BLE001 - turned into one clear line
            raise ConfigError(f"data.augment.{name} cannot be built ({err}); check its _target_ and arguments") from err
        _check_augmentation(name, transform, crops, multiple)
        out.append(transform)
    return out


_FRAMING = (BaseCrop, _BaseRandomSizedCrop, A.CropAndPad, A.Resize, A.LongestMaxSize, A.SmallestMaxSize,
            A.RandomScale, A.PadIfNeeded)


def _check_augmentation(name: str, transform: A.BasicTransform, crops: bool = False, multiple: int = 32) -> None:
    """Refuse augmentations that change the framing the evaluation sees, crops the network cannot take (whole
    images are padded to ``multiple``, crops are not), or fill borders with another value."""
    kind = type(transform).__name__
    for inner in getattr(transform, "transforms", None) or []:  # OneOf, SomeOf, Sequential: check what they hold
        _check_augmentation(name, inner, crops, multiple)
    if isinstance(transform, _FRAMING) and not (crops and isinstance(transform, (BaseCrop, A.PadIfNeeded))):
        raise ConfigError(f"data.augment.{name} ({kind}) changes the image's size or cuts off its edges, where "
                          f"scratches may lie; augmentations run after resizing to the network input: remove it, "
                          f"or use albumentations.Affine with scale <= 1 to vary the framing without losing content "
                          f"(segmenters may take crops, e.g. augment=crops)")
    sides = [getattr(transform, key, None) for key in ("height", "width")]
    if isinstance(transform, BaseCrop) and any(isinstance(v, int) and v % multiple for v in sides):
        fit = max(multiple, round(max(v for v in sides if isinstance(v, int)) / multiple) * multiple)
        raise ConfigError(f"data.augment.{name} ({kind}): training crops of {sides[0]}x{sides[1]} px do not fit the "
                          f"network, whose input sides must be multiples of {multiple}; set data.crop_size={fit} "
                          f"(or another multiple of {multiple})")
    if getattr(transform, "border_mode", cv2.BORDER_CONSTANT) != cv2.BORDER_CONSTANT:
        raise ConfigError(f"data.augment.{name} ({kind}) fills borders with border_mode={transform.border_mode}; "
                          f"use border_mode=0 (constant) so new borders are the black of the padding")
    for attr in ("fill", "fill_mask"):
        value = getattr(transform, attr, 0)
        if any(v != 0 for v in np.atleast_1d(value)):
            raise ConfigError(f"data.augment.{name} ({kind}) fills borders with {attr}={value}; use {attr}=0, "
                              f"the black of the padding (masks: no scratch)")


def holds_crop(transform: A.BasicTransform | A.BaseCompose) -> bool:
    """Whether ``transform`` (or anything it holds) crops: its outputs are then crops, all of them content."""
    if isinstance(transform, (BaseCrop, _BaseRandomSizedCrop)):
        return True
    return any(holds_crop(inner) for inner in getattr(transform, "transforms", None) or [])


def build_transform(pre: Preprocess, augment: Mapping | None = None, train: bool = False,
                    seed: int | None = None, geometry: bool = True, crops: bool = False) -> A.Compose:
    """Geometry (resize / letterbox / pad) first, then the training augmentations at the network's input
    size, then normalization: training and evaluation frame every image the same way, and masks follow
    every step. Evaluation and prediction (``train=False``) get geometry and normalization only;
    ``geometry=False`` leaves the geometry out, for images kept in memory already resized; ``crops`` allows crop
    augmentations (models that learn from pixel masks)."""
    steps = (pre.geometry() if geometry else []) + (build_augmentations(augment, crops, pre.pad_multiple)
                                                      if train else []) + pre.tail()
    return A.Compose(steps, seed=seed)


@lru_cache(maxsize=256)
def content_box(pre: Preprocess, height: int, width: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: where an (height, width) image lands in the network input of ``pre``,
    found by running the geometry itself on a blank image (so it always matches the transform)."""
    blank = np.full((height, width), 255, np.uint8)
    placed = A.Compose(pre.geometry())(image=blank)["image"]
    rows, cols = np.flatnonzero(placed.max(axis=1)), np.flatnonzero(placed.max(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def restore_geometry(prob: np.ndarray, pre: Preprocess, height: int, width: int) -> np.ndarray:
    """A map at network geometry back at the original (height, width): the image's part is cropped out
    (pad / letterbox borders dropped) and resized bilinearly where the network saw a scaled image."""
    y0, y1, x0, x1 = content_box(pre, height, width)
    crop = np.asarray(prob, dtype=np.float32)[y0:y1, x0:x1]
    if crop.shape != (height, width):
        crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop)
