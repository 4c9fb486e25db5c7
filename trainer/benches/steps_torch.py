"""Plain PyTorch twin of the trainer's task families, for the steps/s comparison in steps.rs.

Usage: python steps_torch.py SPEC_JSON SECONDS  ->  prints inner steps per wall-clock second and
per CPU second of this process.

SPEC_JSON is a serialised lhopt TaskSpec. The model and minibatch shapes match the Rust task of
that spec; data is random (content does not change the cost). One intra-op thread, AdamW with
PyTorch's defaults, a plain Python training loop.
"""

import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"Relu": nn.ReLU, "Tanh": nn.Tanh, "Gelu": nn.GELU, "Silu": nn.SiLU}
CELLS = {"Rnn": nn.RNN, "Gru": nn.GRU, "Lstm": nn.LSTM}


def norm(kind, channels, maps):
    if kind == "Batch":
        return nn.BatchNorm2d(channels) if maps else nn.BatchNorm1d(channels)
    if kind == "Layer":
        return nn.GroupNorm(1, channels) if maps else nn.LayerNorm(channels)
    return nn.Identity()


def quadratic(c):
    n = c["dims"]
    x = nn.Parameter(torch.randn(n))
    h = torch.exp(torch.linspace(0.0, -math.log(c["conditioning"]), n))

    def loss():
        target = torch.randn(n) * c["noise"]
        return 0.5 * (h * (x - target) ** 2).mean()

    return [x], loss


def algorithmic(c):
    width = 1 if c["problem"] == "Parity" else 2
    rnn = CELLS[c["cell"]](width, c["hidden"], c["layers"], batch_first=True)
    head = nn.Linear(c["hidden"], 1)
    b, length = c["batch"], c["length"]

    def loss():
        if c["problem"] == "Parity":
            bits = torch.randint(0, 2, (b, length))
            targets = bits.cumsum(1) % 2
            inputs = (bits * 2 - 1).float().unsqueeze(-1)
        else:
            a = torch.randint(0, 2, (b, length + 1))
            a2 = torch.randint(0, 2, (b, length + 1))
            a[:, -1] = 0
            a2[:, -1] = 0
            weights = 2 ** torch.arange(length + 1)
            total = (a * weights).sum(1) + (a2 * weights).sum(1)
            targets = (total.unsqueeze(1) // weights) % 2
            inputs = torch.stack([a, a2], -1).float() * 2 - 1
        out, _ = rnn(inputs)
        return F.binary_cross_entropy_with_logits(head(out).squeeze(-1), targets.float())

    return list(rnn.parameters()) + list(head.parameters()), loss


class Mlp(nn.Module):
    def __init__(self, c, side):
        super().__init__()
        arch = c["arch"]["Mlp"]
        width, act, p = arch["width"], ACTIVATIONS[c["activation"]], c["dropout"]
        layers, inputs = [], side * side
        for i in range(arch["hidden_layers"]):
            if i > 0 and p > 0:
                layers.append(nn.Dropout(p))
            layers += [nn.Linear(inputs, width), norm(c["norm"], width, False), act()]
            inputs = width
        if p > 0:
            layers.append(nn.Dropout(p))
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Cnn(nn.Module):
    def __init__(self, c, side):
        super().__init__()
        arch = c["arch"]["Cnn"]
        ch, act = arch["channels"], ACTIVATIONS[c["activation"]]
        layers, inputs, size = [], 1, side
        for _ in range(arch["conv_layers"]):
            layers += [nn.Conv2d(inputs, ch, 3, padding=1), norm(c["norm"], ch, True), act()]
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            inputs = ch
        layers.append(nn.Flatten())
        if c["dropout"] > 0:
            layers.append(nn.Dropout(c["dropout"]))
        layers.append(nn.Linear(ch * size * size, 10))
        self.net = nn.Sequential(*layers)
        self.side = side

    def forward(self, x):
        return self.net(x.view(-1, 1, self.side, self.side))


def image(c):
    side, top = (28, 255.0) if c["dataset"] == "FashionMnist" else (8, 16.0)
    model = (Mlp if "Mlp" in c["arch"] else Cnn)(c, side)
    pixels = torch.randint(0, int(top) + 1, (600, side * side), dtype=torch.uint8)
    labels = torch.randint(0, 10, (600,))
    state = {"order": torch.empty(0, dtype=torch.long), "cursor": 0}

    def loss():
        b = c["batch"]
        if state["cursor"] + b > len(state["order"]):
            state["order"], state["cursor"] = torch.randperm(600), 0
        idx = state["order"][state["cursor"] : state["cursor"] + b]
        state["cursor"] += b
        x = pixels.index_select(0, idx).float() / top
        return F.cross_entropy(model(x), labels.index_select(0, idx))

    return list(model.parameters()), loss


def text(c):
    emb = nn.Embedding(c["vocab"] + 2, c["embedding"])
    rnn = CELLS[c["cell"]](c["embedding"], c["hidden"], 1, batch_first=True)
    head = nn.Linear(c["hidden"], 1)

    def loss():
        tokens = torch.randint(0, c["vocab"] + 2, (c["batch"], c["bptt"]))
        labels = torch.randint(0, 2, (c["batch"],)).float()
        out, _ = rnn(emb(tokens))
        return F.binary_cross_entropy_with_logits(head(out[:, -1]).squeeze(-1), labels)

    return [*emb.parameters(), *rnn.parameters(), *head.parameters()], loss


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.heads = heads

    def forward(self, h):
        b, t, w = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(w, dim=2)
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(attn.transpose(1, 2).reshape(b, t, w))
        return h + self.out(F.gelu(self.fc(self.ln2(h))))


class Lm(nn.Module):
    def __init__(self, c):
        super().__init__()
        w = c["width"]
        self.tokens = nn.Embedding(256, w)
        self.positions = nn.Parameter(torch.randn(c["bptt"], w) * 0.02)
        self.blocks = nn.ModuleList(Block(w, c["heads"]) for _ in range(c["layers"]))
        self.ln_f, self.head = nn.LayerNorm(w), nn.Linear(w, 256)

    def forward(self, x):
        h = self.tokens(x) + self.positions[: x.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def lm(c):
    model = Lm(c)
    corpus = torch.randint(0, 256, (27_000,), dtype=torch.uint8)
    window = c["bptt"] + 1
    offsets = torch.arange(window)

    def loss():
        starts = torch.randint(0, len(corpus) - window + 1, (c["batch"], 1))
        batch = corpus.take(starts + offsets).long()
        logits = model(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))

    return list(model.parameters()), loss


class NeuMf(nn.Module):
    def __init__(self, c, users, items):
        super().__init__()
        k = c["factors"]
        self.gu, self.gi = nn.Embedding(users, k), nn.Embedding(items, k)
        self.mlp = None
        fused = k
        if c["model"] == "NeuMf":
            self.mu, self.mi = nn.Embedding(users, k), nn.Embedding(items, k)
            layers, width = [], 2 * k
            for _ in range(c["mlp_layers"]):
                layers += [nn.Linear(width, max(width // 2, 1)), nn.ReLU()]
                width = max(width // 2, 1)
            self.mlp = nn.Sequential(*layers)
            fused = k + width
        self.out = nn.Linear(fused, 1)

    def forward(self, u, i):
        f = self.gu(u) * self.gi(i)
        if self.mlp is not None:
            f = torch.cat([f, self.mlp(torch.cat([self.mu(u), self.mi(i)], -1))], -1)
        return self.out(f).squeeze(-1)


def ncf(c):
    users, items = 120, 200
    model = NeuMf(c, users, items)
    per = 1 + c["negatives"]

    def loss():
        b = c["batch"]
        u = torch.randint(0, users, (b, 1)).expand(b, per).reshape(-1)
        i = torch.randint(0, items, (b * per,))
        y = torch.zeros(b, per)
        y[:, 0] = 1
        return F.binary_cross_entropy_with_logits(model(u, i), y.reshape(-1))

    return list(model.parameters()), loss


FAMILIES = {
    "NoisyQuadratic": quadratic,
    "Algorithmic": algorithmic,
    "Image": image,
    "TextRnn": text,
    "CharLm": lm,
    "Ncf": ncf,
}


def main():
    spec, seconds = json.loads(sys.argv[1]), float(sys.argv[2])
    torch.set_num_threads(1)
    torch.manual_seed(spec["seed"])
    (variant, config), = spec["config"].items()
    params, loss_fn = FAMILIES[variant](config)
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.item()

    timed(step, warmup=5, min_steps=20, seconds=seconds)


def timed(step, warmup, min_steps, seconds):
    """Calls `step` `warmup` times untimed, then for at least `min_steps` calls and `seconds`;
    prints calls per wall second and per CPU second (what the Rust bench reads back)."""
    for _ in range(warmup):
        step()
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while steps < min_steps or time.perf_counter() - start < seconds:
        step()
        steps += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(steps / wall, steps / cpu)


if __name__ == "__main__":
    main()
