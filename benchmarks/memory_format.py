"""Training-step time of scratchlab's networks with their weights contiguous and channels-last
(``model.channels_last``), on random fp32 batches of the shape each is trained on here.

    python benchmarks/memory_format.py                       # on the CPU
    python benchmarks/memory_format.py --device cuda --steps 50   # fp32 steps (trainer=gpu trains in 16-mixed)

Each network is built by scratchlab from its model config (random init) and trained with AdamW for
``--steps`` steps after two warm-up steps, in both layouts; ``--repeats`` pairs alternate which layout goes
first (the load of a shared machine drifts). Printed: the median step time of each layout and the median of
the per-pair ratios. Inputs come as the data loader gives them (contiguous N, 3, H, W); channels-last
weights make the convolutions run in that layout.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from scratchlab.config import compose
from scratchlab.models import build_model

# name: (model overrides, input batch shape N, 3, H, W); every network has one output (a logit or a map)
NETWORKS = {
    "cnn (model=cnn, 100 px)": (["model=cnn", "model.image_size=100"], (32, 3, 100, 100)),
    "segment_cpu U-Net (128 px crops)": (["model=unet", "model.encoder_name=tu-mobilenetv3_small_050",
                                           "model.head_prior=0.01"], (16, 3, 128, 128)),
    "resnet18 (256 x 128, padded)": (["model=timm", "model.name=resnet18"], (16, 3, 128, 256)),
    "convnext_atto (224 px)": (["model=convnext", "model.name=convnext_atto", "model.image_size=224"], (16, 3, 224, 224)),
}


def step_seconds(overrides: list[str], shape: tuple[int, int, int, int], channels_last: bool, steps: int,
                 device: str, bf16: bool = False) -> float:
    """Mean seconds of one forward + backward + AdamW step (``bf16``: under bf16 autocast, as bf16-mixed)."""
    torch.manual_seed(0)
    cfg = compose("train", [*overrides, f"model.channels_last={str(channels_last).lower()}"])
    net = build_model(cfg.model, num_outputs=1).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(*shape, device=device)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
            loss = out.float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def paired(run: Callable[[bool], float], repeats: int) -> tuple[float, float, float]:
    """Median ms of ``run(False)`` and ``run(True)`` over ``repeats`` pairs that alternate which goes first
    (a shared machine's load drifts), and the median per-pair ratio False / True."""
    times: dict[bool, list[float]] = {False: [], True: []}
    ratios: list[float] = []
    for r in range(repeats):
        pair = {}
        for flag in ((False, True) if r % 2 == 0 else (True, False)):
            pair[flag] = run(flag)
            times[flag].append(pair[flag])
        ratios.append(pair[False] / pair[True])
    return 1000 * statistics.median(times[False]), 1000 * statistics.median(times[True]), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.steps} steps x {args.repeats} pairs")
    print(f"{'network':<36} {'contiguous ms':>14} {'channels-last ms':>17} {'pair ratio':>11}")
    for name, (overrides, shape) in NETWORKS.items():
        base, last, ratio = paired(lambda layout: step_seconds(overrides, shape, layout, args.steps, args.device),
                                   args.repeats)
        print(f"{name:<36} {base:>14.1f} {last:>17.1f} {ratio:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
