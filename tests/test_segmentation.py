"""Segmentation: every architecture and loss trains a step, losses on hand-made masks, padding, end to end."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from scratchlab.builders import build_task, load_task
from scratchlab.config import compose
from scratchlab.data.dataset import pad_collate
from scratchlab.data.io import read_image
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.losses import BCEDiceLoss, DiceLoss
from scratchlab.tasks.segmentation import valid_pixels
from scratchlab.training import run_training
from tests.conftest import tiny_overrides, write_tiny_folder_dataset

SEG_MODELS = ["unet", "unetplusplus", "fpn"]
SEG_LOSSES = ["bce", "dice", "bce_dice", "focal"]


def _cfg(tmp_path: Path, *overrides: str):
    return compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run", *overrides])


@pytest.mark.parametrize("model", SEG_MODELS)
@pytest.mark.parametrize("loss", SEG_LOSSES)
def test_segmenter_trains_one_step(tmp_path: Path, model: str, loss: str) -> None:
    encoder = "model.encoder_name=resnet18" if model != "unet" else "model.encoder_name=efficientnet-b0"
    task = build_task(_cfg(tmp_path, f"model={model}", encoder, f"loss={loss}"), ["good", "bad"])
    images = torch.randn(2, 3, 64, 96)
    masks = torch.zeros(2, 64, 96)
    masks[1, 30:34, 10:80] = 1
    batch = {"image": images, "mask": masks, "label": torch.tensor([0, 1]), "size": torch.tensor([[64, 96]] * 2),
             "path": ["a", "b"]}
    optimizer = task.configure_optimizers()
    task.train()
    logits = task(images)
    assert logits.shape == (2, 1, 64, 96)
    value = task.loss(logits, masks[:, None])
    value.backward()
    optimizer.step()
    assert torch.isfinite(value)


def test_timm_encoder_builds(tmp_path: Path) -> None:
    task = build_task(_cfg(tmp_path, "model=unet", "model.encoder_name=tu-convnext_atto"), ["good", "bad"])
    assert task.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_dice_and_bce_dice_on_hand_made_masks() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50  # logits: +50 on scratch, -50 elsewhere
    assert DiceLoss(smooth=0)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.full_like(target, -50.0)
    half[..., 2:6, 2:4] = 50  # predicts 8 of the 16 scratch pixels: Dice = 2*8 / (8 + 16) = 2/3
    assert DiceLoss(smooth=0)(half, target).item() == pytest.approx(1 - 2 / 3, abs=1e-4)
    combined = BCEDiceLoss(bce_weight=0.3, dice_weight=0.7)(half, target).item()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(half, target).item()
    assert combined == pytest.approx(0.3 * bce + 0.7 * DiceLoss()(half, target).item(), abs=1e-5)
    assert bce == pytest.approx(8 * 50 / 64, rel=1e-4), "8 of 64 pixels wrong by a logit of 50"


def test_segmentation_loss_rejected_for_classifier(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="segmentation loss"):
        build_task(_cfg(tmp_path, "model=cnn", "loss=dice"), ["good", "bad"])


def test_pad_collate_and_valid_pixels() -> None:
    items = [{"image": torch.ones(3, 32, 64), "mask": torch.ones(32, 64), "label": 1, "size": torch.tensor([30, 50]),
              "original_size": torch.tensor([60, 100]), "path": "a"},
             {"image": torch.ones(3, 64, 32), "mask": torch.zeros(64, 32), "label": 0, "size": torch.tensor([64, 20]),
              "original_size": torch.tensor([64, 20]), "path": "b"}]
    black = Preprocess(image_size=64, resize="pad").pad_value()
    batch = pad_collate(items, fill=black)
    assert batch["image"].shape == (2, 3, 64, 64) and batch["mask"].shape == (2, 64, 64)
    assert batch["original_size"].tolist() == [[60, 100], [64, 20]]
    for c, value in enumerate(black):  # padding is the normalized value of a black pixel, as PadIfNeeded gives
        assert torch.allclose(batch["image"][0, c, 32:], torch.tensor(value))
        assert torch.allclose(batch["image"][1, c, :, 32:], torch.tensor(value))
    assert batch["image"][0, :, :32].eq(1).all() and batch["mask"][0, 32:].eq(0).all()
    valid = valid_pixels(batch, (2, 64, 64), pad_mode=True)
    assert valid[0].sum() == 30 * 50 and valid[1].sum() == 64 * 20
    assert valid[0, 29, 49] and not valid[0, 30, 0] and not valid[1, 0, 20]


def test_tiny_segmentation_run_logs_dice_and_overlays(tmp_path: Path, tiny_dataset: Path) -> None:
    overrides = [o for o in tiny_overrides(tmp_path, tiny_dataset) if not o.startswith("model")]
    metrics = run_training(compose("train", overrides + ["model=unet", "model.encoder_name=resnet18",
                                                         "loss=bce_dice", "trainer.max_epochs=1"]))
    assert 0.0 <= metrics["test/dice"] <= 1.0
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = mlflow.search_runs(experiment_names=["scratchlab"]).iloc[0]
    for key in ("val/dice", "val/iou", "val/pixel_precision", "val/pixel_recall", "test/dice", "test/recall_bad",
                "test/precision_bad", "test/f1_bad", "val/auroc", "test/auroc", "test/average_precision"):
        assert f"metrics.{key}" in run.index and 0.0 <= run[f"metrics.{key}"] <= 1.0, key
    names = {a.path for a in MlflowClient().list_artifacts(run.run_id, "val_overlays")}
    assert names == {"val_overlays/epoch_000.png"}


def test_maskrcnn_trains_and_logs_mask_map(tmp_path: Path, tiny_dataset: Path) -> None:
    overrides = [o for o in tiny_overrides(tmp_path, tiny_dataset) if not o.startswith("model")]
    metrics = run_training(compose("train", overrides + [
        "model=maskrcnn", "model.min_size=64", "model.max_size=96", "trainer.max_epochs=1", "data.batch_size=4",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]))
    assert {"test/map_segm", "test/map_bbox", "test/map50_segm", "test/dice", "test/recall_bad"} <= set(metrics)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = mlflow.search_runs(experiment_names=["scratchlab"]).iloc[0]
    assert run.status == "FINISHED" and "metrics.val/map_segm" in run.index
    assert run["metrics.train/loss_mask"] > 0, "torchvision's mask loss is logged per epoch"


def test_two_stage_gates_the_segmenter(tmp_path: Path, tiny_dataset: Path) -> None:
    base = [o for o in tiny_overrides(tmp_path, tiny_dataset) if not o.startswith(("model", "hydra.run"))]
    base += ["trainer.max_epochs=1"]
    run_training(compose("train", base + [f"hydra.run.dir={tmp_path}/cls", "model=cnn", "model.image_size=32"]))
    seg = run_training(compose("train", base + [f"hydra.run.dir={tmp_path}/seg", "model=unet",
                                                "model.encoder_name=resnet18"]))

    def two_stage(gate: float) -> dict[str, float]:
        return run_training(compose("train", base + [
            f"hydra.run.dir={tmp_path}/two_{gate}", "model=two_stage", f"model.gate_threshold={gate}",
            f"model.classifier_ckpt={tmp_path}/cls/checkpoints/best.ckpt",
            f"model.segmenter_ckpt={tmp_path}/seg/checkpoints/best.ckpt"]))

    everything = two_stage(0.0)
    assert everything["test/gate_rate"] == 1.0
    assert everything["test/dice"] == pytest.approx(seg["test/dice"], abs=1e-6), "gating nothing out = segmenter"
    nothing = two_stage(1.0)  # a one-epoch classifier is never that sure: no image reaches the segmenter
    assert nothing["test/gate_rate"] == 0.0
    assert nothing["test/recall_bad"] == 0.0 and nothing["test/pixel_recall"] == 0.0

    # the run's own checkpoint holds both networks: it still judges alike when the part files are gone
    own = tmp_path / "two_0.0" / "checkpoints" / "best.ckpt"
    images = [read_image(p) for p in sorted((tiny_dataset / "bad").glob("*.png"))[:4]]
    before = [(v.score, v.is_bad) for v in load_task(own).predict_images(images)]
    shutil.rmtree(tmp_path / "cls")
    shutil.rmtree(tmp_path / "seg")
    assert [(v.score, v.is_bad) for v in load_task(own).predict_images(images)] == before
    with pytest.raises(ConfigError, match="model.classifier_ckpt=.* is a two_stage checkpoint; two-stage takes a "
                                          "classification one"):
        run_training(compose("train", base + ["model=two_stage", f"model.classifier_ckpt={own}",
                                              f"model.segmenter_ckpt={own}"]))


def test_bn_momentum_is_set_on_every_batch_norm(tmp_path: Path) -> None:
    def momenta(*overrides: str) -> set[float]:
        task = build_task(_cfg(tmp_path, "model=unet", *overrides), ["good", "bad"])
        return {m.momentum for m in task.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}

    assert momenta() == {0.1}
    assert min(momenta("model.bn_momentum=null")) == pytest.approx(0.01), "efficientnet encoders ship 0.01"


def test_validation_reuses_the_batch_maps_only_where_they_equal_the_inference_path(tmp_path: Path) -> None:
    task = build_task(_cfg(tmp_path, "model=unet", "model.encoder_name=resnet18", "data.resize=pad",
                           "model.image_size=64"), ["good", "bad"]).eval()
    forwards = []
    task.net.register_forward_hook(lambda *_: forwards.append(1))
    black = Preprocess(image_size=64, resize="pad").pad_value()
    item = lambda h, w: {"image": torch.randn(3, h, w), "mask": torch.zeros(h, w), "label": 0,  # noqa: E731
                         "size": torch.tensor([h, w]), "original_size": torch.tensor([h, w]), "path": "a"}
    same = pad_collate([item(64, 64), item(64, 64)], fill=black)
    with torch.no_grad():
        _, probs = task.loss_and_probs(same, "val")
        reused = task.reused_maps(same, probs)
        forwards.clear()
        own, _ = task.batch_verdicts(same)
    assert reused is not None and len(forwards) == 1  # the per-image path is one more forward of the same batch
    for a, b in zip(reused, own):
        assert torch.allclose(torch.from_numpy(a["prob_map"]), torch.from_numpy(b["prob_map"]), atol=1e-6)
    forwards.clear()
    with torch.no_grad():
        task.validation_step(same, 0)
    assert len(forwards) == 1  # validation judges the images from its own forward pass
    mixed = pad_collate([item(64, 64), item(32, 48)], fill=black)
    assert task.reused_maps(mixed, task.loss_and_probs(mixed, "val")[1]) is None  # the small image runs alone
    flips = build_task(_cfg(tmp_path, "model=unet", "model.encoder_name=resnet18", "data.resize=pad",
                            "model.image_size=64", "model.tta=[hflip]"), ["good", "bad"]).eval()
    assert flips.tta and flips.reused_maps(same, probs) is None  # flips are averaged by the inference path only


def test_native_size_evaluation_batches_share_one_input_shape(tmp_path: Path) -> None:
    from scratchlab.builders import build_datamodule

    data = write_tiny_folder_dataset(tmp_path / "data")
    for path in data.rglob("*.png"):
        if int(path.stem[1:]) % 3 == 0:  # a third of the images (and their masks) twice as large: several shapes
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(path), cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
    dm = build_datamodule(compose("train", tiny_overrides(tmp_path, data) + [
        "model=unet", "model.image_size=null", "data.resize=pad", "data.batch_size=4"]))
    dm.prepare_data()
    dm.setup("fit")
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        seen, shapes = [], set()
        for batch in loader:
            padded = {tuple(-(-int(v) // 32) * 32 for v in size) for size in batch["size"].tolist()}
            assert padded == {tuple(batch["image"].shape[-2:])}, split  # no image padded beyond its own input
            seen += batch["path"]
            shapes |= padded
        assert sorted(seen) == sorted(str(s.image) for s in dm.splits[split])  # every image once
    assert len(shapes) > 1  # the tiny images come in several input shapes
    assert len(dm.train_dataloader()) == len(dm.splits["train"]) // 4  # training batches stay mixed and full


@pytest.mark.parametrize("augment, crop", [("none", False), ("crops", True)])
def test_training_pixels_count_as_content_only_where_the_image_is_cropped(tmp_path: Path, tiny_dataset: Path,
                                                                         augment: str, crop: bool) -> None:
    """Training pixel metrics skip the padding of native-size inputs; a crop is all content."""
    from scratchlab.builders import build_datamodule

    dm = build_datamodule(compose("train", tiny_overrides(tmp_path, tiny_dataset) + [
        "model=unet", "model.image_size=null", "data.resize=pad", f"augment={augment}", "data.crop_size=32"]))
    dm.prepare_data()
    dm.setup("fit")
    train = dm.datasets["train"]
    for i in range(4):
        item = train[i]
        height, width = item["original_size"].tolist()
        assert tuple(item["size"].tolist()) == ((32, 32) if crop else (height, width)), augment
        assert crop or tuple(item["image"].shape[-2:]) != (height, width)  # native inputs are padded to 32


def test_segmenter_image_auroc_ranks_the_verdict_scores() -> None:
    from scratchlab.task_metrics import SegmentationMetrics

    probs, masks = torch.zeros(4, 8, 8), torch.zeros(4, 8, 8)
    valid, labels = torch.ones(4, 8, 8, dtype=torch.bool), torch.tensor([0, 0, 1, 1])
    bad = torch.tensor([False, True, True, True])  # one false alarm at the decision, yet the scores rank perfectly
    metrics = SegmentationMetrics()
    metrics.update(probs, masks, valid, bad, labels, torch.tensor([0.1, 0.4, 0.6, 0.9]))
    out = metrics.compute()
    assert out["auroc"] == pytest.approx(1.0) and out["average_precision"] == pytest.approx(1.0)
    assert out["precision_bad"] == pytest.approx(2 / 3)
    metrics.reset()
    metrics.update(probs, masks, valid, bad, labels, torch.tensor([0.9, 0.6, 0.4, 0.1]))
    assert metrics.compute()["auroc"] == pytest.approx(0.0)


def test_segmenter_without_masks_stops_and_warns_for_unmasked_bad_images(tmp_path: Path, caplog) -> None:
    """Bad images without masks would be learned as scratch-free: none with a mask (here: masks named
    ``<stem>_mask.png``) is a DataError naming the mismatch; some without one is a warning. Classifiers need none."""
    from scratchlab.builders import build_datamodule
    from scratchlab.errors import DataError

    root = write_tiny_folder_dataset(tmp_path / "data")
    for mask in (root / "masks").iterdir():
        mask.rename(mask.with_name(f"{mask.stem}_mask.png"))
    seg = ["model=unet", "model.encoder_name=efficientnet-b0", "data=folder", f"data.root={root}"]
    with pytest.raises(DataError, match=r"none of the \d+ bad training images has one.*_mask\.png"):
        build_datamodule(_cfg(tmp_path, *seg)).setup("fit")
    build_datamodule(_cfg(tmp_path, "model=cnn", "data=folder", f"data.root={root}")).setup("fit")
    for mask in sorted((root / "masks").iterdir())[:6]:
        mask.rename(mask.with_name(mask.name.replace("_mask", "")))
    with caplog.at_level("WARNING", logger="scratchlab.data.datamodule"):
        build_datamodule(_cfg(tmp_path, *seg)).setup("fit")
    assert any("bad training images have no mask" in r.getMessage() for r in caplog.records)
