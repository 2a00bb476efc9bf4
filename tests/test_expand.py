"""Data-set expansion: the synth CLI, copy-paste of real scratches, and data.synthetic_fraction."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from scratchlab.data.datamodule import ScratchDataModule
from scratchlab.data.io import read_image, read_mask
from scratchlab.data.sources.folder import FolderSource
from scratchlab.data.synth.engine import change_mask
from scratchlab.data.synth.expand import expand_folder
from scratchlab.data.synth.params import text_strokes
from scratchlab.data.transforms import Preprocess
from scratchlab.data.types import Sample, SampleIndex
from scratchlab.errors import ConfigError, DataError
from tests.conftest import run_cli, tiny_overrides, write_tiny_folder_dataset

SIZES = [(37, 53), (61, 45), (48, 90), (71, 66), (40, 41), (55, 77), (66, 50), (45, 99), (52, 60), (80, 47)]


def write_goods(folder: Path, broken: bool = True) -> Path:
    """Printed-looking good images of odd sizes: gray PNG, RGB PNG (tinted paper), BMP and JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate(SIZES):
        img = np.full((h, w), int(rng.integers(215, 245)), np.uint8)
        for k in range(3):
            x = 4 + k * (w // 3)
            cv2.rectangle(img, (x, 6), (x + max(5, w // 7), h - 7), int(rng.integers(20, 70)), -1)
        img = (img + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)
        if i % 4 == 0:
            cv2.imwrite(str(folder / f"gray{i}.png"), img)
        elif i % 4 == 1:
            rgb = np.stack([img, (img * 0.97).astype(np.uint8), (img * 0.9).astype(np.uint8)], axis=2)
            cv2.imwrite(str(folder / f"rgb{i}.png"), rgb[:, :, ::-1])
        elif i % 4 == 2:
            cv2.imwrite(str(folder / f"bmp{i}.bmp"), img)
        else:
            cv2.imwrite(str(folder / f"jpg{i}.jpg"), img)
    if broken:
        (folder / "broken.png").write_bytes(b"not an image")
    return folder


def _records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """``python -m scratchlab.synth`` run once on odd-sized gray/RGB/BMP/JPEG images and one broken file."""
    tmp = tmp_path_factory.mktemp("synth")
    goods = write_goods(tmp / "in")
    result = run_cli("scratchlab.synth", [f"input={goods}", f"output={tmp / 'out'}", "n=8", "seed=5",
                                          f"paths.root_dir={tmp}"], cwd=tmp)
    return goods, tmp / "out", result


def test_synth_cli_writes_a_trainable_folder_dataset(synth_out, tmp_path: Path) -> None:
    goods, out, result = synth_out
    assert result.returncode == 1, result.stderr[-2000:]  # the broken file was skipped
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert "10 good + 8 bad" in result.stdout
    index = FolderSource(out).load()
    assert index.counts() == {"good": 10, "bad": 8} and not index.orphans
    for s in index.samples:
        if s.label == 0:
            assert s.mask is None and s.image.read_bytes() == (goods / s.image.name).read_bytes()
        else:
            assert s.mask is not None and read_mask(s.mask).any()
    records = _records(out)
    assert len(records) == 8 and {r["mode"] for r in records} == {"synthetic"}
    for rec in records:
        good, bad = read_image(out / rec["good"]), read_image(out / rec["image"])
        mask = cv2.imread(str(out / rec["mask"]), cv2.IMREAD_UNCHANGED)
        assert bad.shape == good.shape and mask.shape == good.shape[:2] and set(np.unique(mask)) <= {0, 255}
        changed = (bad != good).any(axis=2)
        assert changed.any() and not (changed & (mask == 0)).any(), "a pixel changed outside the mask"
        # the mask is the engine's for printed codes: changed pixels (> change_tol levels) and each stroke's path
        # between them, dilated; every region of it holds changed pixels
        sp = text_strokes()
        assert sp.mask_span and any(
            not ((change_mask(good, bad, sp.change_tol, d, sp.mask_close) > 0) & (mask == 0)).any()
            for d in range(sp.mask_dilate[0], sp.mask_dilate[1] + 1))
        n, labels = cv2.connectedComponents((mask > 0).astype(np.uint8))
        assert set(np.unique(labels[changed])) == set(range(1, n))
        assert len(rec["boxes"]) == len(rec["polygons"]) >= 1
    # deterministic by seed: the same arguments give the same bytes, another seed other images
    again = expand_folder(goods, tmp_path / "again", 8, seed=5, progress=False)
    assert [p for p, _ in again.skipped] == [str(goods / "broken.png")]
    assert _files(tmp_path / "again") == _files(out)
    expand_folder(goods, tmp_path / "other", 8, seed=6, progress=False)
    assert _records(tmp_path / "other") != records


def test_synth_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("scratchlab.synth", [f"input={tmp_path / 'empty'}", f"output={tmp_path / 'o'}", "n=3",
                                          f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "no images" in errors[0], result.stderr[-1000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()
    goods = write_goods(tmp_path / "in", broken=False)
    with pytest.raises(ConfigError, match="not a folder"):
        expand_folder(tmp_path / "missing", tmp_path / "o", 3)
    with pytest.raises(ConfigError, match="n=N"):
        expand_folder(goods, tmp_path / "o")
    with pytest.raises(ConfigError, match="source=DIR"):
        expand_folder(goods, tmp_path / "o", 3, mode="copy_paste")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="overwrite=true"):
        expand_folder(goods, tmp_path / "busy", 3)
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "white.png"), np.full((30, 40), 240, np.uint8))
    with pytest.raises(DataError, match="appearance=metal"):
        expand_folder(blank, tmp_path / "o", 2, progress=False)
    summary = expand_folder(goods, tmp_path / "o", bad_fraction=0.5, appearance="metal", progress=False)
    assert summary.bad == summary.good == 10


def test_overwrite_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    goods = write_goods(tmp_path / "in", broken=False)
    out = tmp_path / "par"
    (out / "raw").mkdir(parents=True)
    (out / "raw" / "keep.png").write_bytes(b"user data")
    (out / "labels.csv").write_text("keep me\n")
    before = _files(out)
    with pytest.raises(ConfigError, match=r"output=.*par is not an earlier scratchlab.synth output \(it holds "
                                          r"labels.csv\).*choose a new or empty folder") as err:
        expand_folder(goods, out, 3, overwrite=True, progress=False)
    assert "\n" not in str(err.value)
    (out / "expand.json").write_text('{"n": 0, "good": 0}')  # a look-alike does not help
    with pytest.raises(ConfigError, match=r"it holds labels.csv"):
        expand_folder(goods, out, 3, overwrite=True, progress=False)
    (out / "expand.json").unlink()
    assert _files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["in", "par"]
    result = run_cli("scratchlab.synth", [f"input={goods}", f"output={out}", "n=3", "overwrite=true",
                                          f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "labels.csv" in errors[0], result.stderr[-1000:]
    assert _files(out) == before


def test_input_inside_the_output_is_refused(tmp_path: Path) -> None:
    par = tmp_path / "par"
    raw = write_goods(par / "raw", broken=False)
    (par / "labels.csv").write_text("keep me\n")
    before = _files(par)
    for output, overwrite in ((par, True), (par, False), (raw, True)):
        with pytest.raises(ConfigError, match=r"input=.* is or lies inside output=.*choose an output folder outside"):
            expand_folder(raw, output, 3, overwrite=overwrite, progress=False)
    assert _files(par) == before
    # an earlier synth output would pass the overwrite check: its own good/ as the input must not
    out = tmp_path / "out"
    expand_folder(raw, out, 3, progress=False)
    earlier = _files(out)
    with pytest.raises(ConfigError, match="lies inside output"):
        expand_folder(out / "good", out, 3, overwrite=True, progress=False)
    assert _files(out) == earlier


def test_overwrite_replaces_only_an_earlier_synth_output(tmp_path: Path) -> None:
    goods = write_goods(tmp_path / "in", broken=False)
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine without overwrite
    expand_folder(goods, out, 3, progress=False)
    summary = expand_folder(goods, out, 5, seed=1, overwrite=True, progress=False)
    assert summary.bad == 5 and len(_records(out)) == 5 and len(list((out / "bad").iterdir())) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temporary folders left
    for extra, why in (("good/extra.png", r"good/ holds 11 files where its expand.json records 10"),
                       ("good/notes.txt", r"it holds good/notes.txt"),
                       ("masks/zz.png", r"it holds masks/zz.png"),
                       (".hidden", r"it holds .hidden")):
        (out / extra).write_bytes((goods / "gray0.png").read_bytes())
        before = _files(out)
        with pytest.raises(ConfigError, match=rf"not an earlier scratchlab.synth output \({why}\)"):
            expand_folder(goods, out, 3, overwrite=True, progress=False)
        assert _files(out) == before
        (out / extra).unlink()
    expand_folder(goods, out, 2, overwrite=True, progress=False)
    assert len(_records(out)) == 2


def _pasted_expectation(rec_paste: dict, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The real source pixels (shifted) where one recorded right-angle paste lands, and where it lands."""
    x0, y0, x1, y1 = rec_paste["box"]
    patch = read_image(rec_paste["source"])[y0:y1, x0:x1].astype(np.int16)
    if rec_paste["flip"]:
        patch = np.flip(patch, 1 if rec_paste["flip"] == 1 else 0)
    patch = np.rot90(patch, int(rec_paste["angle"]) // 90)
    expected = np.zeros((*shape, 3), np.int16)
    covered = np.zeros(shape, bool)
    ax, ay = rec_paste["at"]
    h, w = patch.shape[:2]
    tx0, ty0, tx1, ty1 = max(0, ax), max(0, ay), min(shape[1], ax + w), min(shape[0], ay + h)
    expected[ty0:ty1, tx0:tx1] = np.clip(patch[ty0 - ay:ty1 - ay, tx0 - ax:tx1 - ax] + rec_paste["shift"], 0, 255)
    covered[ty0:ty1, tx0:tx1] = True
    return expected, covered


def test_copy_paste_pastes_real_scratches_with_exact_masks(tmp_path: Path) -> None:
    real = write_tiny_folder_dataset(tmp_path / "real", n_good=0, n_bad=6, seed=1)
    goods = write_goods(tmp_path / "in", broken=False)
    args = dict(mode="copy_paste", source=real, seed=2, progress=False,
                copy_paste={"angles": "right", "components": [1, 1]})
    expand_folder(goods, tmp_path / "cp", 8, **args)
    expand_folder(goods, tmp_path / "cp2", 8, **args)
    assert _files(tmp_path / "cp") == _files(tmp_path / "cp2"), "copy-paste is not deterministic"
    out = tmp_path / "cp"
    assert FolderSource(out).load().counts() == {"good": 10, "bad": 8}
    exact = 0
    total = 0
    for rec in _records(out):
        good, bad = read_image(out / rec["good"]), read_image(out / rec["image"])
        mask = cv2.imread(str(out / rec["mask"]), cv2.IMREAD_UNCHANGED)
        changed = (bad != good).any(axis=2)
        assert changed.any() and rec["mode"] == "copy_paste" and len(rec["pastes"]) == 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        assert (mask == cv2.dilate(changed.astype(np.uint8) * 255, kernel)).all(), "mask != changed pixels + 1 px"
        assert (np.abs(bad.astype(int) - good.astype(int)).max(axis=2)[changed] > 2).all()
        paste = rec["pastes"][0]
        assert Path(paste["source"]).parent == real / "bad"
        expected, covered = _pasted_expectation(paste, changed.shape)
        assert covered[changed].all(), "a pixel changed outside the pasted piece"
        g, b, e = good.astype(np.int16)[changed], bad.astype(np.int16)[changed], expected[changed]
        # every changed pixel blends the target towards the real scratch pixel (alpha in (0, 1]) ...
        assert ((b >= np.minimum(g, e) - 1) & (b <= np.maximum(g, e) + 1)).all()
        # ... and where the scratch is fully opaque it is the real pixel itself
        exact += int((b == e).all(axis=1).sum())
        total += int(changed.sum())
    assert exact > 0.3 * total
    # any-angle pastes: still exactly the changed pixels, dilated by 1 px
    expand_folder(goods, tmp_path / "any", 4, mode="both", source=real, seed=3, progress=False)
    for rec in _records(tmp_path / "any"):
        good, bad = read_image(tmp_path / "any" / rec["good"]), read_image(tmp_path / "any" / rec["image"])
        mask = cv2.imread(str(tmp_path / "any" / rec["mask"]), cv2.IMREAD_UNCHANGED)
        if rec["mode"] == "copy_paste":
            assert (mask == change_mask(good, bad, 2, 1)).all() and (bad != good).any(axis=2).any()
    assert {r["mode"] for r in _records(tmp_path / "any")} == {"synthetic", "copy_paste"}


def _datamodule(data: Path, fraction: float, cache: Path, source=None) -> ScratchDataModule:
    split = {"train": 0.7, "val": 0.15, "test": 0.15, "seed": 42}
    return ScratchDataModule(source or FolderSource(data), Preprocess(32), split, synthetic_fraction=fraction,
                             synthetic_dir=cache, batch_size=4)


def test_synthetic_fraction_grows_only_the_training_split(tmp_path: Path, tiny_dataset: Path) -> None:
    cache = tmp_path / "cache"
    plain = _datamodule(tiny_dataset, 0.0, cache)
    plain.setup("fit")
    dm = _datamodule(tiny_dataset, 0.5, cache)
    dm.setup("fit")
    base_train = plain.splits["train"]
    extra = dm.splits["train"][len(base_train):]
    assert dm.splits["train"][:len(base_train)] == base_train
    assert len(extra) == round(0.5 * len(base_train)) > 0
    for name in ("val", "test"):
        assert [s.image for s in dm.splits[name]] == [s.image for s in plain.splits[name]]
    train_goods = {s.image.name for s in base_train if s.label == 0}
    for s in extra:
        assert s.label == 1 and s.meta["synthetic"] and Path(s.meta["source"]).name in train_goods
        assert cache in s.image.parents and read_mask(s.mask).any()
    item = dm.datasets["train"][len(base_train)]
    assert item["label"] == 1 and item["mask"].sum() > 0
    assert dm.class_counts("train")[1] == plain.class_counts("train")[1] + len(extra)
    frame = dm.split_frame()
    marked = frame[frame.synthetic]
    assert len(marked) == len(extra) and set(marked.split) == {"train"} and set(marked.label) == {1}
    assert not plain.split_frame().synthetic.any()
    # a second run reuses the cached images untouched
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")}
    again = _datamodule(tiny_dataset, 0.5, cache)
    again.setup("fit")
    assert [s.image for s in again.splits["train"]] == [s.image for s in dm.splits["train"]]
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")} == stamps
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1


def test_synthetic_fraction_needs_a_binary_task(tmp_path: Path, tiny_dataset: Path) -> None:
    class ThreeClasses:
        def load(self) -> SampleIndex:
            samples = FolderSource(tiny_dataset).load().samples
            return SampleIndex([Sample(s.image, i % 3) for i, s in enumerate(samples)], ["a", "b", "c"])

    dm = _datamodule(tiny_dataset, 0.5, tmp_path, source=ThreeClasses())
    dm.check = False
    with pytest.raises(ConfigError, match="binary"):
        dm.setup("fit")
    with pytest.raises(ConfigError, match="synthetic_fraction"):
        _datamodule(tiny_dataset, -0.1, tmp_path)


def test_config_reaches_the_datamodule(tmp_path: Path, tiny_dataset: Path) -> None:
    from scratchlab.builders import build_datamodule
    from scratchlab.config import compose

    cfg = compose("train", tiny_overrides(tmp_path, tiny_dataset) + ["data.synthetic_fraction=0.25",
                                                                    "data.synthetic_appearance=metal"])
    dm = build_datamodule(cfg)
    assert dm.synthetic_fraction == 0.25 and dm.synthetic_appearance == "metal"
    assert dm.synthetic_dir == tmp_path / "data" / "synthetic_train"
    assert compose("train", tiny_overrides(tmp_path, tiny_dataset)).data.synthetic_fraction == 0.0


def test_train_cli_on_synth_output(synth_out, tmp_path: Path) -> None:
    _, out, _ = synth_out
    result = run_cli("scratchlab.train", tiny_overrides(tmp_path, out) + ["trainer.max_epochs=1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recall_bad" in result.stdout and "MLflow run:" in result.stdout
