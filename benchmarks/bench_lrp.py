"""Benchmark: TransformerLRP vs one timm forward+backward, same batch.

Model: ``timm.create_model("vit_small_patch16_224", pretrained=False)`` (random
init, ViT-S/16 shape), batch 8, float32, CPU. Both are timed in the same run,
interleaved, ``--repeats`` times each after one warm-up; the medians are
compared. The baseline is ``model(x)`` followed by
``logits.gather(1, target).sum().backward()`` (parameter gradients included,
as in training).

Peak memory is measured per workload in a fresh subprocess (Linux): after
building the model and inputs and one warm-up call, the kernel's peak-RSS
counter is reset (``echo 5 > /proc/self/clear_refs``), the workload runs once,
and the peak resident set size (``VmHWM`` in ``/proc/self/status``) minus the
resident set size just before the call is reported: the extra memory one
call needs.

Run: ``python benchmarks/bench_lrp.py [--repeats 5] [--batch 8]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time

import torch


def build(batch: int):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    x = torch.randn(batch, 3, 224, 224)
    target = torch.arange(batch) % model.num_classes
    return model, x, target


def workloads(model, x, target):
    import captum_vit as cv

    lrp = cv.TransformerLRP(model)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        logits = model(x)
        logits.gather(1, target[:, None]).sum().backward()
        model.zero_grad(set_to_none=True)

    def transformer_lrp():
        lrp.attribute(x, target=target, output="tokens")

    return {"forward_backward": forward_backward, "transformer_lrp": transformer_lrp}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(name: str, batch: int) -> None:
    model, x, target = build(batch)
    fn = workloads(model, x, target)[name]
    fn()  # warm-up: allocator pools, lazy initialisation
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (VmHWM)
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_extra_mib": (peak - before) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--memory", choices=["forward_backward", "transformer_lrp"])
    args = parser.parse_args()
    if args.memory:
        measure_memory(args.memory, args.batch)
        return
    model, x, target = build(args.batch)
    fns = workloads(model, x, target)
    times = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    mem = {}
    for name in fns:
        out = subprocess.run(
            [sys.executable, __file__, "--memory", name, "--batch", str(args.batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        mem[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"batch {args.batch}, repeats {args.repeats}"
    )
    for name in fns:
        print(
            f"{name:>18}: {med[name]:.3f} s/batch  {med[name] / args.batch:.3f} "
            f"s/image  (min {min(times[name]):.3f} s)  peak +{mem[name]:.0f} MiB"
        )
    ratio = med["transformer_lrp"] / med["forward_backward"]
    print(f"ratio TransformerLRP / (forward+backward): {ratio:.2f}x (goal <= 3x)")


if __name__ == "__main__":
    main()
