"""The torch CIAO against the core's reference CIAO on f32 slices (`lhopt_core::ciao::step`):
the same gradient sequence, with hyperparameters that change mid-run and a clip that fires,
must give the same parameters (1e-6 relative after 100 steps), the same reductions and the same
clip flags."""

import math

import pytest
import torch

import lhopt
from lhopt._lhopt import ciao_reference
from lhopt.torch import CIAO

STEPS = 100
# Relative tolerance per reduction. torch sums in a different order than the core's loops: norms
# agree to float32 rounding; dot products of nearly orthogonal vectors lose digits to
# cancellation; ln(|u| + 1e-8) magnifies the rounding of elements where u nearly cancels.
TOLERANCE = {
    "numel": 0,
    "count_v_gt_eps": 0,
    **{f: 2e-6 for f in ("grad_norm", "mhat_norm", "mhat_minus_grad_norm", "param_norm", "update_norm", "lr_p")},
    **{f: 5e-5 for f in ("grad_dot_mhat", "grad_dot_param", "grad_dot_update")},
    "sum_log_abs_update": 2e-4,
}
SHAPES = [(12, 7), (7,), (3, 12), (3,)]


def hyper_schedule():
    """Four phases, so bias corrections and EMAs see β changes (they are kept as state)."""
    base = dict(lhopt.INITIAL_HYPER)
    phases = [
        {},
        {"lr": 3e-2, "ombeta1": 0.3, "lamb_ombeta": 0.2},
        {"lr": 1e-2, "ombeta2": 0.05, "wd": 0.1, "clip_frac": 0.5, "clip_ombeta": 0.2},
        {"lr": 5e-3, "eps": 1e-3, "ombeta1": 0.02},
    ]
    out = []
    for t in range(STEPS):
        base.update(phases[t * len(phases) // STEPS])
        out.append(dict(base))
    return out


def gradients(gen):
    """Noisy gradients with occasional spikes, so the clip fires now and then."""
    seq = []
    for t in range(STEPS):
        spike = 20.0 if t % 17 == 5 else 1.0
        seq.append([torch.randn(s, generator=gen) * spike * (1 + 0.5 * math.sin(t / 7)) for s in SHAPES])
    return seq


def rel(a, b):
    return (a - b).norm().item() / b.norm().item()


@pytest.mark.parametrize("fused", [True, False], ids=["cpu-fused", "device-ops"])
def test_torch_ciao_matches_the_core_reference(fused):
    """Both ways of taking the reductions: the CPU's fused pass in the core, and the torch ops
    that other devices use (forced here on the CPU)."""
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = gradients(gen)
    hypers = hyper_schedule()

    params = [torch.nn.Parameter(p.clone()) for p in init]
    opt = CIAO(params)
    assert opt._fused_reductions
    opt._fused_reductions = fused
    torch_rows, torch_flags = [], []
    for g_t, h in zip(grads, hypers):
        opt.hyper = h
        for p, g in zip(params, g_t):
            p.grad = g.clone()
        rows, clipped = opt.update(reductions=True)
        torch_rows.append(rows)
        torch_flags.append(clipped)

    final, core_rows, core_flags = ciao_reference(
        [p.flatten().tolist() for p in init],
        [len(s) >= 2 for s in SHAPES],
        [[g.flatten().tolist() for g in g_t] for g_t in grads],
        [[h[n] for n in lhopt.HYPER_NAMES] for h in hypers],
    )

    assert core_flags == torch_flags
    assert 3 <= sum(core_flags) < STEPS, "the clip should fire on some steps, not all"
    for p, p0, c in zip(params, init, final):
        core = torch.tensor(c).reshape(p.shape)
        assert rel(p.detach(), core) <= 1e-6
        # The run must have moved the parameters well beyond the tolerance.
        assert rel(core, p0) > 1e-2
    for t, (mine, ref) in enumerate(zip(torch_rows, core_rows)):
        for i, (a, b) in enumerate(zip(mine, ref)):
            for field, x, y in zip(lhopt.REDUCTION_FIELDS, a, b):
                assert x == pytest.approx(y, rel=TOLERANCE[field], abs=1e-7), f"step {t}, tensor {i}, {field}"


def test_a_strided_gradient_takes_the_torch_ops_with_the_same_reductions():
    """The fused CPU pass reads raw memory, so a gradient that is not a plain contiguous array
    (here a transposed view) must go the torch-ops way, and give the same rows."""
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(6, 5, generator=gen)
    grad = torch.randn(5, 6, generator=gen)
    rows = []
    for strided in (False, True):
        p = torch.nn.Parameter(init.clone())
        opt = CIAO([p])
        p.grad = grad.t() if strided else grad.t().contiguous()
        assert p.grad.is_contiguous() != strided
        rows.append(opt.update(reductions=True)[0][0])
    for field, x, y in zip(lhopt.REDUCTION_FIELDS, *rows):
        assert x == pytest.approx(y, rel=TOLERANCE[field], abs=1e-7), field


def test_an_empty_parameter_tensor_gets_zero_reductions_on_both_paths():
    """An empty tensor's data pointer may be null: the fused pass must not read it."""
    rows = []
    for fused in (True, False):
        params = [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.empty(0))]
        opt = CIAO(params)
        opt._fused_reductions = fused
        params[0].grad, params[1].grad = torch.full((3, 2), 0.5), torch.empty(0)
        rows.append(opt.update(reductions=True)[0])
    for fused_row, ops_row in zip(*rows):
        for field, x, y in zip(lhopt.REDUCTION_FIELDS, fused_row, ops_row):
            assert x == pytest.approx(y, rel=TOLERANCE[field], abs=1e-7), field
    assert rows[0][1][0] == 0.0 and rows[0][1][-1] == 0.0
