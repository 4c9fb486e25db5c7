"""Per-step cost of lhopt.torch.LHOPT against torch.optim.AdamW: an MLP 784-256-256-10, batch 128,
one CPU thread, a decision every 1 % of the run. The optimizers train copies of the model in
rounds: each round runs one block of steps of each, in alternating order, in the same process, so
that load from other processes hits them alike. Reported: the median over rounds of each
optimizer's time relative to AdamW's in the same round, in wall time and in the process's CPU
time (which leaves out the time other processes hold the CPU), and the medians of the per-block
times.

    python python/benches/overhead.py --blocks 40 --block-steps 50
"""

import argparse
import statistics
import time

import torch

import lhopt.torch


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=40, help="blocks per optimizer")
    ap.add_argument("--block-steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps per optimizer first")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))
    total = args.warmup + args.blocks * args.block_steps

    # CIAO at fixed hyperparameters separates the inner optimizer's own cost from the policy's
    # (reductions, decisions, restarts).
    models = {"adamw": mlp(), "ciao": mlp(), "lhopt": mlp()}
    for name in ("ciao", "lhopt"):
        models[name].load_state_dict(models["adamw"].state_dict())
    opts = {
        "adamw": torch.optim.AdamW(models["adamw"].parameters(), lr=1e-3),
        "ciao": lhopt.torch.CIAO(models["ciao"].parameters()),
        "lhopt": lhopt.torch.LHOPT(models["lhopt"].parameters(), total_steps=total, decisions=100),
    }
    step_time = {name: 0.0 for name in opts}
    cpu_blocks = {name: [] for name in opts}

    def run(name, steps):
        model, opt = models[name], opts[name]
        cpu = time.process_time()
        start = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            t = time.perf_counter()
            if name == "lhopt":
                opt.step(loss=loss)
            else:
                opt.step()
            step_time[name] += time.perf_counter() - t
        wall = (time.perf_counter() - start) / steps
        cpu_blocks[name].append((time.process_time() - cpu) / steps)
        return wall

    for name in opts:
        run(name, args.warmup)
    step_time = {name: 0.0 for name in opts}
    cpu_blocks = {name: [] for name in opts}
    blocks = {name: [] for name in opts}
    for b in range(args.blocks):
        order = list(opts) if b % 2 == 0 else list(reversed(opts))
        for name in order:
            blocks[name].append(run(name, args.block_steps))

    n = args.blocks * args.block_steps
    med = {name: statistics.median(v) * 1e3 for name, v in blocks.items()}
    cpu = {name: statistics.median(v) * 1e3 for name, v in cpu_blocks.items()}
    print(f"torch {torch.__version__}, 1 thread, {n} timed steps per optimizer in {args.blocks} alternating blocks")
    print(f"decisions made by LHOPT: {len(opts['lhopt'].trace)} (one every {total // 100} steps)")
    for name in opts:
        print(f"{name:6s} median {med[name]:.3f} ms/step wall (fastest block {min(blocks[name]) * 1e3:.3f}), "
              f"{cpu[name]:.3f} ms/step CPU; optimizer step alone {step_time[name] / n * 1e3:.3f} ms wall")
    def paired(times, name):
        return 100 * (statistics.median(a / b for a, b in zip(times[name], times["adamw"])) - 1)

    for name in ("ciao", "lhopt"):
        print(f"{name.upper()} per-step overhead vs AdamW, median over rounds: {paired(blocks, name):+.1f} % wall, "
              f"{paired(cpu_blocks, name):+.1f} % CPU time; of the medians: "
              f"{100 * (med[name] / med['adamw'] - 1):+.1f} % wall, {100 * (cpu[name] / cpu['adamw'] - 1):+.1f} % CPU")


if __name__ == "__main__":
    main()
