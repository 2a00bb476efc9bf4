"""Writing outputs safely: inside the folder a user named, never through a symbolic link, atomically, and
never over an existing file unless ``overwrite=true``.

The folder a user names is taken as given (it may itself be a link); every path below it is checked:
no part of it may be a link, and it must stay inside the folder. Files are written to a hidden temporary
file in the same folder and then moved into place with ``os.replace``, so a failed write leaves the old
file (or nothing), never a half-written one.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from scratchlab.errors import ConfigError, DataError


def _file_mode() -> int:
    """The permissions a newly created file gets under this process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def output_folder(folder: str | Path) -> Path:
    """The folder a user named for outputs, resolved; an error when it is a file."""
    path = Path(str(folder)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output={folder} is a file; give a folder")
    return path.resolve()


def checked_target(folder: Path, name: str | Path) -> Path:
    """``folder / name`` once it is known to stay inside ``folder`` with no symbolic link on the way."""
    target = folder / name
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise ConfigError(f"{target} is outside the output folder {folder}; give another output folder")
    path = folder
    for part in Path(name).parts:
        path = path / part
        if path.is_symlink():
            raise ConfigError(f"{path} is a symbolic link; outputs are never written through links: "
                              "remove it or give another output folder")
    return target


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """An error naming the first path that exists, unless ``overwrite``."""
    if overwrite:
        return
    for path in paths:
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path} already exists; add overwrite=true to replace it")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` to write to; moved onto ``target`` when the block succeeds,
    removed when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(_file_mode())  # mkstemp makes it private; give it the mode any new file would have
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; returns ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def write_text(target: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically; returns ``target``."""
    return write_bytes(target, text.encode("utf-8"))


def write_png(target: Path, image: np.ndarray) -> Path:
    """Write a gray or BGR uint8 array (as ``cv2.imwrite`` takes it) as PNG, atomically; returns ``target``."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"could not encode {target.name} as PNG")
    return write_bytes(target, encoded.tobytes())
