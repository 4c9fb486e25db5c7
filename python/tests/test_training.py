"""A real training loop: the shipped policy, steering CIAO on a small Fashion-MNIST MLP
(784-64-10, batch 64, 300 steps, 16 decisions, as the policy card's held-out evaluations), must
end with a lower held-out loss than CIAO held at its initial hyperparameters, on every seed.

Needs the dataset cache: scripts/fetch-data.sh fashion-mnist (scripts/test.sh runs it)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import fashion_mnist  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return fashion_mnist.load("train"), fashion_mnist.load("t10k")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_policy_beats_fixed_initial_hyperparameters(data, seed):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {
            opt: fashion_mnist.train(opt, 300, seed, sizes=(784, 64, 10), batch=64, decisions=16, data=data)
            for opt in ("lhopt", "ciao")
        }
    finally:
        torch.set_num_threads(threads)
    steered, fixed = runs["lhopt"]["eval_loss"], runs["ciao"]["eval_loss"]
    assert steered < fixed, f"LHOPT {steered:.4f} vs CIAO at initial hyperparameters {fixed:.4f}"
    trace = runs["lhopt"]["optimizer"].trace
    assert len(trace) == 16
    assert len({d["hyper"]["lr"] for d in trace}) > 1, "the policy never changed the learning rate"
