"""PyTorch peer of the batched rows in steps.rs: K independent models of one lhopt TaskSpec trained
together with torch.func (stack_module_state + functional_call under vmap of grad_and_value).

Usage: python steps_vmap.py SPEC_JSON SECONDS K  ->  prints batched steps per wall-clock second
and per CPU second of this process (each step trains all K models; multiply by K for instance
steps). One intra-op thread; AdamW (foreach) on the stacked parameters; random data of the Rust
task's shapes, drawn per instance.
"""

import copy
import json
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from steps_torch import CELLS, Mlp, timed


class Bowl(nn.Module):
    def __init__(self, c):
        super().__init__()
        n = c["dims"]
        self.x = nn.Parameter(torch.randn(n))
        self.register_buffer("h", torch.exp(torch.linspace(0.0, -math.log(c["conditioning"]), n)))

    def forward(self, target):
        return 0.5 * (self.h * (self.x - target) ** 2).mean()


class BitRnn(nn.Module):
    def __init__(self, c):
        super().__init__()
        width = 1 if c["problem"] == "Parity" else 2
        self.rnn = CELLS[c["cell"]](width, c["hidden"], c["layers"], batch_first=True)
        self.head = nn.Linear(c["hidden"], 1)

    def forward(self, inputs):
        out, _ = self.rnn(inputs)
        return self.head(out).squeeze(-1)


def setup(variant, c, k):
    """K freshly initialised models and a maker of one step's inputs, each with a leading K."""
    if variant == "NoisyQuadratic":
        models = [Bowl(c) for _ in range(k)]
        return models, lambda: (torch.randn(k, c["dims"]) * c["noise"],)
    if variant == "Algorithmic":
        models = [BitRnn(c) for _ in range(k)]
        width = 1 if c["problem"] == "Parity" else 2
        steps = c["length"] + (0 if c["problem"] == "Parity" else 1)

        def batch():
            bits = torch.randint(0, 2, (k, c["batch"], steps, width))
            targets = torch.randint(0, 2, (k, c["batch"], steps))
            return (bits.float() * 2 - 1, targets.float())

        return models, batch
    side = 28 if c["dataset"] == "FashionMnist" else 8
    models = [Mlp(c, side) for _ in range(k)]
    pixels = torch.randint(0, 256, (600, side * side), dtype=torch.uint8)
    labels = torch.randint(0, 10, (600,))

    def batch():
        idx = torch.randint(0, 600, (k, c["batch"]))
        return (pixels[idx].float() / 255.0, labels[idx])

    return models, batch


def main():
    spec, seconds, k = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    torch.manual_seed(spec["seed"])
    ((variant, c),) = spec["config"].items()
    models, batch = setup(variant, c, k)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    if variant == "NoisyQuadratic":
        def loss(p, b, target):
            return functional_call(base, (p, b), (target,))
    elif variant == "Algorithmic":
        def loss(p, b, x, y):
            return F.binary_cross_entropy_with_logits(functional_call(base, (p, b), (x,)), y)
    else:
        def loss(p, b, x, y):
            return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads_and_losses = vmap(grad_and_value(loss), randomness="different")
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3, foreach=True)

    def step():
        grads, losses = grads_and_losses(params, buffers, *batch())
        for name, p in params.items():
            p.grad = grads[name]
        opt.step()
        return losses.tolist()

    timed(step, warmup=3, min_steps=5, seconds=seconds)


if __name__ == "__main__":
    main()
