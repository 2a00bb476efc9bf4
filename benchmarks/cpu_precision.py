"""Training-step time of scratchlab's networks in fp32 and in bf16 mixed precision (``trainer=cpu_bf16``).

    python benchmarks/cpu_precision.py

The networks, batch shapes and step are those of ``benchmarks/memory_format.py`` (channels-last weights, as
trained by default), and the segment_cpu U-Net with a ResNet-18 encoder; the bf16 step runs under
``torch.autocast(dtype=bfloat16)`` as Lightning's bf16-mixed does. ``--repeats`` pairs alternate which
precision goes first. Printed: whether this CPU has native bf16 (AMX / AVX512-BF16), the median step time of
each precision and the median of the per-pair ratios (fp32 / bf16: above 1, bf16 is faster).
"""
from __future__ import annotations

import argparse

import torch

from memory_format import NETWORKS, paired, step_seconds
from scratchlab.training import native_cpu_bf16

# A U-Net with a dense encoder: bf16 speeds up its convolutions, where MobileNetV3's depthwise ones gain nothing.
PRECISION_NETWORKS = {**NETWORKS, "U-Net, ResNet-18 encoder (128 px)": (
    ["model=unet", "model.encoder_name=resnet18", "model.head_prior=0.01"], (16, 3, 128, 128))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cpu, torch threads {torch.get_num_threads()}, native bf16 {native_cpu_bf16()}, "
          f"{args.steps} steps x {args.repeats} pairs")
    print(f"{'network':<36} {'fp32 ms':>9} {'bf16-mixed ms':>14} {'pair ratio':>11}")
    for name, (overrides, shape) in PRECISION_NETWORKS.items():
        fp32, bf16, ratio = paired(lambda bf: step_seconds(overrides, shape, True, args.steps, "cpu", bf16=bf),
                                   args.repeats)
        print(f"{name:<36} {fp32:>9.1f} {bf16:>14.1f} {ratio:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
