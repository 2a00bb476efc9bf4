"""Overlays keep the image size and colour what they should; grids letterbox; PNGs round-trip."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from scratchlab.data.types import Box
from scratchlab.errors import DataError
from scratchlab.postprocess import components_from_mask
from scratchlab.visualize import GT_COLOR, draw_overlay, make_grid, save_png


def test_overlay_tints_predicted_pixels_red_and_leaves_others():
    image = np.full((37, 129, 3), 100, np.uint8)
    pred = np.zeros((37, 129), np.uint8)
    pred[10:20, 30:60] = 1
    out = draw_overlay(image, pred_mask=pred, alpha=0.5)
    assert out.shape == (37, 129, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[15, 45], [178, 50, 50])
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    assert image[15, 45, 0] == 100  # input untouched


def test_overlay_accepts_gray_and_outlines_ground_truth_green():
    image = np.zeros((41, 53), np.uint8)
    gt = np.zeros((41, 53), np.uint8)
    gt[10:30, 10:30] = 1
    out = draw_overlay(image, gt_mask=gt, label="bad 0.93")
    assert out.shape == (41, 53, 3)
    assert tuple(out[20, 10]) == GT_COLOR and tuple(out[20, 20]) == (0, 0, 0)


def test_overlay_draws_boxes_with_area_text():
    image = np.zeros((100, 160, 3), np.uint8)
    mask = np.zeros((100, 160), np.uint8)
    mask[50:60, 40:100] = 1
    comps = components_from_mask(mask)
    out = draw_overlay(image, boxes=comps, gt_boxes=[Box(5, 5, 20, 20)])
    assert tuple(out[55, 40]) != (0, 0, 0) and tuple(out[55, 99]) != (0, 0, 0)   # box sides
    assert out[35:49, 40:100].any()                                             # area text above the box
    assert tuple(out[10, 5]) == GT_COLOR
    plain = draw_overlay(image, boxes=[(40, 50, 100, 60)])
    assert tuple(plain[55, 40]) == tuple(out[55, 40])


def test_overlay_rejects_mismatched_mask():
    with pytest.raises(DataError):
        draw_overlay(np.zeros((10, 10), np.uint8), pred_mask=np.zeros((9, 10)))


def test_grid_letterboxes_without_distortion():
    wide = np.full((50, 200, 3), 255, np.uint8)
    tall = np.full((90, 30), 255, np.uint8)
    grid = make_grid([wide, tall, wide], ncols=2, tile=64)
    assert grid.shape == (128, 128, 3)
    rows = np.flatnonzero(grid[:64, :64, 0].any(axis=1))
    assert len(rows) == 16 and rows[0] == 24               # 50x200 -> 16x64, centred
    cols = np.flatnonzero(grid[:64, 64:, 0].any(axis=0))
    assert len(cols) == 21 and cols[0] == 21               # 90x30 -> 64x21, centred
    assert not grid[64:, 64:].any()                        # empty last cell


def test_grid_titles_are_drawn():
    images = [np.full((64, 64, 3), 128, np.uint8)] * 2
    plain = make_grid(images, ncols=2, tile=64)
    titled = make_grid(images, ncols=2, tile=64, titles=["a", "b"])
    assert not np.array_equal(plain[:16], titled[:16]) and np.array_equal(plain[40:], titled[40:])


def test_save_png_round_trips_rgb(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 200
    path = save_png(tmp_path / "sub" / "x.png", rgb)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, rgb)
    with pytest.raises(DataError):
        save_png(tmp_path / "x.jpg", rgb)
