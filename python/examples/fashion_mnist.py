"""Train an MLP on Fashion-MNIST with lhopt.torch.LHOPT and plot the learning rate it chose.

The data comes from the project's cache (``scripts/fetch-data.sh fashion-mnist`` fills
``${LHOPT_DATA:-~/.cache/lhopt/data}/fashion-mnist``)::

    python python/examples/fashion_mnist.py --steps 3000 --plot lr.png

``--optimizer ciao`` trains with CIAO held at its initial hyperparameters instead, and
``--optimizer adamw`` with ``torch.optim.AdamW`` (lr 1e-3), for comparison.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import time
from pathlib import Path

import torch

import lhopt
import lhopt.torch


def data_dir() -> Path:
    return Path(os.environ.get("LHOPT_DATA", Path.home() / ".cache" / "lhopt" / "data")) / "fashion-mnist"


def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [n, 784] in [0, 1] and labels as int64 [n]; split is "train" or "t10k"."""
    folder = data_dir()
    paths = [folder / f"{split}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run scripts/fetch-data.sh fashion-mnist")
    with gzip.open(paths[0]) as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise ValueError(f"{paths[0]} is not an idx3 image file")
        images = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).reshape(n, rows * cols)
    with gzip.open(paths[1]) as f:
        magic, m = struct.unpack(">II", f.read(8))
        if magic != 2049 or m != n:
            raise ValueError(f"{paths[1]} does not hold {n} labels")
        labels = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).long()
    return images.float() / 255.0, labels


ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh, "silu": torch.nn.SiLU}


def mlp(sizes: list[int], activation: str = "relu") -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(torch.nn.Linear(a, b))
    return torch.nn.Sequential(*layers)


def eval_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), y).item()


def train(
    optimizer: str,
    steps: int,
    seed: int = 0,
    sizes: tuple[int, ...] = (784, 256, 256, 10),
    batch: int = 128,
    decisions: int | None = None,
    eval_examples: int = 2000,
    activation: str = "relu",
    data=None,
    policy=None,
) -> dict:
    """One run; returns the final eval loss, the wall time and (for LHOPT) the optimizer and the
    lr it started from. ``policy``: a policy file for LHOPT (None: the shipped one)."""
    (x, y), (ex, ey) = data or (load("train"), load("t10k"))
    ex, ey = ex[:eval_examples], ey[:eval_examples]
    torch.manual_seed(seed)
    model = mlp(list(sizes), activation)
    if optimizer == "lhopt":
        opt = lhopt.torch.LHOPT(model.parameters(), total_steps=steps, decisions=decisions,
                                policy=policy, eval_fn=lambda: eval_loss(model, ex, ey))
    elif optimizer == "ciao":
        opt = lhopt.torch.CIAO(model.parameters())
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    start_lr = opt.param_groups[0]["lr"] if optimizer == "adamw" else opt.hyper["lr"]
    order = torch.Generator().manual_seed(seed)
    perm, cursor = torch.randperm(len(y), generator=order), 0
    start = time.perf_counter()
    for _ in range(steps):
        if cursor + batch > len(perm):
            perm, cursor = torch.randperm(len(y), generator=order), 0
        idx = perm[cursor : cursor + batch]
        cursor += batch
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if optimizer == "lhopt":
            opt.step(loss=loss)
        else:
            opt.step()
    return {"eval_loss": eval_loss(model, ex, ey), "seconds": time.perf_counter() - start, "optimizer": opt,
            "start_lr": start_lr}


def plot(trace: list[dict], start_lr: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [d["step"] for d in trace]
    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    # Each decision's lr holds from its step on; before the first, the one the run started at.
    lrs = [start_lr] + [d["hyper"]["lr"] for d in trace]
    ax_lr.step([0] + steps, lrs, where="post")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    loads = [d["step"] for d in trace if d["restart"]["op"] in ("load", "swap")]
    for s in loads:
        ax_lr.axvline(s, color="tab:red", alpha=0.3)
    ax_loss.plot(steps, [d["eval_loss"] for d in trace], marker=".")
    ax_loss.set_ylabel("eval loss")
    ax_loss.set_xlabel("step")
    ax_lr.set_title("lhopt.torch.LHOPT on Fashion-MNIST (red: checkpoint loads)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizer", choices=["lhopt", "ciao", "adamw"], default="lhopt")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", default="256,256", help="hidden layer widths, comma-separated")
    ap.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--decisions", type=int, help="LHOPT decisions (default: lhopt.torch.DEFAULT_DECISIONS)")
    ap.add_argument("--policy", help="LHOPT policy file (default: the shipped one)")
    ap.add_argument("--plot", help="write the lr trace as a PNG here (needs matplotlib)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = (784, *(int(w) for w in args.hidden.split(",")), 10)
    run = train(args.optimizer, args.steps, args.seed, sizes=sizes, batch=args.batch,
                decisions=args.decisions, activation=args.activation, policy=args.policy)
    print(f"{args.optimizer}: final eval loss {run['eval_loss']:.4f} after {args.steps} steps, {run['seconds']:.1f} s")
    if args.optimizer == "lhopt":
        trace = run["optimizer"].trace
        lrs = [d["hyper"]["lr"] for d in trace]
        print(f"{len(trace)} decisions; lr from {lrs[0]:.2e} to {lrs[-1]:.2e}, max {max(lrs):.2e}")
        if args.plot:
            plot(trace, run["start_lr"], args.plot)
            print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
