"""The built-in printed-code generator against the statistics of real photos, and the statistics themselves."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from scratchlab.data.statistics import (
    PRINTED_CODE_REFERENCE,
    SCRATCH_QUANTITIES,
    comparison_table,
    log_ratio,
    measure,
    percentiles,
    scratch_log_ratio,
)
from scratchlab.data.synth.params import TextParams
from scratchlab.data.synth.text import render_text

CONF = Path(__file__).resolve().parent.parent / "conf" / "generator"


@pytest.fixture(scope="module")
def generated() -> dict[str, tuple[float, ...]]:
    """Percentiles of 320 default renders, half of them bad."""
    results = [render_text(7000 + i, bad=i % 2 == 0) for i in range(320)]
    return percentiles(measure((r.image, r.mask) for r in results))


@pytest.mark.parametrize("quantity", sorted(PRINTED_CODE_REFERENCE))
def test_generator_matches_real_percentiles(generated: dict, quantity: str) -> None:
    """The median lies within the real set's p25-p75 and the quartiles within its p5-p95."""
    p5, p25, p50, p75, p95 = PRINTED_CODE_REFERENCE[quantity]
    g5, g25, g50, g75, g95 = generated[quantity]
    table = comparison_table(generated)
    assert p25 <= g50 <= p75, table
    assert p5 <= g25 and g75 <= p95, table


def test_scratches_match_the_real_ones_overall(generated: dict) -> None:
    """Over the five scratch quantities the mean log-ratio to the real percentiles stays under 0.175 (0.158
    now; the generator before fainter scraping scored 0.179 on these renders)."""
    assert scratch_log_ratio(generated) < 0.175, comparison_table(generated)


def test_easy_variant_is_bolder() -> None:
    """The easy variant draws bolder, fully scraped scratches than the realistic default."""
    easy = yaml.safe_load((CONF / "text_easy.yaml").read_text())["params"]["scratch"]
    assert easy["width"][0] > TextParams().scratch.width[0] and easy["strength"][0] >= TextParams().scratch.strength[1]


def test_measure_on_a_drawn_mask() -> None:
    """A 40x6 bar on a 100x200 image: coverage, one region, its width and length, the level inside."""
    image = np.full((100, 200), 255, np.uint8)
    cv2.rectangle(image, (20, 20), (180, 80), 40, -1)
    mask = np.zeros_like(image)
    mask[47:53, 50:90] = 255
    image[mask > 0] = 200
    values = measure([(image, mask), (image, None)])
    assert values["width"].tolist() == [200, 200] and values["height"].tolist() == [100, 100]
    assert values["mask_coverage"].tolist() == pytest.approx([240 / 20000])
    assert values["regions"].tolist() == [1]
    assert values["region_width"][0] == pytest.approx(6, abs=1) and values["region_length"][0] == pytest.approx(40, abs=7)
    assert values["masked_level"].tolist() == [200]
    assert values["ink_level"].tolist() == [40, 40] and values["paper_level"].tolist() == [255, 255]


def test_log_ratio_scores_how_far_percentiles_are_from_the_reference() -> None:
    """Equal percentiles score 0, each twice the reference log(2); the table prints both per row and overall."""
    assert log_ratio((1, 2, 4), (1, 2, 4)) == 0.0
    assert log_ratio((2, 4, 8), (1, 2, 4)) == pytest.approx(np.log(2))
    assert log_ratio((2, 2, 2), (4, 4, 1)) == pytest.approx(np.log(2))
    doubled = {k: tuple(2 * v for v in PRINTED_CODE_REFERENCE[k]) for k in SCRATCH_QUANTITIES}
    assert scratch_log_ratio(doubled) == pytest.approx(np.log(2))
    assert scratch_log_ratio({"width": PRINTED_CODE_REFERENCE["width"]}) is None  # good images only
    assert log_ratio((0, 30, 60, 90, 120), (0, 30, 60, 90, 120)) == 0.0  # black ink's p5 of 0 compares
    assert log_ratio((0.5, 1, 2), (1, 1, 2)) == 0.0  # below the floor (1) counts as equal
    table = comparison_table(doubled)
    rows = {row.split(" | ")[0]: row for row in table.splitlines()}
    assert rows["| mask_coverage"].endswith("| 0.693 |") and rows["| width"].endswith("| - |")
    assert table.splitlines()[-1].endswith(": 0.693")


def test_mask_is_taken_before_jpeg() -> None:
    """JPEG storage changes pixels everywhere, never the mask; without it the image is the lossless render."""
    raw = render_text(11, bad=True, params=dataclasses.replace(TextParams(), jpeg_prob=0.0))
    jpg = render_text(11, bad=True, params=dataclasses.replace(TextParams(), jpeg_prob=1.0, jpeg_quality=(50, 50)))
    assert np.array_equal(raw.mask, jpg.mask) and raw.mask.any()
    assert not np.array_equal(raw.image, jpg.image)
    assert np.abs(raw.image.astype(int) - jpg.image.astype(int)).mean() < 4


def test_hard_negatives_change_good_images_without_a_mask() -> None:
    """Dust, fibres, voids and label edges appear in good images, which stay unmasked."""
    quiet = dataclasses.replace(TextParams(), dust=(0, 0), fibres=(0, 0), voids=(0, 0), label_edge_prob=0.0,
                                jpeg_prob=0.0)
    busy = dataclasses.replace(quiet, dust=(6, 6), fibres=(2, 2), voids=(3, 3), label_edge_prob=1.0)
    changed = 0
    for seed in range(6):
        a, b = render_text(seed, bad=False, params=quiet), render_text(seed, bad=False, params=busy)
        assert not b.mask.any()
        changed += int(np.count_nonzero(np.abs(a.image.astype(int) - b.image.astype(int)) > 20))
    assert changed > 100


def test_fonts_are_drawn_and_a_missing_font_is_named() -> None:
    a = render_text(3, bad=False, params=dataclasses.replace(TextParams(), fonts=("DejaVuSans-Bold.ttf",)))
    b = render_text(3, bad=False, params=dataclasses.replace(TextParams(), fonts=("DejaVuSerif-Bold.ttf",)))
    assert a.image.shape == b.image.shape and not np.array_equal(a.image, b.image)
    from scratchlab.errors import ConfigError
    with pytest.raises(ConfigError, match="font 'NoSuchFont.ttf' not found"):
        render_text(3, bad=False, params=dataclasses.replace(TextParams(), fonts=("NoSuchFont.ttf",)))
