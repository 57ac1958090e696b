"""Cost of ``captum_vit.metrics.perturbation_test`` against its bare forward passes.

The test needs ``N * (1 + 9)`` forward passes (the unperturbed input and nine
perturbation steps). This script times those forward passes alone, on pre-built
tensors of the same shapes and chunking, and then the full ``perturbation_test`` on a
ViT-S/16-shaped random-init timm model (``vit_small_patch16_224``,
``pretrained=False``), in the same run, and prints the ratio (goal: <= 1.2x).

    pip install -e .   # or PYTHONPATH=. from the repository root
    python benchmarks/bench_metrics.py --n 256 --batch-size 64
    python benchmarks/bench_metrics.py --n 32 --device cpu   # small CPU check
"""

import argparse
import time

import timm
import torch

from captum_vit.metrics import perturbation_test


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="number of images")
    p.add_argument("--batch-size", type=int, default=64, help="internal_batch_size")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    p.add_argument("--token-level", action="store_true", help="remove whole patches")
    args = p.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    model = model.to(device)
    x = torch.randn(args.n, 3, 224, 224, device=device)
    attr = torch.rand(args.n, 14, 14, device=device)  # a token-grid attribution
    mean = std = (0.5, 0.5, 0.5)
    n_forward = args.n * 10
    bs = args.batch_size

    def bare():
        with torch.no_grad():
            for _ in range(10):  # unperturbed + 9 steps, same chunking as the metric
                for s in range(0, args.n, bs):
                    model(x[s : s + bs]).argmax(1)
        _sync(device)

    def metric():
        res = perturbation_test(
            model,
            x,
            attr,
            mode="positive",
            mean=mean,
            std=std,
            token_level=args.token_level,
            internal_batch_size=bs,
        )
        _sync(device)
        return res

    with torch.no_grad():  # warm-up
        model(x[:bs])
    _sync(device)

    t_bare, t_metric = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = metric()
        t_metric.append(time.perf_counter() - t0)
    tb, tm = min(t_bare), min(t_metric)
    print(
        f"device={device} torch_threads={torch.get_num_threads()} N={args.n} "
        f"internal_batch_size={bs} forward_passes={n_forward} "
        f"token_level={args.token_level}"
    )
    print(f"bare forwards      : {tb:8.2f} s  (runs: {[round(t, 2) for t in t_bare]})")
    print(
        f"perturbation_test  : {tm:8.2f} s  (runs: {[round(t, 2) for t in t_metric]})"
    )
    print(f"ratio              : {tm / tb:8.3f}x  (goal <= 1.2x)")
    print(f"mean AUC (random model, random map): {res.auc.mean().item():.4f}")


if __name__ == "__main__":
    main()
