"""Data sources on mini data sets in every supported layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchlab.data.io import read_mask
from scratchlab.data.sources.folder import FolderSource
from scratchlab.data.sources.magnetic_tile import MT_CLASSES, MagneticTileSource
from scratchlab.data.sources.neu import NEU_CLASSES, NEUSource
from scratchlab.data.sources.via import VIASource, rasterize_regions
from scratchlab.data.splits import split_samples
from scratchlab.data.types import BINARY_CLASSES, Box
from scratchlab.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def _img(path: Path, h: int = 12, w: int = 16, value: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (h, w), dtype=np.uint8) if value is None else value).save(path)
    return path


def _by_name(index) -> dict:
    return {s.image.name: s for s in index.samples}


# --- folder -----------------------------------------------------------------------------------------

def test_folder_layout_a(tmp_path):
    for i in range(3):
        _img(tmp_path / "good" / f"g{i}.png")
    _img(tmp_path / "bad" / "b0.jpg")
    _img(tmp_path / "bad" / "b1.png")
    _img(tmp_path / "bad" / "b2.bmp")
    _img(tmp_path / "masks" / "b0.png")  # mask extension differs from the image's
    _img(tmp_path / "masks" / "b1.tif")
    _img(tmp_path / "masks" / "lost.png")  # matches no bad image
    index = FolderSource(tmp_path, mask_threshold=90).load()
    s = _by_name(index)
    assert index.class_names == BINARY_CLASSES and index.counts() == {"good": 3, "bad": 3}
    assert s["b0.jpg"].mask == tmp_path / "masks" / "b0.png" and s["b1.png"].mask.name == "b1.tif"
    assert s["b2.bmp"].mask is None and s["g0.png"].mask is None and s["b0.jpg"].label == 1
    assert s["b0.jpg"].meta["mask_threshold"] == 90 and "split" not in s["g0.png"].meta
    assert index.orphans == [tmp_path / "masks" / "lost.png"]


def test_folder_layout_b_predefined_split(tmp_path):
    for split, n in (("train", 10), ("test", 4)):
        for i in range(n):
            _img(tmp_path / split / "good" / f"{split}_g{i}.png")
        _img(tmp_path / split / "bad" / f"{split}_b0.png")
        _img(tmp_path / split / "bad" / f"{split}_b1.png")
    _img(tmp_path / "train_masks" / "train_b0.png")
    _img(tmp_path / "test_masks" / "bad" / "test_b1.png")  # class subfolder inside the mask folder
    index = FolderSource(tmp_path).load()
    s = _by_name(index)
    assert len(index.samples) == 18 and s["train_b0.png"].meta["split"] == "train"
    assert s["train_b0.png"].mask.name == "train_b0.png" and s["test_b1.png"].mask.parent.name == "bad"
    assert s["test_b0.png"].mask is None and s["test_g0.png"].meta["split"] == "test"
    splits = split_samples(index.samples, (0.6, 0.2, 0.2), seed=0)
    assert sorted(x.image.name for x in splits["test"]) == sorted(n for n in s if n.startswith("test_"))
    assert splits["val"] and all(x.meta["split"] == "train" for x in splits["val"] + splits["train"])


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        FolderSource(tmp_path / "missing").load()
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="good/ and bad/.*train/ and test/"):
        FolderSource(tmp_path).load()
    (tmp_path / "good").mkdir()
    with pytest.raises(DataError, match="no images"):
        FolderSource(tmp_path).load()


# --- NEU --------------------------------------------------------------------------------------------

def _voc(path: Path, filename: str, objects: list[tuple[str, int, int, int, int]]) -> None:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>x</folder><filename>{filename}</filename>{objs}</annotation>")


def _neu_det(root: Path) -> None:
    for cls in NEU_CLASSES:
        for i in (1, 2):
            _img(root / "IMAGES" / f"{cls}_{i}.jpg")
            _voc(root / "ANNOTATIONS" / f"{cls}_{i}.xml", f"{cls}_{i}.jpg", [(cls, 1, 1, 10, 8)])
    _img(root / "Validation_Images" / "scratches_3.jpg")
    _voc(root / "Validation_Annotations" / "scratches_3.xml", "scratches_3.jpg", [("scratches", 2, 3, 5, 9)])
    # quirks: a <filename> without extension, and a box naming another class than the file
    _voc(root / "ANNOTATIONS" / "patches_1.xml", "patches_1", [("patches", 4, 4, 6, 6)])
    _voc(root / "ANNOTATIONS" / "crazing_2.xml", "crazing_2.jpg", [("crazing", 1, 1, 3, 3), ("patches", 5, 5, 9, 9)])


def test_neu_det_multiclass_with_quirks(tmp_path):
    _neu_det(tmp_path)
    index = NEUSource(tmp_path, task="multiclass").load()
    s = _by_name(index)
    assert index.class_names == NEU_CLASSES and len(index.samples) == 13
    assert index.counts()["scratches"] == 3 and s["rolled-in_scale_1.jpg"].label == 4
    assert s["scratches_3.jpg"].boxes == (Box(1, 2, 5, 9, "scratches"),)  # 1-based inclusive -> 0-based
    assert s["patches_1.jpg"].boxes == (Box(3, 3, 6, 6, "patches"),)
    assert s["crazing_2.jpg"].label == 0 and [b.label for b in s["crazing_2.jpg"].boxes] == ["crazing", "patches"]
    assert all(x.boxes for x in index.samples)


def test_neu_scratch_vs_rest(tmp_path):
    _neu_det(tmp_path)
    index = NEUSource(tmp_path).load()
    assert index.class_names == ["rest", "scratch"] and index.counts() == {"rest": 10, "scratch": 3}
    assert all(x.label == (x.meta["defect"] == "scratches") for x in index.samples)


def test_neu_cls_class_folders_and_abbreviations(tmp_path):
    _img(tmp_path / "train" / "scratches" / "img_001.bmp")  # class from the folder
    _img(tmp_path / "train" / "crazing" / "crazing_5.bmp")
    _img(tmp_path / "flat" / "Sc_12.bmp")  # original NEU-CLS abbreviations
    _img(tmp_path / "flat" / "PS_3.bmp")
    _img(tmp_path / "flat" / "RS_7.bmp")
    s = _by_name(NEUSource(tmp_path, task="multiclass").load())
    assert [s[n].meta["defect"] for n in ("img_001.bmp", "crazing_5.bmp", "Sc_12.bmp", "PS_3.bmp", "RS_7.bmp")] \
        == ["scratches", "crazing", "scratches", "pitted_surface", "rolled-in_scale"]
    assert all(not x.boxes for x in s.values())


def test_neu_errors(tmp_path):
    with pytest.raises(ConfigError):
        NEUSource(tmp_path, task="binary")
    with pytest.raises(DataError, match="no NEU images"):
        NEUSource(tmp_path).load()
    _img(tmp_path / "IMAGES" / "rust_1.jpg")
    with pytest.raises(DataError, match="rust_1.jpg"):
        NEUSource(tmp_path).load()
    (tmp_path / "IMAGES" / "rust_1.jpg").rename(tmp_path / "IMAGES" / "inclusion_1.jpg")
    (tmp_path / "ANNOTATIONS").mkdir()
    (tmp_path / "ANNOTATIONS" / "inclusion_1.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match="inclusion_1.xml"):
        NEUSource(tmp_path).load()


# --- magnetic tile ----------------------------------------------------------------------------------

def _soft_mask(path: Path) -> Path:
    m = np.zeros((12, 16), np.uint8)
    m[2:6, 2:6] = 200
    m[8, 8] = 100  # soft edge below the default threshold
    return _img(path, value=m)


def test_magnetic_tile(tmp_path):
    for cls in MT_CLASSES:
        for i in range(2):
            _img(tmp_path / f"MT_{cls}" / "Imgs" / f"{cls}_{i}.jpg")
            _soft_mask(tmp_path / f"MT_{cls}" / "Imgs" / f"{cls}_{i}.png")
    (tmp_path / "MT_Crack" / "Imgs" / "Crack_1.jpg").unlink()  # its mask is now an orphan
    (tmp_path / "MT_Fray" / "Imgs" / "Fray_0.png").unlink()  # a bad image without mask
    binary = MagneticTileSource(tmp_path, mask_threshold=150).load()
    s = _by_name(binary)
    assert binary.class_names == BINARY_CLASSES and binary.counts() == {"good": 2, "bad": 9}
    assert s["Free_0.jpg"].mask is None and s["Fray_0.jpg"].mask is None
    assert s["Blowhole_0.jpg"].mask.name == "Blowhole_0.png" and s["Blowhole_0.jpg"].meta["mask_threshold"] == 150
    assert binary.orphans == [tmp_path / "MT_Crack" / "Imgs" / "Crack_1.png"]
    assert read_mask(s["Break_1.jpg"].mask, s["Break_1.jpg"].meta["mask_threshold"]).sum() == 16
    multi = MagneticTileSource(tmp_path, task="multiclass").load()
    assert multi.class_names == MT_CLASSES and multi.counts()["Crack"] == 1
    assert _by_name(multi)["Uneven_0.jpg"].label == MT_CLASSES.index("Uneven")
    cracks = MagneticTileSource(tmp_path, task="crack_vs_free").load()
    assert cracks.class_names == BINARY_CLASSES and cracks.counts() == {"good": 2, "bad": 1}
    assert {s.meta["defect"] for s in cracks.samples} == {"Free", "Crack"}


def test_magnetic_tile_errors(tmp_path):
    with pytest.raises(DataError, match="MT_"):
        MagneticTileSource(tmp_path).load()
    _img(tmp_path / "MT_Rust" / "Imgs" / "a.jpg")
    with pytest.raises(DataError, match="MT_Rust"):
        MagneticTileSource(tmp_path).load()
    with pytest.raises(ConfigError):
        MagneticTileSource(tmp_path, task="scratch")


# --- VIA --------------------------------------------------------------------------------------------

def _line(x1: int, y1: int, x2: int, y2: int) -> dict:
    return {"shape_attributes": {"name": "polyline", "all_points_x": [x1, x2], "all_points_y": [y1, y2]},
            "region_attributes": {}}


def test_rasterize_polyline_stroke_width():
    for width, drawn in ((1, 1), (2, 3), (3, 3), (5, 5), (9, 9)):
        (mask,) = rasterize_regions([_line(10, 30, 50, 30)], 60, 64, stroke_width=width)
        assert mask.dtype == np.uint8 and mask[30, 10:51].all()  # every pixel on the line
        assert mask[:, 30].sum() == drawn  # stroke as thick as asked (even widths round up)
        assert mask[0, 0] == 0 and mask[55, 60] == 0 and mask[30, 58] == 0


def test_rasterize_polygon_and_other_shapes():
    poly = {"shape_attributes": {"name": "polygon", "all_points_x": [10, 30, 30, 10],
                                 "all_points_y": [10, 10, 20, 20]}}
    shapes = {"r": {"shape_attributes": {"name": "rect", "x": 40, "y": 5, "width": 4, "height": 3}},
              "c": {"shape_attributes": {"name": "circle", "cx": 50, "cy": 40, "r": 3}},
              "e": {"shape_attributes": {"name": "ellipse", "cx": 20, "cy": 45, "rx": 6, "ry": 2, "theta": 0}}}
    masks = rasterize_regions([poly], 60, 64, stroke_width=3)
    assert masks[0][15, 20] == 1 and masks[0][10:21, 10:31].all() and masks[0].sum() == 21 * 11
    rect, circle, ellipse = rasterize_regions(shapes, 60, 64)  # VIA 1 keeps regions in a dict
    assert rect.sum() == 12 and rect[5:8, 40:44].all()
    assert circle[40, 50] == 1 and circle[40, 53] == 1 and circle[40, 55] == 0
    assert ellipse[45, 14:27].all() and ellipse[42, 20] == 0
    with pytest.raises(DataError, match="'spline'"):
        rasterize_regions([{"shape_attributes": {"name": "spline"}}], 10, 10)


def _via_images(root: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _img(root / name, 60, 64)


def test_via_project_export(tmp_path):
    _via_images(tmp_path)
    meta = {
        "a.png123": {"filename": "a.png", "size": 123, "regions": [_line(10, 30, 50, 30), _line(5, 5, 5, 25)],
                     "file_attributes": {}},
        "b.png99": {"filename": "b.png", "size": 99, "regions": [], "file_attributes": {}},
    }
    (tmp_path / "via_region_data.json").write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": meta}))
    index = VIASource(tmp_path, stroke_width=3).load()
    s = _by_name(index)
    assert index.class_names == BINARY_CLASSES and s["a.png"].label == 1 and s["b.png"].label == 0
    assert "c.png" not in s and s["b.png"].mask is None
    assert s["a.png"].mask == tmp_path / ".scratchlab_masks" / "a.png.png"
    mask = read_mask(s["a.png"].mask)
    assert mask.shape == (60, 64) and mask[30, 10:51].all() and mask[5:26, 5].all() and mask[50, 50] == 0
    assert mask[29:32, 30].all() and mask[[28, 32], 30].sum() == 0  # 3 px stroke
    assert len(s["a.png"].polygons) == 2
    for poly in s["a.png"].polygons:  # outlines hug their stroke
        xs, ys = zip(*poly)
        assert (min(ys) >= 28 and max(ys) <= 32) or (min(xs) >= 3 and max(xs) <= 7)


def test_via_plain_export_dict_regions_and_mask_dir(tmp_path):
    _via_images(tmp_path / "imgs")
    polygon = {"shape_attributes": {"name": "polygon", "all_points_x": [10, 30, 20], "all_points_y": [10, 10, 30]}}
    data = {"a.png1": {"filename": "a.png", "regions": {"0": polygon}},
            "c.png1": {"filename": "c.png", "regions": {}}}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    index = VIASource(tmp_path, annotations="ann.json", image_dir="imgs", mask_dir=tmp_path / "m").load()
    s = _by_name(index)
    assert s["a.png"].mask == tmp_path / "m" / "a.png.png" and s["c.png"].label == 0
    mask = read_mask(s["a.png"].mask)
    assert mask[15, 20] == 1 and mask[12, 12] == 1 and mask[28, 12] == 0
    assert len(s["a.png"].polygons) == 1


def test_via_errors(tmp_path):
    with pytest.raises(DataError, match="via_region_data.json"):
        VIASource(tmp_path).load()
    (tmp_path / "via_region_data.json").write_text(json.dumps({"x": {"filename": "gone.png", "regions": []}}))
    with pytest.raises(DataError, match="gone.png"):
        VIASource(tmp_path).load()
    (tmp_path / "via_region_data.json").write_text(json.dumps({"project": {}, "file": {}}))
    with pytest.raises(DataError, match="filename"):
        VIASource(tmp_path).load()


def test_via_region_outside_the_image_is_an_error(tmp_path):
    _via_images(tmp_path)
    away = {"shape_attributes": {"name": "polygon", "all_points_x": [100, 120, 110], "all_points_y": [5, 5, 20]}}
    (tmp_path / "via_region_data.json").write_text(json.dumps({"a": {"filename": "a.png", "regions": [away]}}))
    with pytest.raises(DataError, match="a.png: region 0 lies outside the 64x60 image"):
        VIASource(tmp_path).load()


def test_neu_samples_name_their_annotation_file(tmp_path):
    _neu_det(tmp_path)
    s = _by_name(NEUSource(tmp_path).load())
    assert s["crazing_2.jpg"].meta["annotation"] == str(tmp_path / "ANNOTATIONS" / "crazing_2.xml")
