"""Every experiment config composes with every data config (also shrunk by profile=cpu), starts on data of
its own, declares the earlier rows' weights and carries what the report needs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from scratchlab.builders import build_datamodule, build_task
from scratchlab.config import CONFIG_DIR, compose
from scratchlab.errors import ConfigError
from scratchlab.models import build_model
from scratchlab.models.weights import weights_source
from tests.conftest import PROJECT_DIR

EXPERIMENTS = sorted(p.stem for p in (PROJECT_DIR / "experiments").glob("*.yaml"))
DATA_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml") if p.stem != "base")  # base: not a data set
# Keys every data config shares (conf/data/base.yaml); an experiment may set only these under data:.
SHARED_DATA_KEYS = set(yaml.safe_load((CONFIG_DIR / "data" / "base.yaml").read_text())) - {"name", "source"}
SHARED_DATA_KEYS.add("augment")  # the augment group's package: every data config has it
PRETRAINED = {"convnext_tiny", "vit_base", "resnet50", "mobilenetv2_neu", "unet_effb0", "unet_effb5", "maskrcnn"}


def _rooted(data: str) -> bool:
    return (CONFIG_DIR / "data" / f"{data}.yaml").read_text().count("\nroot: ???") == 1


def _compose(tmp_path: Path, *overrides: str):
    return compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", *overrides])


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("profile", [None, "cpu"])
def test_experiment_composes(tmp_path: Path, name: str, profile: str | None) -> None:
    overrides = [f"experiment={name}"] + (["data.root=/data/neu"] if name.endswith("_neu") else [])
    cfg = _compose(tmp_path, *overrides, *([f"profile={profile}"] if profile else []))
    assert cfg.name in ("reproduce", "recipes") and cfg.tags.study == cfg.name and cfg.tags.row  # or recipes beating them
    assert not OmegaConf.missing_keys(cfg)
    for key, value in cfg.reported.items():
        assert key.split("/")[0] in ("val", "test") and 0 <= value <= 1
    if profile == "cpu":
        assert cfg.trainer.max_epochs <= 2 and cfg.trainer.accelerator == "cpu"
        assert weights_source(cfg.model) == "random" and cfg.tags.smoke == "profile=cpu"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_set_no_data_specific_keys(name: str) -> None:
    data = yaml.safe_load((PROJECT_DIR / "experiments" / f"{name}.yaml").read_text()).get("data") or {}
    assert set(data) <= SHARED_DATA_KEYS, f"{name} sets {set(data) - SHARED_DATA_KEYS}: move them to a data config"


@pytest.mark.parametrize("data", DATA_CONFIGS)
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_with_every_data_config(tmp_path: Path, name: str, data: str) -> None:
    cfg = _compose(tmp_path, f"experiment={name}", f"data={data}", *([f"data.root={tmp_path}"] if _rooted(data) else []))
    assert not OmegaConf.missing_keys(cfg)
    assert cfg.data.batch_size > 0 and cfg.model.task  # the experiment's recipe, on this data
    expected = yaml.safe_load((CONFIG_DIR / "data" / f"{data}.yaml").read_text()).get("source", {}).get("_target_")
    source = instantiate(cfg.data.source)
    if expected:
        assert isinstance(source, get_class(expected))
    assert callable(source.load)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_starts_on_a_folder_of_images(tmp_path: Path, tiny_dataset: Path, name: str) -> None:
    """Data source, check, split, the experiment's augmentation and geometry: one training batch."""
    cfg = _compose(tmp_path, f"experiment={name}", "data=folder", f"data.root={tiny_dataset}", "data.num_workers=0",
                   "data.batch_size=4")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    evaluated = next(iter(datamodule.val_dataloader()))
    assert batch["image"].shape[0] == 4 and batch["image"].shape[1] == 3
    if cfg.data.resize != "pad":  # square inputs of model.image_size; training crops (augment=crops) of crop_size
        side = cfg.model.image_size
        crop = cfg.data.crop_size if "crop" in (cfg.data.augment or {}) else side
        assert batch["image"].shape[-2:] == (crop, crop) and evaluated["image"].shape[-2:] == (side, side)


def test_experiments_override_defaults(tmp_path: Path) -> None:
    cfg = _compose(tmp_path, "experiment=custom_cnn")
    assert cfg.model.name == "cnn" and cfg.model.image_size == 100 and cfg.trainer.max_epochs == 20
    assert cfg.data.split.test == 0.2 and cfg.callbacks.early_stopping is None
    assert cfg.data.source.count == 5200 and cfg.data.name == "text_scratch_5k"  # the earlier set's size
    assert list(cfg.data.augment) == ["hflip", "rotate", "mild_zoom", "color_jitter"]
    cfg = _compose(tmp_path, "experiment=unet_effb0", "model.pretrained=false")
    assert cfg.model.task == "segmentation" and cfg.model.encoder_name == "efficientnet-b0"
    task = build_task(cfg, ["good", "bad"])
    assert type(task.loss).__name__ == "BCEDiceLoss"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_declare_the_earlier_weights(tmp_path: Path, name: str) -> None:
    cfg = _compose(tmp_path, f"experiment={name}")
    assert weights_source(cfg.model) == ("hub/cache" if name in PRETRAINED else "random")
    if name in PRETRAINED:
        assert weights_source(_compose(tmp_path, f"experiment={name}", "model.pretrained=false").model) == "random"
        weights = _compose(tmp_path, f"experiment={name}", f"model.weights_path={tmp_path}/w.pth").model
        assert weights_source(weights) == "file"


def test_missing_imagenet_weights_stop_at_once_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    import scratchlab.models.classifiers as classifiers

    monkeypatch.setattr(classifiers, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    cfg = _compose(tmp_path, "experiment=unet_effb0")
    with pytest.raises(ConfigError, match="model.pretrained=false"):
        build_model(cfg.model, num_outputs=1)
    cfg = _compose(tmp_path, "experiment=custom_cnn", "+model.pretrained=true")
    with pytest.raises(ConfigError, match="no pretrained weights"):
        build_model(cfg.model, num_outputs=1)
    random_init = _compose(tmp_path, "experiment=unet_effb0", "profile=cpu")
    assert build_model(random_init.model, num_outputs=1) is not None
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(ConfigError, match="ImageNet ResNet-50 weights are not in .* model.pretrained=false"):
        build_model(_compose(tmp_path, "experiment=maskrcnn").model, num_outputs=2)


def test_maskrcnn_starts_from_the_imagenet_backbone_in_the_hub_cache(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A backbone file placed in torch's hub cache is what ``pretrained=true`` loads (no download)."""
    from torchvision.models import ResNet50_Weights, resnet50

    weights = ResNet50_Weights.IMAGENET1K_V1
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    reference = resnet50().state_dict()
    torch.save(reference, hub / "checkpoints" / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    model = build_model(_compose(tmp_path, "experiment=maskrcnn").model, num_outputs=2)
    loaded = model.backbone.body.layer4[0].conv1.weight
    assert torch.equal(loaded, reference["layer4.0.conv1.weight"])
