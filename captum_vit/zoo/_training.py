"""What the zoo's training scripts share (private plumbing): seeded training
in warm-restart cycles on freshly drawn synthetic data, the common command
line and the writing of weights plus JSON metadata."""

import argparse
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, Subset

StateDict = Dict[str, torch.Tensor]
ModelT = TypeVar("ModelT", bound=torch.nn.Module)
#: ``loss_fn(model, batch) -> scalar loss`` of one training step.
LossFn = Callable[[ModelT, Any], torch.Tensor]
#: ``validate(model) -> message`` printed with the running loss.
ValidateFn = Callable[[ModelT], str]


def train_cycles(
    build: Callable[[], ModelT],
    make_data: Callable[[int], Dataset],
    loss_fn: LossFn[ModelT],
    seed: int,
    steps: Union[int, Sequence[int]],
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    threads: int = 1,
    workers: int = 1,
    log_every: int = 100,
    init_state: Optional[Dict[str, torch.Tensor]] = None,
    start_cycle: int = 0,
    validate: Optional[ValidateFn[ModelT]] = None,
) -> ModelT:
    r"""Build a model under ``torch.manual_seed(seed)`` and train it in one or
    more cycles (warm restarts) on ``make_data(total_samples)``.

    Each cycle builds a fresh AdamW optimiser (no weight decay on vectors and
    on parameters whose name contains ``"pos"``), warms its learning rate up
    linearly, then decays it to zero on a cosine, and reads its own part of
    the data (cycle ``c`` reads the samples after those of the cycles before
    it, in an order shuffled with seed ``seed + 1000 * c``). Gradients are
    clipped to norm 1. The global torch random state and thread count are
    restored afterwards.

    Returns:
        torch.nn.Module: the trained model, in eval mode.
    """
    steps = [int(steps)] if isinstance(steps, int) else [int(v) for v in steps]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
            if init_state is not None:
                model.load_state_dict(init_state, strict=True)
            data = make_data(sum(steps) * batch_size)
            for cycle in range(start_cycle, len(steps)):
                first = sum(steps[:cycle]) * batch_size
                part = Subset(data, range(first, first + steps[cycle] * batch_size))
                _train_cycle(
                    model,
                    part,
                    loss_fn,
                    seed + 1000 * cycle,
                    steps[cycle],
                    batch_size,
                    lr,
                    weight_decay,
                    warmup,
                    workers,
                    log_every,
                    validate,
                )
            return model.eval()
    finally:
        torch.set_num_threads(previous_threads)


def _train_cycle(
    model: ModelT,
    data: Subset,
    loss_fn: LossFn[ModelT],
    order_seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    workers: int,
    log_every: int,
    validate: Optional[ValidateFn[ModelT]],
) -> None:
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(order_seed),
        persistent_workers=False,
    )
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos" not in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    running, t0 = 0.0, time.time()
    for step, batch in enumerate(loader):
        loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
        if log_every and (step + 1) % log_every == 0:
            msg = f"step {step + 1}/{steps} loss {running:.4f}"
            if validate is not None and (step + 1) % (5 * log_every) == 0:
                msg += " " + validate(model)
                model.train()
            print(f"{msg} ({time.time() - t0:.0f} s)", flush=True)


def parse_arguments(
    argv: Optional[Sequence[str]],
    description: str,
    name: Optional[str],
    steps: Sequence[int],
    batch_size: int,
    lr: float,
    architectures: Sequence[str] = (),
) -> argparse.Namespace:
    """Parse the command-line options every zoo training script takes (the
    defaults of ``--name``, ``--steps``, ``--batch-size`` and ``--lr`` are the
    script's; ``name`` None: ``synthetic_<arch>``). A script that trains
    several ``architectures`` also takes ``--arch`` (default: the first)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "weights")
    )
    if architectures:
        parser.add_argument(
            "--arch", choices=list(architectures), default=architectures[0]
        )
    parser.add_argument(
        "--name", default=name, help=None if name else "default: synthetic_<arch>"
    )
    parser.add_argument(
        "--steps", type=int, nargs="+", default=list(steps), help="steps of each cycle"
    )
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument("--eval-seed", type=int, default=None, help="default: seed + 1")
    parser.add_argument(
        "--resume",
        default=None,
        help="safetensors weights written by the cycles before --start-cycle",
    )
    parser.add_argument("--start-cycle", type=int, default=0)
    parser.add_argument(
        "--prior-seconds",
        type=float,
        default=0.0,
        help="wall time of the resumed cycles, added to the recorded time",
    )
    return parser.parse_args(argv)


def training_record(
    args: argparse.Namespace, script: str, seconds: float
) -> Dict[str, Any]:
    """The ``training`` entry of a zoo model's metadata."""
    return {
        "script": script,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": args.threads,
        "workers": args.workers,
        "seconds": round(seconds, 1),
        "start_cycle": args.start_cycle,
        "torch": torch.__version__,
    }


def eval_seed(args: argparse.Namespace) -> int:
    """Seed of the held-out set: ``--eval-seed``, else the training seed + 1."""
    return args.seed + 1 if args.eval_seed is None else args.eval_seed


def train_from_args(
    train_fn: Callable[..., ModelT],
    args: argparse.Namespace,
    unpack: Callable[[StateDict], StateDict] = lambda state: state,
) -> Tuple[ModelT, float]:
    """Run a script's ``train`` function with the common options, resumed from
    the weights file ``--resume`` (its state dict as ``unpack`` restores it) if
    given; returns the model and the wall time in seconds (plus
    ``--prior-seconds``)."""
    init_state = None
    if args.resume is not None:
        init_state = unpack(load_file(args.resume))
    t0 = time.time()
    model = train_fn(
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
        workers=args.workers,
        init_state=init_state,
        start_cycle=args.start_cycle,
    )
    return model, time.time() - t0 + args.prior_seconds


def held_out_record(
    args: argparse.Namespace, dataset: str, metrics: Dict[str, Any]
) -> Dict[str, Any]:
    """The ``held_out`` entry of a zoo model's metadata: the held-out set
    (``split="test"``, :func:`eval_seed`, ``--eval-n``) and its metrics,
    floats rounded to 4 digits."""
    return {
        "dataset": dataset,
        "split": "test",
        "seed": eval_seed(args),
        "n": args.eval_n,
        **_rounded(metrics),
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def save(
    state: Dict[str, torch.Tensor], meta: Dict[str, Any], out: str, name: str
) -> List[str]:
    """Write ``<out>/<name>.safetensors`` and ``<out>/<name>.json``, print
    the held-out metrics and the training time; returns both paths."""
    os.makedirs(out, exist_ok=True)
    paths = [
        os.path.join(out, f"{name}.safetensors"),
        os.path.join(out, f"{name}.json"),
    ]
    save_file({k: v.detach().contiguous() for k, v in state.items()}, paths[0])
    with open(paths[1], "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta["held_out"], indent=2))
    print(f"trained in {meta['training']['seconds']:.0f} s")
    return paths
