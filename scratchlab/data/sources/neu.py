"""NEU surface defect database: NEU-CLS (a folder per class) and NEU-DET (images + Pascal VOC boxes)."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from scratchlab.data.io import IMAGE_EXTENSIONS, list_images
from scratchlab.data.types import Box, Sample, SampleIndex
from scratchlab.errors import ConfigError, DataError

NEU_CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
"""The six NEU classes, in the label order of the ``multiclass`` task."""
SCRATCH_CLASSES = ["rest", "scratch"]
"""Class names of the ``scratch_vs_rest`` task: label 1 = scratches, label 0 = the five other classes."""
_ABBREVIATIONS = {"cr": "crazing", "in": "inclusion", "pa": "patches", "ps": "pitted_surface",
                  "rs": "rolled-in_scale", "sc": "scratches"}
_ABBREVIATED = re.compile(r"^(cr|in|pa|ps|rs|sc)_\d")


def neu_class(name: str) -> str | None:
    """The NEU class a file or folder name starts with (full name or NEU-CLS abbreviation like ``Sc_``)."""
    low = name.lower()
    for cls in NEU_CLASSES:
        if low.startswith(cls):
            return cls
    match = _ABBREVIATED.match(low)
    return _ABBREVIATIONS[match.group(1)] if match else None


class NEUSource:
    """Every image under ``root`` (NEU-DET ``IMAGES/`` and ``Validation_Images/``, or NEU-CLS class
    folders), classed by its file name prefix, else by its folder. Boxes come from any Pascal VOC
    ``.xml`` under ``root``, matched on the ``<filename>`` stem (some lack the extension), else on
    the xml file's stem. Box labels are kept as annotated, even where they name another class than
    the file (a known NEU-DET quirk); the image label always follows the file name.
    """

    def __init__(self, root: str | Path, task: str = "scratch_vs_rest") -> None:
        if task not in ("scratch_vs_rest", "multiclass"):
            raise ConfigError(f"NEU task {task!r} is unknown; use scratch_vs_rest or multiclass")
        self.root = Path(root)
        self.task = task

    def load(self) -> SampleIndex:
        """Find the images, their classes and boxes."""
        images = list_images(self.root, recursive=True)
        if not images:
            raise DataError(f"no NEU images found under {self.root}; set data.root to the folder holding "
                            f"IMAGES/ (NEU-DET) or the class folders (NEU-CLS)")
        boxes = self._boxes()
        multiclass = self.task == "multiclass"
        samples = []
        for path in images:
            cls = self._class_of(path)
            label = NEU_CLASSES.index(cls) if multiclass else int(cls == "scratches")
            xml, found = boxes.get(path.stem, (None, ()))
            meta = {"defect": cls, **({"annotation": str(xml)} if xml else {})}
            samples.append(Sample(path, label, boxes=found, meta=meta))
        return SampleIndex(samples, list(NEU_CLASSES if multiclass else SCRATCH_CLASSES))

    def _class_of(self, path: Path) -> str:
        for name in (path.stem, *path.relative_to(self.root).parent.parts[::-1]):
            cls = neu_class(name)
            if cls:
                return cls
        raise DataError(f"cannot tell the NEU class of {path}: its name or folder must start with one of "
                        f"{NEU_CLASSES} (or Cr_, In_, Pa_, PS_, RS_, Sc_); rename or remove it")

    def _boxes(self) -> dict[str, tuple[Path, tuple[Box, ...]]]:
        """(xml file, boxes) per image stem: by ``<filename>`` tag first, then by the xml file's own stem."""
        by_tag: dict[str, tuple[Path, tuple[Box, ...]]] = {}
        by_file: dict[str, tuple[Path, tuple[Box, ...]]] = {}
        for xml in sorted(self.root.rglob("*.xml")):
            tag, boxes = _read_voc(xml)
            if tag:
                name = Path(tag)
                by_tag[name.stem if name.suffix.lower() in IMAGE_EXTENSIONS else name.name] = (xml, boxes)
            by_file[xml.stem] = (xml, boxes)
        return {**by_file, **by_tag}


def _read_voc(path: Path) -> tuple[str, tuple[Box, ...]]:
    """The ``<filename>`` of a Pascal VOC file and its boxes (1-based inclusive -> 0-based, end exclusive)."""
    try:
        root = ET.parse(path).getroot()
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (round(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append(Box(max(x1 - 1, 0), max(y1 - 1, 0), x2, y2, (obj.findtext("name") or "").strip()))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise DataError(f"annotation {path} is not valid Pascal VOC ({e}); fix or delete it") from None
    return (root.findtext("filename") or "").strip(), tuple(boxes)
