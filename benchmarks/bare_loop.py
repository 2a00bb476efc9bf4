"""The plain PyTorch reference of benchmarks/parity.py: the same recipes written without scratchlab.

Reads images with OpenCV, resizes, augments with albumentations, trains with a hand-written loop and keeps the
weights of the epoch with the lowest validation loss. Its hyperparameters are read from the composed
scratchlab config so that both sides run one recipe, but none of scratchlab's code runs here.

Both sides draw the same random numbers for a seed (common random numbers), so that their difference measures
the framework rather than luck: the network is built right after ``torch.manual_seed(seed)``, each epoch's
order is ``default_rng([seed, epoch]).permutation(n)``, and each sample's augmentation in an epoch is seeded
from ``SeedSequence([seed, epoch, index])``, every step of the pipeline with its own child seed.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
NORMALIZE = A.Normalize(mean=MEAN.flatten().tolist(), std=STD.flatten().tolist())
EARLIER_WORK = ["hflip", "rotate", "mild_zoom", "color_jitter"]


@dataclass
class BareResult:
    """Test quality (accuracy or pixel Dice), the best validation loss, training images/s after the first
    epoch, and what ran."""

    quality: float
    val_loss: float
    images_per_s: float
    epochs: int
    steps: int
    best_epoch: int


class CustomCNN(nn.Module):
    """conv32 3x3 - max-pool - conv64 3x3 - max-pool - dense 64 - one logit, valid convolutions."""

    def __init__(self, size: int) -> None:
        super().__init__()
        side = ((size - 2) // 2 - 2) // 2
        self.conv1, self.conv2 = nn.Conv2d(3, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(64 * side * side, 64), nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def earlier_work_augmentation(seed: int) -> A.Compose:
    """After resizing: flip, rotation up to 10 degrees, zoom-out to 85-100 %, colour jitter (p 0.8)."""
    return A.Compose([A.HorizontalFlip(p=0.5), A.Rotate(limit=10, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
                      A.Affine(scale=(0.85, 1.0), keep_ratio=True, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
                      A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=0.8)], seed=seed)


def seed_pipeline(transform: A.BaseCompose | A.BasicTransform, seed: int) -> None:
    """Seed ``transform`` and each of its steps with its own child seed of ``seed`` (recursively)."""
    transform.set_random_seed(seed)
    steps = transform.transforms if isinstance(transform, A.BaseCompose) else []
    for step, child in zip(steps, np.random.SeedSequence(seed).generate_state(len(steps))):
        seed_pipeline(step, int(child))


class EpochOrder(Sampler):
    """``(index, augmentation seed)`` of ``n`` samples for epoch ``epoch``: shuffled from ``(seed, epoch)``
    (or in order), each sample's augmentation seeded from ``(seed, epoch, index)``."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else range(self.n)
        return iter([(int(i), int(np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1)[0]))
                     for i in order])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> normalized float (3, H, W)."""
    return torch.from_numpy(NORMALIZE(image=image)["image"]).permute(2, 0, 1).contiguous()


BLACK = to_tensor(np.zeros((1, 1, 3), np.uint8))  # a black pixel, normalized: what padding holds


class Images(Dataset):
    """(image, label) at ``size`` x ``size`` (classification) or (image, mask, height, width) scaled so the
    longest side is ``size`` and padded to a multiple of 32 (segmentation)."""

    def __init__(self, paths: list[str], labels: list[int], masks: list[str | None], size: int,
                 segment: bool, augment: A.Compose | None = None) -> None:
        self.paths, self.labels, self.masks = paths, labels, masks
        self.size, self.segment, self.augment = size, segment, augment

    def __len__(self) -> int:
        return len(self.paths)

    def scaled_size(self, i: int, h: int | None = None, w: int | None = None) -> tuple[int, int]:
        """Image ``i``'s (height, width) once its longest side is ``size`` (segmentation)."""
        if h is None:
            h, w = cv2.imread(self.paths[i], cv2.IMREAD_GRAYSCALE).shape
        scale = self.size / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def shape_batches(self, batch_size: int) -> list[list[tuple[int, int]]]:
        """Evaluation batches whose images share one padded input shape (groups in order of first appearance,
        each in index order): no image is padded beyond its own input."""
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i in range(len(self)):
            shape = tuple(-(-side // 32) * 32 for side in self.scaled_size(i))
            groups.setdefault(shape, []).append((i, 0))
        return [g[k:k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]

    def __getitem__(self, key: tuple[int, int]):
        i, seed = key
        image = cv2.cvtColor(cv2.imread(self.paths[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        if not self.segment:
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
            if self.augment is not None:
                seed_pipeline(self.augment, seed)
                image = self.augment(image=image)["image"]
            return to_tensor(image), float(self.labels[i])
        h, w = image.shape[:2]
        nh, nw = self.scaled_size(i, h, w)
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        mask = np.zeros((h, w), np.uint8)
        if self.masks[i]:
            mask = (cv2.imread(self.masks[i], cv2.IMREAD_GRAYSCALE) >= 128).astype(np.uint8)
        mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
        return to_tensor(image), torch.from_numpy(mask).float(), nh, nw


def pad_batch(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad to the largest image of the batch, rounded up to 32: images with normalized black, masks with 0;
    also the (B, H, W) pixels that belong to an image."""
    height = -(-max(it[2] for it in items) // 32) * 32
    width = -(-max(it[3] for it in items) // 32) * 32
    black = BLACK.expand(3, height, width)
    images = torch.stack([black.clone() for _ in items])
    masks = torch.zeros(len(items), height, width)
    valid = torch.zeros(len(items), height, width, dtype=torch.bool)
    for i, (x, m, h, w) in enumerate(items):
        images[i, :, :h, :w], masks[i, :h, :w], valid[i, :h, :w] = x, m, True
    return images, masks, valid


def _loader(data: Images, batch_size: int, workers: int, order: EpochOrder, pin: bool = False) -> DataLoader:
    """Training batches in ``order``; segmentation's evaluation batches grouped by input shape."""
    common = {"num_workers": workers, "pin_memory": pin, "persistent_workers": workers > 0,
              "collate_fn": pad_batch if data.segment else None}
    if data.segment and not order.shuffle:
        return DataLoader(data, batch_sampler=data.shape_batches(batch_size), **common)
    return DataLoader(data, batch_size=batch_size, sampler=order, drop_last=order.shuffle and len(data) > batch_size,
                      **common)


def _bce_dice(logits: torch.Tensor, masks: torch.Tensor, dice: nn.Module) -> torch.Tensor:
    return 0.5 * F.binary_cross_entropy_with_logits(logits, masks) + 0.5 * dice(logits, masks)


def classifier(cfg) -> nn.Module:
    """The custom CNN (``model.name=cnn``) or the timm model ``model.name``, one logit, random init."""
    if cfg.model.name == "cnn":
        return CustomCNN(int(cfg.model.image_size))
    return timm.create_model(cfg.model.name, pretrained=False, num_classes=1, **dict(cfg.model.get("timm_kwargs") or {}))


def train_and_test(recipe: str, split: dict[str, tuple[list, list, list]], cfg, seed: int,
                   device: str = "cpu") -> BareResult:
    """Train ``recipe`` (``unet``, else a classifier of ``model.name``) with the settings of scratchlab config
    ``cfg`` on ``split`` (name -> paths, labels, mask paths) on ``device``; test the weights of the best
    validation loss. On CUDA: pinned memory, non-blocking copies, and fp16 autocast where the config asks."""
    segment = recipe == "unet"
    size, batch, workers = int(cfg.model.image_size), int(cfg.data.batch_size), int(cfg.data.num_workers)
    augment = None
    if not segment and list(cfg.data.get("augment") or {}) == EARLIER_WORK:
        augment = earlier_work_augmentation(seed)
    elif cfg.data.get("augment"):
        raise SystemExit(f"error: the bare loop implements augment=earlier_work and augment=none only, not "
                         f"{list(cfg.data.augment)}")
    sets = {name: Images(*split[name], size=size, segment=segment, augment=augment if name == "train" else None)
            for name in ("train", "val", "test")}
    orders = {name: EpochOrder(len(d), seed, shuffle=name == "train") for name, d in sets.items()}
    loaders = {name: _loader(d, batch, workers, orders[name], pin=device == "cuda")
               for name, d in sets.items()}
    torch.manual_seed(seed)  # the first draws after seeding are the initial weights
    if segment:
        net = smp.create_model(cfg.model.arch, encoder_name=cfg.model.encoder_name, encoder_weights=None,
                               classes=1, decoder_channels=list(cfg.model.decoder_channels))
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = float(cfg.model.bn_momentum)
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
        dice = smp.losses.DiceLoss("binary", from_logits=True, smooth=1.0)
    else:
        net = classifier(cfg)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)

    memory_format = torch.channels_last if cfg.model.get("channels_last") else torch.preserve_format
    net = net.to(device, memory_format=memory_format)
    amp = device == "cuda" and str(cfg.trainer.precision).startswith("16")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def loss_of(batch_items) -> tuple[torch.Tensor, int]:
        batch_items = [t.to(device, non_blocking=True) for t in batch_items]
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=amp):
            if segment:
                images, masks, _ = batch_items
                return _bce_dice(net(images).float(), masks[:, None], dice), len(images)
            images, labels = batch_items
            return F.binary_cross_entropy_with_logits(net(images)[:, 0].float(), labels.float()), len(images)

    best, best_loss, best_epoch, steps, seen = None, float("inf"), -1, 0, 0
    epoch_ends = []
    start = time.perf_counter()
    for epoch in range(int(cfg.trainer.max_epochs)):
        orders["train"].epoch = epoch
        net.train()
        for batch_items in loaders["train"]:
            loss, n = loss_of(batch_items)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            steps, seen = steps + 1, seen + (n if epoch > 0 else 0)
        net.eval()
        total, count = torch.zeros((), device=device), 0
        with torch.no_grad():
            for batch_items in loaders["val"]:
                loss, n = loss_of(batch_items)
                total, count = total + loss.detach() * n, count + n
        val_loss = float(total) / count  # the one host synchronisation of an epoch
        if val_loss < best_loss:
            best, best_loss, best_epoch = copy.deepcopy(net.state_dict()), val_loss, epoch
        epoch_ends.append(time.perf_counter() - start)
    net.load_state_dict(best)
    net.eval()
    quality = _test_quality(net, loaders["test"], segment, device)
    elapsed = epoch_ends[-1] - epoch_ends[0]
    return BareResult(quality, best_loss, seen / elapsed if elapsed > 0 else float("nan"), len(epoch_ends), steps, best_epoch)


def _test_quality(net: nn.Module, loader: DataLoader, segment: bool, device: str) -> float:
    """Accuracy at P(bad) >= 0.5, or pixel Dice at P(scratch) >= 0.5 over the images' own pixels."""
    hits = total = tp = fp = fn = 0
    with torch.no_grad():
        for batch_items in loader:
            batch_items = [t.to(device) for t in batch_items]
            if segment:
                images, masks, valid = batch_items
                pred = torch.sigmoid(net(images)[:, 0]) >= 0.5
                truth = masks > 0.5
                tp += int((pred & truth & valid).sum())
                fp += int((pred & ~truth & valid).sum())
                fn += int((~pred & truth & valid).sum())
            else:
                images, labels = batch_items
                pred = torch.sigmoid(net(images)[:, 0]) >= 0.5
                hits += int((pred == (labels > 0.5)).sum())
                total += len(labels)
    if segment:
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return hits / total
