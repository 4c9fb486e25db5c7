"""Checkpoint registers are real copies: a load brings back the parameters, buffers and optimizer
state saved, a swap exchanges them, and later training does not alter what a register holds."""

import torch

import lhopt.torch


def setup():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = lhopt.torch.LHOPT(net.parameters(), total_steps=1000, decisions=10, buffers=net.buffers())
    x, y = torch.randn(32, 6), torch.randn(32, 2)

    def train(steps):
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.update()  # CIAO alone: the policy's own restarts stay out of this test

    return net, opt, train


def everything(net, opt):
    tensors = [t.clone() for t in [*net.parameters(), *net.buffers()]]
    for p in net.parameters():
        tensors += [opt.state[p][k].clone() for k in ("m", "v")]
    tensors.append(opt._un_ema.clone())
    return tensors, (opt._bc1, opt._un_bc), opt._rolling_max.clone()


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and a[1] == b[1] and torch.equal(a[2], b[2])


def test_save_load_swap_are_real_copies():
    net, opt, train = setup()
    train(3)
    first = everything(net, opt)
    opt._restart({"op": "save", "register": 1})
    train(4)
    second = everything(net, opt)
    assert not same(first, second)
    opt._restart({"op": "load", "register": 1})
    assert same(everything(net, opt), first)
    train(4)
    assert same(everything(net, opt), second), "training from a loaded state is deterministic"
    opt._restart({"op": "swap", "register": 1})
    assert same(everything(net, opt), first)
    opt._restart({"op": "swap", "register": 1})
    assert same(everything(net, opt), second)
    # Overwriting a register reuses its memory but keeps it a copy.
    opt._restart({"op": "save", "register": 1})
    train(2)
    opt._restart({"op": "load", "register": 1})
    assert same(everything(net, opt), second)
