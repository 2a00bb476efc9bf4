"""The shared decision rule: components, speck removal, area rule, instances, classifier rule, torch batches."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scratchlab.data.types import Box
from scratchlab.errors import ConfigError, DataError
from scratchlab.postprocess import (
    DecisionParams,
    components_from_mask,
    decide_batch,
    decide_from_area,
    decide_from_instances,
    decide_from_probability,
    decide_from_score,
    image_scores_from_masks,
    verdict_from_probability,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "decision" / "default.yaml"


def two_scratches(height: int = 40, width: int = 60) -> np.ndarray:
    """A 3x20 horizontal bar (area 60) and a 45-degree line of 10 pixels (area 10)."""
    m = np.zeros((height, width), np.uint8)
    m[5:8, 10:30] = 1
    for i in range(10):
        m[20 + i, 40 + i] = 1
    return m


def test_components_boxes_areas_lengths():
    comps = components_from_mask(two_scratches())
    assert [c.box for c in comps] == [Box(10, 5, 30, 8), Box(40, 20, 50, 30)]
    assert [c.area for c in comps] == [60, 10]
    assert comps[0].length == pytest.approx(20)
    assert comps[1].length == pytest.approx(10 * math.sqrt(2), rel=1e-3)
    assert comps[0].area_ratio == pytest.approx(60 / (40 * 60))
    assert [c.score for c in comps] == [1.0, 1.0]
    xs, ys = zip(*comps[0].contour)
    assert (min(xs), max(xs), min(ys), max(ys)) == (10, 29, 5, 7)


def test_diagonal_pixels_are_one_component_with_8_connectivity():
    m = np.eye(6, dtype=np.uint8)
    assert len(components_from_mask(m)) == 1


def test_component_score_is_mean_probability():
    prob = np.zeros((10, 10), np.float32)
    prob[2, 2:6] = [0.6, 0.8, 1.0, 0.6]
    (c,) = components_from_mask(prob >= 0.5, prob)
    assert c.score == pytest.approx(0.75)


def test_speck_filtering_removes_small_components_from_mask_and_list():
    m = two_scratches()
    m[35, 2] = 1
    d = decide_from_probability(m.astype(np.float32), DecisionParams(min_component_area=11))
    assert [c.area for c in d.components] == [60]
    assert d.mask.dtype == np.uint8 and d.mask.sum() == 60 and d.mask[35, 2] == 0
    assert len(components_from_mask(m, min_component_area=10)) == 2


@pytest.mark.parametrize(("mode", "area"), [("sum", 70), ("max", 60)])
def test_area_mode_and_exact_threshold_counts_as_bad(mode, area):
    prob = two_scratches().astype(np.float32)
    at = decide_from_probability(prob, DecisionParams(min_area=area, area_mode=mode))
    above = decide_from_probability(prob, DecisionParams(min_area=area + 1, area_mode=mode))
    assert at.scratch_area == area and at.is_bad
    assert not above.is_bad


def test_area_ratio_replaces_pixels():
    prob = two_scratches().astype(np.float32)
    ratio = 70 / (40 * 60)
    at = decide_from_probability(prob, DecisionParams(min_area=10_000, min_area_ratio=ratio))
    assert at.is_bad and at.scratch_area_ratio == pytest.approx(ratio)
    assert not decide_from_probability(prob, DecisionParams(min_area=1, min_area_ratio=ratio + 1e-3)).is_bad


def test_empty_mask_is_never_bad_even_with_zero_min_area():
    d = decide_from_probability(np.zeros((8, 8), np.float32), DecisionParams(min_area=0))
    assert d.scratch_area == 0 and not d.is_bad and d.components == []
    assert decide_from_probability(np.pad(np.ones((1, 1)), 3), DecisionParams(min_area=0)).is_bad


def test_mask_threshold_is_inclusive():
    prob = np.full((4, 4), 0.3, np.float32)
    assert decide_from_probability(prob, DecisionParams(mask_threshold=0.3)).scratch_area == 16
    assert decide_from_probability(prob, DecisionParams(mask_threshold=0.31)).scratch_area == 0


@pytest.mark.parametrize("shape", [(37, 129), (1, 1), (129, 37), (3, 5)])
def test_odd_sizes_give_boxes_within_bounds(shape):
    rng = np.random.default_rng(0)
    prob = rng.random(shape).astype(np.float32)
    prob[-1, -1] = 1.0
    d = decide_from_probability(prob, DecisionParams())
    h, w = shape
    assert d.mask.shape == shape
    for c in d.components:
        assert 0 <= c.box.x1 < c.box.x2 <= w and 0 <= c.box.y1 < c.box.y2 <= h
        assert all(0 <= x < w and 0 <= y < h for x, y in c.contour)
    assert d.scratch_area == int((prob >= 0.5).sum())


def test_to_json_is_serialisable_and_complete():
    d = decide_from_probability(two_scratches().astype(np.float32), DecisionParams(min_area=65))
    out = json.loads(json.dumps(d.to_json()))
    assert out["is_bad"] is True and out["scratch_area"] == 70 and out["area_threshold"] == 65
    assert out["params"]["min_area"] == 65 and out["image_size"] == [40, 60]
    assert out["components"][0]["box"] == [10, 5, 30, 8] and out["components"][0]["length"] == pytest.approx(20)


def test_logits_are_rejected():
    with pytest.raises(DataError, match="sigmoid"):
        decide_from_probability(np.full((4, 4), 3.0), DecisionParams())
    with pytest.raises(DataError):
        decide_from_probability(np.zeros((2, 3, 4)), DecisionParams())


def test_instances_are_filtered_by_score_and_united():
    masks = np.zeros((3, 20, 30), np.float32)
    masks[0, 2:5, 2:12] = 0.9          # 30 px, kept
    masks[1, 4:8, 10:14] = 0.8         # 16 px, overlaps instance 0 in 2 px, kept
    masks[2, 15:18, 20:28] = 0.9       # low score, dropped
    masks[0, 10, 10] = 0.4             # below mask_threshold
    d = decide_from_instances(masks, np.array([0.9, 0.7, 0.3]), DecisionParams(min_area=44))
    assert d.scratch_area == 44 and d.is_bad and len(d.components) == 1
    assert d.components[0].box == Box(2, 2, 14, 8)
    assert d.mask[16, 22] == 0 and d.mask[10, 10] == 0
    torchvision_shaped = decide_from_instances(masks[:, None], np.array([0.9, 0.7, 0.3]), DecisionParams())
    assert torchvision_shaped.scratch_area == 44


def test_no_instances_is_good():
    d = decide_from_instances(np.zeros((0, 9, 7)), np.zeros(0), DecisionParams(min_area=0))
    assert not d.is_bad and d.mask.shape == (9, 7)


def test_classifier_rule():
    p = DecisionParams(threshold=0.7)
    assert decide_from_score(0.7, p) is True and decide_from_score(0.69, p) is False
    np.testing.assert_array_equal(decide_from_score(np.array([0.1, 0.7, 0.9]), p), [False, True, True])


@pytest.mark.parametrize("params", [
    DecisionParams(),
    DecisionParams(area_mode="max", min_area=40),
    DecisionParams(min_component_area=12, min_area_ratio=0.01),
    DecisionParams(mask_threshold=0.7, area_mode="max", min_component_area=3),
])
def test_torch_batch_agrees_with_numpy_path(params):
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(4, 1, 37, 129, generator=g) ** 6
    probs[1] = 0
    probs[2, 0, 5:9, 10:40] = 0.95
    decisions = decide_batch(probs, params)
    singles = [decide_from_probability(p[0].numpy(), params) for p in probs]
    assert [d.scratch_area for d in decisions] == [d.scratch_area for d in singles]
    assert [d.is_bad for d in decisions] == [d.is_bad for d in singles]
    scores = image_scores_from_masks(probs, params)
    assert scores.shape == (4,) and scores.dtype == torch.float32
    assert scores.tolist() == [float(d.scratch_area) for d in singles]
    assert decide_from_area(scores, params, 37, 129).tolist() == [d.is_bad for d in singles]
    assert image_scores_from_masks(probs[:, 0], params).tolist() == scores.tolist()


def test_batch_rejects_wrong_shape():
    with pytest.raises(DataError):
        decide_batch(torch.zeros(2, 3, 4, 4), DecisionParams())


@pytest.mark.parametrize("bad", [
    {"threshold": 1.5}, {"mask_threshold": -0.1}, {"min_component_area": -1}, {"min_component_area": 2.5},
    {"min_area": -3}, {"min_area_ratio": 2.0}, {"area_mode": "mean"}, {"threshold": "high"},
    {"threshold": float("nan")}, {"score_top_k": 0}, {"score_top_k": 2.5},
])
def test_impossible_params_raise_config_error(bad):
    with pytest.raises(ConfigError):
        DecisionParams(**bad)


def test_score_top_k_ranks_a_map_by_its_most_probable_pixels_not_by_one_hot_pixel():
    """One pixel at 0.99 on a faint map against a 4x4 patch at 0.8: the maximum ranks the hot pixel first, the
    mean of the 16 most probable pixels the patch; the score never changes the decision."""
    hot, patch = np.full((30, 40), 0.01, np.float32), np.full((30, 40), 0.01, np.float32)
    hot[3, 3] = 0.99
    patch[10:14, 10:14] = 0.8
    by_max = [verdict_from_probability(m, DecisionParams()) for m in (hot, patch)]
    by_top16 = [verdict_from_probability(m, DecisionParams(score_top_k=16)) for m in (hot, patch)]
    assert [v.score for v in by_max] == pytest.approx([0.99, 0.8]) and by_max[0].score_name == "max_probability"
    assert [v.score for v in by_top16] == pytest.approx([(0.99 + 15 * 0.01) / 16, 0.8])
    assert by_top16[1].score_name == "top16_mean_probability"
    assert [v.is_bad for v in by_top16] == [v.is_bad for v in by_max] == [True, True]
    tiny = verdict_from_probability(np.array([[0.2, 0.4]], np.float32), DecisionParams(score_top_k=16))
    assert tiny.score == pytest.approx(0.3)  # fewer pixels than k: all of them


def test_from_config_reads_yaml_and_ignores_unknown_keys():
    cfg = OmegaConf.load(CONF)
    assert "target_recall" in cfg
    assert DecisionParams.from_config(cfg) == DecisionParams()
    p = DecisionParams.from_config({"min_area_ratio": 0.02, "area_mode": "max", "target_recall": 0.95})
    assert p.min_area_ratio == 0.02 and p.area_mode == "max" and p.area_threshold(100, 50) == pytest.approx(100)
    with pytest.raises(ConfigError):
        DecisionParams.from_config([0.5])
