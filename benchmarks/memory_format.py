"""Training-step time of scratchlab's networks with their weights in the default (contiguous) layout and
channels-last (``model.channels_last``), on random batches of each recipe's input shape.

    python benchmarks/memory_format.py                       # the CPU recipes' networks, on the CPU
    python benchmarks/memory_format.py --device cuda --steps 50

Each network is built by scratchlab from its model config (random init) and trained with AdamW for
``--steps`` steps after two warm-up steps, in both layouts; ``--repeats`` pairs alternate which layout goes
first (the load of a shared machine drifts) and the medians are printed with their ratio. Inputs come as the
data loader gives them (contiguous N, 3, H, W); channels-last weights make the convolutions use that layout.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from scratchlab.config import compose
from scratchlab.models import build_model

# name: (model overrides, num_outputs, batch size, input height, input width)
NETWORKS = {
    "cnn (model=cnn, 100 px)": (["model=cnn", "model.image_size=100"], 1, 32, 100, 100),
    "segment_cpu U-Net (128 px crops)": (["model=unet", "model.encoder_name=tu-mobilenetv3_small_050",
                                           "model.head_prior=0.01"], 1, 16, 128, 128),
    "resnet18 (256 x 128, padded)": (["model=timm", "model.name=resnet18"], 1, 16, 128, 256),
    "convnext_atto (224 px)": (["model=convnext", "model.name=convnext_atto", "model.image_size=224"], 1, 16, 224, 224),
}


def step_seconds(overrides: list[str], outputs: int, shape: tuple[int, int, int], channels_last: bool,
                 steps: int, device: str) -> float:
    """Mean seconds of one forward + backward + AdamW step."""
    torch.manual_seed(0)
    cfg = compose("train", [*overrides, f"model.channels_last={str(channels_last).lower()}"])
    net = build_model(cfg.model, num_outputs=outputs).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(shape[0], 3, shape[1], shape[2], device=device)

    def step() -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.steps} steps x {args.repeats} pairs")
    print(f"{'network':<36} {'contiguous ms':>14} {'channels-last ms':>17} {'speed-up':>9}")
    for name, (overrides, outputs, batch, h, w) in NETWORKS.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        ratios = []
        for r in range(args.repeats):
            pair = {}
            for layout in ((False, True) if r % 2 == 0 else (True, False)):
                pair[layout] = step_seconds(overrides, outputs, (batch, h, w), layout, args.steps, args.device)
                times[layout].append(pair[layout])
            ratios.append(pair[False] / pair[True])
        base, last = (1000 * statistics.median(times[k]) for k in (False, True))
        print(f"{name:<36} {base:>14.1f} {last:>17.1f} {statistics.median(ratios):>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
