"""Every model builds and trains a step; every model x loss x optimizer composes; weights load locally only."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from scratchlab.builders import build_task
from scratchlab.config import CONFIG_DIR, compose
from scratchlab.errors import ConfigError
from scratchlab.models.classifiers import ScratchCNN, timm_classifier

CLASSIFIERS = ["cnn", "resnet50", "convnext", "vit", "mobilenetv2"]
LOSSES = ["bce", "ce"]  # classification losses; segmentation ones are covered in test_segmentation.py
OPTIMIZERS = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in (CONFIG_DIR / "scheduler").glob("*.yaml"))


def _cfg(tmp_path: Path, *overrides: str):
    return compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run", *overrides])


@pytest.mark.parametrize("model", CLASSIFIERS)
@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_classifier_trains_one_step(tmp_path: Path, model: str, loss: str) -> None:
    cfg = _cfg(tmp_path, f"model={model}", "model.image_size=32", f"loss={loss}", "scheduler=cosine")
    task = build_task(cfg, ["good", "bad"], class_counts=[30, 10])
    assert task.net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 1 if loss == "bce" else 2)
    optimizer = task.configure_optimizers()["optimizer"]
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 0, 1]), "path": ["x"] * 4}
    before = [p.detach().clone() for p in task.net.parameters()]
    task.train()
    loss_value = task.loss(task(batch["image"]), batch["label"])
    loss_value.backward()
    optimizer.step()
    assert torch.isfinite(loss_value)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, task.net.parameters()))
    assert changed > 0, "an optimizer step must change the weights"


@pytest.mark.parametrize(("model", "loss", "optimizer"), list(itertools.product(CLASSIFIERS, LOSSES, OPTIMIZERS)))
def test_every_combination_composes(tmp_path: Path, model: str, loss: str, optimizer: str) -> None:
    cfg = _cfg(tmp_path, f"model={model}", f"loss={loss}", f"optimizer={optimizer}")
    assert cfg.model.task == "classification"
    loss_fn = instantiate(cfg.loss)
    assert loss_fn.num_outputs(2) in (1, 2)
    opt = instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    assert opt.defaults["lr"] == pytest.approx(cfg.optimizer.lr)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_schedulers_compose(tmp_path: Path, scheduler: str) -> None:
    cfg = _cfg(tmp_path, f"scheduler={scheduler}", "model.image_size=16")
    task = build_task(cfg, ["good", "bad"])
    configured = task.configure_optimizers()
    assert isinstance(configured, torch.optim.Optimizer) == (scheduler == "none")


def test_cnn_matches_earlier_architecture() -> None:
    net = ScratchCNN(num_outputs=1, image_size=100)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64] and all(c.kernel_size == (3, 3) for c in convs)
    assert linears[0].in_features == 64 * 23 * 23 and linears[0].out_features == 64 and linears[1].out_features == 1


def test_variant_override(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "model=convnext", "model.name=convnext_atto", "model.image_size=32")
    task = build_task(cfg, ["good", "bad"])
    assert task.net.default_cfg["architecture"] == "convnext_atto"


def test_auto_class_weights(tmp_path: Path) -> None:
    task = build_task(_cfg(tmp_path, "loss=bce", "loss.pos_weight=auto", "model.image_size=16"), ["good", "bad"], [40, 10])
    assert float(task.loss.pos_weight) == pytest.approx(4.0)
    task = build_task(_cfg(tmp_path, "loss=ce", "loss.class_weights=auto", "model.image_size=16"), ["good", "bad"], [40, 10])
    assert task.loss.weight[1] / task.loss.weight[0] == pytest.approx(4.0)
    for loss in ("bce", "bce_dice"):  # segmenters: background / scratch pixels
        cfg = _cfg(tmp_path, "model=unet", "model.encoder_name=resnet18", f"loss={loss}", "loss.pos_weight=auto",
                   "model.image_size=32")
        bce = build_task(cfg, ["good", "bad"], pixel_counts=(900, 30)).loss
        assert float(getattr(bce, "bce", bce).pos_weight) == pytest.approx(30.0), loss


def _conv_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    """Weights of the convolutions whose two layouts differ (depthwise and 1x1 kernels have the same strides in both)."""
    return [m.weight for m in net.modules()
            if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]


@pytest.mark.parametrize("model", ["cnn", "unet", "resnet50"])
def test_channels_last_changes_the_layout_not_the_network(tmp_path: Path, model: str) -> None:
    nets = {}
    for layout in (True, False):
        torch.manual_seed(0)
        cfg = _cfg(tmp_path, f"model={model}", "model.image_size=32", f"model.channels_last={str(layout).lower()}")
        nets[layout] = build_task(cfg, ["good", "bad"]).net.eval()
    assert compose("train", [f"model={model}"]).model.channels_last, "on by default"
    for layout, net in nets.items():
        convs = _conv_weights(net)
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) == layout for w in convs)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(nets[True](x), nets[False](x), rtol=1e-4, atol=1e-5)  # up to float rounding
    torch.manual_seed(1)
    trained = build_task(_cfg(tmp_path, f"model={model}", "model.image_size=32"), ["good", "bad"]).net.eval()
    for layout, net in nets.items():  # a state dict of either layout loads into the other, which keeps its own
        net.load_state_dict(trained.state_dict())
        assert all(w.is_contiguous(memory_format=torch.channels_last) == layout for w in _conv_weights(net))
        with torch.no_grad():
            torch.testing.assert_close(net(x), trained(x), rtol=1e-4, atol=1e-5)


def test_configs_without_channels_last_keep_contiguous_weights(tmp_path: Path) -> None:
    """Checkpoints written before the key existed rebuild their networks as they were trained."""
    cfg = _cfg(tmp_path, "model=cnn", "model.image_size=32")
    with open_dict(cfg):
        del cfg.model["channels_last"]
    convs = _conv_weights(build_task(cfg, ["good", "bad"]).net)
    assert convs and not any(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_weights_path_loads_local_file(tmp_path: Path) -> None:
    source = timm_classifier("mobilenetv2_050", num_outputs=1000)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = timm_classifier("mobilenetv2_050", num_outputs=1, weights_path=str(path))
    assert torch.equal(model.conv_stem.weight, source.conv_stem.weight)
    assert model.get_classifier().out_features == 1


def test_missing_weights_fail_fast_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import scratchlab.models.classifiers as classifiers

    monkeypatch.setattr(classifiers, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(ConfigError, match="weights_path"):
        timm_classifier("convnext_atto", pretrained=True)
    with pytest.raises(ConfigError, match="does not exist"):
        timm_classifier("convnext_atto", weights_path=str(tmp_path / "nope.pth"))


def test_model_config_without_task_is_a_config_error(tmp_path: Path) -> None:
    from omegaconf import open_dict

    cfg = _cfg(tmp_path, "model=cnn")
    with open_dict(cfg):
        del cfg.model["task"]
    with pytest.raises(ConfigError, match="the model config has no task: add task:"):
        build_task(cfg, ["good", "bad"])


def test_a_new_backbone_is_one_short_yaml(tmp_path: Path) -> None:
    """Every timm / smp model config extends its base and adds a few lines; the base alone is usable."""
    for path in (CONFIG_DIR / "model").glob("*.yaml"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if any(line.startswith(("defaults: [timm", "defaults: [smp")) for line in lines):
            assert len(lines) <= 7, path.name
    timm = _cfg(tmp_path, "model=timm", "model.name=resnet10t", "model.image_size=32").model
    assert timm.task == "classification" and timm.name == "resnet10t"
    smp = _cfg(tmp_path, "model=smp", "model.arch=Linknet", "model.encoder_name=resnet18").model
    assert smp.task == "segmentation" and smp.name == "Linknet-resnet18"
    task = build_task(_cfg(tmp_path, "model=unet", "model.encoder_name=resnet18"), ["good", "bad"])
    assert task.net.__class__.__name__ == "Unet" and task.preprocess.image_size == 128
