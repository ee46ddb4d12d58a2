"""The CPU speed switches, side by side on the project's own backbones: one training step's time.

    .venv/bin/python benchmarks/cpu_switches.py [--rounds 15] [--threads 1] [--compile]

Per backbone (the split_digits ConvNet, the split_fmnist ConvNet on real images, CIFAR's ResNet-18 on
CIFAR-shaped random images) and per setting (float32 NCHW, channels_last, bf16 autocast, both, and with
--compile `torch.compile`): the model as `esacl.train.build` makes it for that config, one forward, backward
and SGD update on a batch of 32 from the benchmark's first task, the loss read once per segment (no host
sync per step). Settings are interleaved round by round so that a change in the machine's load hits all
of them alike; the time is the median over rounds, printed as a multiple of float32 NCHW (lower is faster).
Run it with the machine otherwise idle and an explicit thread count (a run's canonical count is 1).
"""

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from esacl.config import RunConfig, resolve
from esacl.data import Benchmark, Task
from esacl.models import build_model
from esacl.train import autocast, build, to_channels_last

SETTINGS = {  # label -> (channels_last, amp, compile)
    "fp32 NCHW": (False, False, False),
    "channels_last": (True, False, False),
    "bf16 autocast": (False, True, False),
    "bf16 + channels_last": (True, True, False),
    "torch.compile": (False, False, True),
}


def cifar_like(seed: int = 0) -> Benchmark:
    """CIFAR-10-shaped random uint8 images as a one-task benchmark (no dataset needed: the step's time
    does not depend on the pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (256, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (256,), generator=g)
    task = Task(0, list(range(10)), x, y, x[:32], y[:32])
    norm = ([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    return Benchmark("cifar-shaped", [task], 10, (3, 32, 32), "resnet18", list(range(10)), None, norm)


def model_and_batch(benchmark: str, setting: tuple, width: int | None):
    """The model as a run builds it for this setting, and a batch of 32 from its first task."""
    channels_last, amp, compile_ = setting
    cpu = torch.device("cpu")
    if benchmark == "cifar":
        bench = cifar_like()
        model = build_model(bench.backbone, bench.input_shape, bench.n_classes, width or 64, bench.norm)
        if channels_last:
            model = to_channels_last(model)
        if compile_:
            model.compile()
    else:
        cfg = RunConfig(benchmark=benchmark, channels_last=channels_last, amp=amp, compile=compile_, progress=False)
        cfg, _ = resolve(cfg)
        bench, model, *_ = build(cfg, cpu)
    task = bench.tasks[0]
    return model.train(), task.x_train[:32], task.y_train[:32], amp


def segment(model, x, y, amp: bool, steps: int) -> float:
    """Seconds for `steps` SGD steps (the loss read once, at the end)."""
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    for _ in range(steps):
        with autocast(x.device, amp):
            loss = F.cross_entropy(model(x).float(), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-0.01)
    loss.item()  # host sync once
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--benchmarks", default="split_digits,split_fmnist,cifar")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (about 30 s to compile each)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = {k: v for k, v in SETTINGS.items() if args.compile or not v[2]}
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {'yes' if 'avx512_bf16' in flags or 'amx_bf16' in flags else 'no'}, "
        f"load average before {os.getloadavg()[0]:.2f}"
    )
    print(f"{'backbone':28s}" + "".join(f"{label:>22s}" for label in settings) + "   fp32 ms/step")
    for benchmark in args.benchmarks.split(","):
        steps = 2 if benchmark == "cifar" else 20
        rounds = max(3, args.rounds // 5) if benchmark == "cifar" else args.rounds
        built = {label: model_and_batch(benchmark, s, None) for label, s in settings.items()}
        for args_ in built.values():  # warm-up (and compilation) outside the timed rounds
            segment(*args_, steps=2)
        times = {label: [] for label in settings}
        for _ in range(rounds):
            for label, args_ in built.items():
                times[label].append(segment(*args_, steps=steps) / steps)
        median = {label: statistics.median(t) for label, t in times.items()}
        base = median["fp32 NCHW"]
        name = {"cifar": "cifar ResNet-18 (width 64)"}.get(benchmark, f"{benchmark} ConvNet")
        print(
            f"{name:28s}" + "".join(f"{median[label] / base:>21.2f}x" for label in settings) + f"   {base * 1e3:12.1f}"
        )


if __name__ == "__main__":
    main()
