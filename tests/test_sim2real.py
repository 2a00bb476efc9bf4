"""benchmarks/sim2real.py's good_only regime trains on the real set's own good images and synthetic bad copies
of them: never on a real bad image nor on any image of the real test split; such a model (and a zero-shot one) is
also scored on every real bad image against the test split's good ones. With ``--seeds`` the zero-shot model is
trained once per seed, and each and their ensemble are scored."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from scratchlab.builders import build_datamodule
from scratchlab.checkpoints import read_checkpoint
from scratchlab.config import compose
from tests.conftest import PROJECT_DIR


def _sim2real():
    spec = importlib.util.spec_from_file_location("sim2real", PROJECT_DIR / "benchmarks" / "sim2real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tile_set(root: Path, free: int, cracks: int) -> None:
    """A magnetic-tile layout of streaked gray tiles: MT_Free and MT_Crack, each image with its mask beside it."""
    rng = np.random.default_rng(0)
    for cls, count in (("Free", free), ("Crack", cracks)):
        (root / f"MT_{cls}" / "Imgs").mkdir(parents=True)
        for i in range(count):
            tile = np.tile(rng.normal(110, 15, (1, 72)), (64, 1)) + rng.normal(0, 3, (64, 72))
            mask = np.zeros((64, 72), np.uint8)
            if cls == "Crack":
                cv2.line(mask, (30 + i, 5), (34 + i, 50), 255, 2)
                tile[mask > 0] -= 50
            cv2.imwrite(str(root / f"MT_{cls}" / "Imgs" / f"{cls}_{i}.jpg"), tile.clip(0, 255).astype(np.uint8))
            cv2.imwrite(str(root / f"MT_{cls}" / "Imgs" / f"{cls}_{i}.png"), mask)


def test_good_only_sees_no_real_bad_image_and_no_test_image(tmp_path: Path) -> None:
    module = _sim2real()
    data = tmp_path / "mt"
    _tile_set(data, free=40, cracks=8)
    work = tmp_path / "work"
    work.mkdir()
    real = [*module.REAL_SETS["magnetic_tile"], f"data.root={data}"]
    splits = module._real_splits(work, real)
    expanded = module._good_only_set(work, "magnetic_tile", splits, 0.5)
    every_bad = module._every_bad_split(work, "magnetic_tile", real, splits)
    assert every_bad[:-1] == real
    unseen = Path(every_bad[-1].removeprefix("data.split.file=").strip("'"))

    sources = {p.resolve() for p in (work / "magnetic_tile-good").iterdir()}  # the real images behind good/
    split = pd.read_csv(unseen)
    by_split = {name: {Path(p).resolve() for p in group["path"]} for name, group in split.groupby("split")}
    cracks = {p.resolve() for p in (data / "MT_Crack" / "Imgs").glob("*.jpg")}
    test_free = by_split["test"] - cracks
    assert len(list((expanded / "good").iterdir())) == len(sources) == len(by_split["train"] | by_split["val"])
    assert not sources & cracks and not sources & test_free  # no real crack, no test image behind any good one
    assert len(list((expanded / "bad").iterdir())) == len(sources)  # bad_fraction 0.5: as many synthetic bad
    assert by_split["test"] >= cracks and test_free  # every real crack is scored, with the test split's Free tiles
    assert not (by_split["train"] | by_split["val"]) & cracks

    def test_split(*extra: str) -> list:
        datamodule = build_datamodule(compose("train", [f"paths.root_dir={work}", *real, *extra]))
        datamodule.setup()
        return datamodule.splits["test"]

    scored = test_split(every_bad[-1])  # what the regime's second evaluation reads
    assert {Path(s.image).resolve() for s in scored} == by_split["test"]
    assert {Path(s.image).resolve() for s in test_split() if s.label == 0} == test_free  # the real test split's goods
    module._good_only_set(work, "magnetic_tile", splits, 0.5)  # a kept --workdir runs again


def test_seeds_train_a_zero_shot_model_each_and_score_their_ensemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    module = _sim2real()
    data = tmp_path / "mt"
    _tile_set(data, free=40, cracks=8)
    work = tmp_path / "work"
    monkeypatch.setattr(sys, "argv", ["sim2real.py", "model=unet", "model.image_size=32", "data.num_workers=0",
                                      "data.batch_size=8", "--magnetic-tile", str(data), "--synthetic", "tile_crack",
                                      "--synthetic-count", "24", "--epochs", "1", "--only", "zero_shot",
                                      "--seeds", "3", "4", "3", "--workdir", str(work)])  # 3 twice: once
    module.main()
    summary = capsys.readouterr().out.splitlines()[-1]
    regimes = re.findall(r"magnetic_tile_(\w+?)_auroc=(\d\.\d+)", summary)
    assert [r for r, _ in regimes] == [f"zero_shot_{m}{s}" for m in ("seed3", "seed4", "ensemble")
                                       for s in ("", "_all_bad")]
    seeded = [read_checkpoint(p) for p in sorted((work / "logs").glob("synthetic-[0-9]*/checkpoints/best.ckpt"))]
    ensemble = read_checkpoint(next((work / "logs").glob("synthetic-ensemble-*/checkpoints/best.ckpt")))
    assert [c.config["seed"] for c in seeded] == [3, 4]
    first, second = (c.state_dict for c in seeded)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # the seed reached the training
    assert ensemble.spec.preprocess == seeded[0].spec.preprocess  # the members' own image size and resizing
    assert ensemble.config["data"]["num_workers"] == 0  # the shared overrides reach the ensemble's run too
    members = list(ensemble.components.values())
    assert len(members) == 2 and all(torch.equal(m.state_dict[k], c.state_dict[k])
                                     for m, c in zip(members, seeded) for k in c.state_dict)
