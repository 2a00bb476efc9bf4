"""Reading images and masks of any common encoding into plain uint8 arrays, and pixel digests."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from scratchlab.errors import DataError

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".gif")
"""File suffixes (lower case) treated as images or masks."""

_CONVERT = {"1": "L", "P": "RGB", "PA": "RGB", "La": "LA", "RGBa": "RGBA", "CMYK": "RGB", "YCbCr": "RGB",
            "LAB": "RGB", "HSV": "RGB"}
"""Pillow modes without a direct array form, and the mode they are read as."""


def _reason(err: Exception, path: str | Path) -> str:
    """A decoder's message without the file name (the caller names the file once)."""
    return str(err).replace(repr(str(path)), "").replace(str(path), "").strip() or type(err).__name__


def _decode(path: str | Path, keep_palette: bool) -> np.ndarray:
    """Pixels as stored: (H, W) or (H, W, C) in RGB(A) order with the stored dtype; palette images as
    RGB colours, or as their indices with ``keep_palette``. Missing, truncated or unreadable files
    raise DataError."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _CONVERT and not (im.mode == "P" and keep_palette):
                im = im.convert(_CONVERT[im.mode])
            return np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; fix the path or remove it from the data set") from None
    except Exception as e:  # any decoder failure means the file itself is broken
        raise DataError(f"{path} cannot be decoded ({_reason(e, path)}); re-export or delete the file") from None


class ImageHeader(NamedTuple):
    """What a file's header says: size, Pillow mode and number of frames (animations, multi-page TIFF)."""

    width: int
    height: int
    mode: str
    frames: int


def image_header(path: str | Path) -> ImageHeader:
    """The header of an image file, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return ImageHeader(im.width, im.height, im.mode, int(getattr(im, "n_frames", 1)))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; fix the path or remove it from the data set") from None
    except Exception as e:
        raise DataError(f"{path} is no readable image ({_reason(e, path)}); re-export or delete the file") from None


def image_info(path: str | Path) -> tuple[int, int, str]:
    """``(width, height, Pillow mode)`` from the file header, without decoding the pixels."""
    return image_header(path)[:3]


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale wider integer types by their 16-bit range (>> 8) and floats from [0, 1] (or clip) to uint8.

    The rule depends on the dtype only, never on the pixels, so every image of a set is scaled alike;
    10- to 12-bit camera data stored unscaled in 16 bits therefore reads nearly black (``low_bits_max``).
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind in "ui":
        return (np.clip(arr, 0, 65535).astype(np.uint16) >> 8).astype(np.uint8)
    scale = 255.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 1.0
    return np.clip(np.nan_to_num(arr) * scale, 0, 255).round().astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array (gray replicated, alpha dropped, 16-bit >> 8 whatever
    range the pixels use: scale 10- to 12-bit data to the full 16-bit range before saving)."""
    arr = _to_uint8(_decode(path, keep_palette=False))
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return np.ascontiguousarray(arr[:, :, :3])
    gray = arr if arr.ndim == 2 else arr[:, :, 0]  # gray, or gray + alpha
    return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2RGB)


LOW_BITS = 12
"""A file of wider-than-8-bit integers whose values all stay below ``2 ** LOW_BITS`` holds unscaled camera data
(10 to 12 bits in a 16-bit file): read by the 16-bit range, it comes out as 0-15 of 255, nearly black."""


def _wide_integers(im: Image.Image) -> bool:
    """Whether a file (opened, not loaded) stores integer samples wider than 8 bits: 16-bit gray or colour
    PNG and TIFF, 32-bit integer TIFF. Pillow reads 16-bit colour as its high bytes, so ``mode`` alone is
    not enough: the raw mode of the file's tiles says how the samples are stored."""
    rawmodes = [t.args if isinstance(t.args, str) else t.args[0] for t in im.tile if t.args]
    return im.mode.startswith("I") or (im.mode != "F" and any(";16" in str(r) for r in rawmodes))


def low_bits_max(path: str | Path) -> int | None:
    """For a file of wider-than-8-bit integers that uses only its low ``LOW_BITS`` bits: the largest value
    ``read_image`` gives it (0-15); else None. Decodes only such files (the header tells)."""
    try:
        with Image.open(path) as im:
            wide = _wide_integers(im)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; fix the path or remove it from the data set") from None
    except Exception as e:
        raise DataError(f"{path} is no readable image ({_reason(e, path)}); re-export or delete the file") from None
    if not wide:
        return None
    top = int(read_image(path).max())
    return top if top < (2 ** LOW_BITS) >> 8 else None


def low_bits_advice(top: int) -> str:
    """What a 16-bit image with ``low_bits_max`` ``top`` is, and how to fix it (one sentence's end)."""
    return (f"a 16-bit image whose values all stay below {2 ** LOW_BITS} (unscaled camera data of {LOW_BITS} bits "
            f"or fewer?): read by the 16-bit range it is 0-{top} of 255, nearly black; scale it to the full 16-bit "
            f"range (12-bit values x 16) or convert it to 8 bits")


def read_mask(path: str | Path, threshold: int = 128) -> np.ndarray:
    """A mask file as an (H, W) uint8 array of 0 (background) and 1 (defect).

    Colour masks are reduced to the maximum over their colour channels (alpha ignored); palette
    masks use their indices. If every value is 0 or 1 (label maps, palette 0/1) any non-zero value is
    defect; otherwise the mask is brought to 8 bits (16-bit >> 8) and defect = value >= ``threshold``.
    """
    arr = _decode(path, keep_palette=True)
    if arr.ndim == 3:
        arr = arr[:, :, :1] if arr.shape[2] <= 2 else arr[:, :, :3]
        arr = arr.max(axis=2)
    if arr.dtype.kind in "biu" and arr.max() <= 1:
        return (arr > 0).astype(np.uint8)
    return (_to_uint8(arr) >= threshold).astype(np.uint8)


def pixel_digest(image: np.ndarray) -> str:
    """Hex digest of an array's shape and pixels."""
    h = hashlib.blake2b(str(image.shape).encode(), digest_size=16)
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


@lru_cache(maxsize=None)
def _cached_digest(path: str, mtime_ns: int, size: int) -> str:
    return pixel_digest(read_image(path))


def file_digest(path: str | Path) -> str:
    """Digest of an image's decoded RGB pixels: equal for identical pixels under any name or lossless
    encoding. Cached in memory by path, modification time and size, so each file is decoded once."""
    try:
        st = os.stat(path)
    except OSError:
        raise DataError(f"{path} does not exist; fix the path or remove it from the data set") from None
    return _cached_digest(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


_DECODE_POOLS: dict[int, ThreadPoolExecutor] = {}


def decode_pool() -> ThreadPoolExecutor:
    """This process's threads for decoding images (one per CPU core), started once and kept for its life.

    A thread that has used OpenCV takes OpenCV's global lock once more as it ends (its thread-local data is
    released); a data loader worker forked at that instant inherits the lock held and hangs at its first
    OpenCV call. That was seen: a test loader's worker stuck for good in ``cv2.LUT``, on a lock whose owner,
    gone by then, was the short-lived thread that had just decoded the split into the memory cache. Threads
    that never end cannot hold it when a worker is forked. A forked child makes its own pool (the parent's
    threads do not exist there)."""
    pid = os.getpid()
    if pid not in _DECODE_POOLS:
        _DECODE_POOLS[pid] = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="decode")
    return _DECODE_POOLS[pid]


def file_digests(paths: Sequence[str | Path]) -> list[str]:
    """``file_digest`` of many files, decoded on all CPU cores (``decode_pool``)."""
    return list(decode_pool().map(file_digest, paths))


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (none if it does not exist), skipping hidden files and folders."""
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))
