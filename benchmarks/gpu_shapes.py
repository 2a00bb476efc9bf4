"""What input shapes and batch sizes cost on a GPU: the experiment=segment_gpu U-Net (EfficientNet-B3) alone.

    python benchmarks/gpu_shapes.py            # (a)-(c) need CUDA; about 2 minutes on one H100

Prints, first (on any machine):
  (d) how many distinct network input sizes native-size batches (data.resize=pad) of the built-in printed-code
      photos bring (600 of them rendered into a temporary folder, each padded to multiples of 32), and the
      range of their longest sides;
then, with no data loading involved:
  (a) a training step (AdamW, fp16 autocast, channels-last, 16 x 256 x 256) with cuDNN autotuning off and on,
      and the first and next forward pass at three new evaluation shapes after each;
  (b) the first and next forward pass (eval) at shapes the process has not seen yet, for channels-last and
      contiguous weights, fp16 and fp32, autotuning on, and cuDNN off: the first pass is what a new input shape
      costs (native-size evaluation batches, data.resize=pad, bring one per distinct padded size and batch size);
  (c) training steps at batch 16 and 64: how far a batch of 16 leaves the GPU waiting on kernel launches.
"""
from __future__ import annotations

import sys
import tempfile
import time

import torch
from hydra.utils import instantiate

from scratchlab.builders import build_task
from scratchlab.config import compose
from scratchlab.data.io import image_info
from scratchlab.data.transforms import Preprocess


def network(channels_last: bool) -> torch.nn.Module:
    cfg = compose("train", ["experiment=segment_gpu", f"model.channels_last={str(channels_last).lower()}"])
    return build_task(cfg, ["good", "bad"], pixel_counts=(1000, 10)).cuda().net


def first_calls(name: str, net: torch.nn.Module, shapes: list[tuple[int, ...]], fp16: bool = True,
                channels_last: bool = True) -> None:
    """Milliseconds of the first and the next forward pass at each shape (each new to the process)."""
    net.eval()
    out = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
        for shape in shapes:
            z = torch.randn(*shape, device="cuda")
            if channels_last:
                z = z.contiguous(memory_format=torch.channels_last)
            torch.cuda.synchronize()
            t = time.perf_counter()
            net(z)
            torch.cuda.synchronize()
            first = time.perf_counter() - t
            t = time.perf_counter()
            net(z)
            torch.cuda.synchronize()
            out.append(f"{shape}: {first * 1000:.0f}/{(time.perf_counter() - t) * 1000:.1f} ms")
    print(f"{name}: first/next " + "; ".join(out), flush=True)


def train_steps(net: torch.nn.Module, batch: int, memory_format: torch.memory_format, steps: int = 20) -> float:
    """Seconds per training step on random 256 x 256 batches (after 3 warm-up steps)."""
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler()
    x = torch.randn(batch, 3, 256, 256, device="cuda").contiguous(memory_format=memory_format)
    y = (torch.rand(batch, 1, 256, 256, device="cuda") > 0.99).float()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def padded_sizes(count: int = 600) -> None:
    """(d) Distinct padded input sizes of ``count`` built-in printed-code photos."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose("train", ["data=text_scratch", f"data.source.count={count}", f"paths.root_dir={tmp}"])
        samples = instantiate(cfg.data.source).load().samples
        pad = Preprocess(image_size=None, resize="pad")
        shapes = [(h, w) for w, h, _ in (image_info(s.image) for s in samples)]
    longest = sorted(max(shape) for shape in shapes)
    print(f"(d) {len(samples)} built-in photos, native size padded to multiples of 32: "
          f"{len({pad.padded(*shape) for shape in shapes})} distinct input sizes; longest side "
          f"{longest[0]}-{longest[-1]} px, median {longest[len(longest) // 2]}")


def main() -> None:
    padded_sizes()
    if not torch.cuda.is_available():
        sys.exit("error: benchmarks/gpu_shapes.py measures a CUDA GPU and none is visible here")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    cl, co = network(True), network(False)
    # (a) autotuning off and on
    for bench, shapes in ((False, [(16, 3, 128, 224), (16, 3, 160, 256), (16, 3, 320, 320)]),
                          (True, [(16, 3, 128, 256), (16, 3, 160, 288), (16, 3, 320, 352)])):
        torch.backends.cudnn.benchmark = bench
        dt = train_steps(cl, 16, torch.channels_last, steps=30)
        print(f"cudnn.benchmark={bench}: train step {dt * 1000:.1f} ms, {16 / dt:.0f} images/s")
        first_calls(f"  eval, cudnn.benchmark={bench}", cl, shapes)
    # (b) what a new shape costs, per layout and precision
    torch.backends.cudnn.benchmark = False
    first_calls("channels_last fp16", cl, [(16, 3, 96, 192), (7, 3, 96, 192), (16, 3, 96, 224)])
    first_calls("contiguous fp16", co, [(16, 3, 128, 192), (7, 3, 128, 192), (16, 3, 128, 224)], channels_last=False)
    first_calls("channels_last fp32", cl, [(16, 3, 160, 192), (16, 3, 160, 224)], fp16=False)
    first_calls("contiguous fp32", co, [(16, 3, 192, 192), (16, 3, 192, 224)], fp16=False, channels_last=False)
    torch.backends.cudnn.benchmark = True
    first_calls("channels_last fp16 benchmark", cl, [(16, 3, 224, 192), (16, 3, 224, 224)])
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.enabled = False
    first_calls("channels_last fp16 no cudnn", cl, [(16, 3, 288, 192), (16, 3, 288, 224)])
    torch.backends.cudnn.enabled = True
    # (c) batch size
    for name, net, fmt in (("channels_last", cl, torch.channels_last), ("contiguous", co, torch.contiguous_format)):
        for batch in (16, 64):
            dt = train_steps(net, batch, fmt)
            print(f"train {name} batch {batch}: {dt * 1000:.1f} ms/step, {batch / dt:.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
