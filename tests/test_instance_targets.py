"""Mask R-CNN targets: instances from masks and polygons, torchvision format, empty and thin cases."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from scratchlab.models.instance_targets import build_target, instances_from_mask, instances_from_polygons


def test_instances_from_mask_splits_components_and_drops_small():
    m = np.zeros((37, 129), np.uint8)
    m[2:5, 3:20] = 1
    m[30, 100:110] = 1
    m[20, 60] = 1
    inst = instances_from_mask(m, min_area=2)
    assert inst.shape == (2, 37, 129) and inst.dtype == np.uint8
    assert sorted(int(i.sum()) for i in inst) == [10, 51]
    assert instances_from_mask(np.zeros((4, 6)), min_area=1).shape == (0, 4, 6)


def test_instances_from_polygons_fill_and_stroke():
    filled = instances_from_polygons([[(2, 2), (11, 2), (11, 6), (2, 6)]], 20, 30, stroke_width=0)
    assert filled.shape == (1, 20, 30) and int(filled.sum()) == 10 * 5
    line = instances_from_polygons([[(5, 10), (25, 10)]], 20, 30, stroke_width=3)
    rows = np.flatnonzero(line[0].any(axis=1))
    assert line.shape == (1, 20, 30) and list(rows) == [9, 10, 11]
    outside = instances_from_polygons([[(100, 100), (120, 100)], [(1, 1), (3, 3)]], 20, 30)
    assert outside.shape[0] == 1
    assert instances_from_polygons([], 20, 30).shape == (0, 20, 30)


def test_build_target_format_and_boxes():
    inst = np.zeros((2, 37, 129), np.uint8)
    inst[0, 2:5, 3:20] = 1
    inst[1, 30:36, 128] = 1          # one pixel wide, on the right border
    t = build_target(inst)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.uint8
    assert t["boxes"].tolist() == [[3, 2, 20, 5], [128, 30, 129, 36]]
    assert t["labels"].tolist() == [1, 1] and t["masks"].shape == (2, 37, 129)
    w = t["boxes"][:, 2] - t["boxes"][:, 0]
    h = t["boxes"][:, 3] - t["boxes"][:, 1]
    assert (w >= 1).all() and (h >= 1).all()


def test_single_pixel_instance_gets_a_one_pixel_box():
    inst = np.zeros((1, 5, 5), np.uint8)
    inst[0, 4, 4] = 1
    assert build_target(inst)["boxes"].tolist() == [[4, 4, 5, 5]]


def test_empty_target_shapes_and_empty_masks_dropped():
    t = build_target(np.zeros((0, 7, 9), np.uint8))
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 7, 9)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert build_target(np.zeros((2, 7, 9), np.uint8))["boxes"].shape == (0, 4)


def test_torchvision_mask_rcnn_accepts_targets():
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, min_size=64, max_size=96)
    model.train()
    thin = np.zeros((37, 61), np.uint8)
    thin[5:30, 20] = 1
    thin[2, 40:55] = 1
    targets = [build_target(instances_from_mask(thin)), build_target(np.zeros((0, 37, 61), np.uint8))]
    losses = model([torch.rand(3, 37, 61), torch.rand(3, 37, 61)], targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_loader_workers_build_the_targets_the_step_would(tmp_path, tiny_dataset):
    """model=maskrcnn batches carry their targets, built in the workers, equal to building them in the step."""
    from scratchlab.builders import build_datamodule, build_task
    from scratchlab.config import compose
    from tests.conftest import tiny_overrides

    overrides = [o for o in tiny_overrides(tmp_path, tiny_dataset) if not o.startswith("model")]
    cfg = compose("train", overrides + ["model=maskrcnn", "model.min_size=64", "model.max_size=96",
                                        "data.num_workers=1", "data.batch_size=4"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["instances"]) == 4 and any(len(t["boxes"]) for t in batch["instances"])
    task = build_task(cfg, dm.class_names)
    _, in_step = task._inputs({k: v for k, v in batch.items() if k != "instances"})
    _, from_workers = task._inputs(batch)
    for a, b in zip(in_step, from_workers):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
