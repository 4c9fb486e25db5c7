"""Bad inputs raise clear Python exceptions (with the core's messages) and change nothing."""

import copy
import math

import pytest
import torch

import lhopt
import lhopt.torch
from lhopt import Controller, LhoptError, NonFiniteLossError, OrderError

ROW = [100, 1.0, 0.8, 0.5, 5.0, 0.3, 1e-3, 0.4, -0.2, 0.1, 90.0, -120.0]


def controller(**kw):
    return Controller(total_steps=kw.pop("total_steps", 40), decisions=kw.pop("decisions", 4), **kw)


def unchanged(ctl, before):
    assert ctl.state_dict() == before


def advance_to_decision(ctl):
    while True:
        rows = [ROW] if ctl.wants_reductions else None
        if ctl.observe(0.5, rows) == "decision_due":
            return


@pytest.mark.parametrize(
    "policy, error, message",
    [
        (b"not a policy", LhoptError, "bad magic"),
        (lhopt.DEFAULT_POLICY[:-10], LhoptError, "truncated"),
        (lhopt.DEFAULT_POLICY[:-4] + b"\0\0\0\0", LhoptError, "corrupt"),
        (42, TypeError, "policy must be None, bytes or a path"),
        ("/nonexistent/policy.lhp", OSError, "cannot read policy file"),
    ],
)
def test_bad_policies(policy, error, message):
    with pytest.raises(error, match=message):
        Controller(policy, total_steps=10, decisions=2)


@pytest.mark.parametrize(
    "kw, error, message",
    [
        ({"total_steps": 3, "decisions": 4}, LhoptError, "total_steps must be at least decisions"),
        ({"decisions": 0}, LhoptError, "decisions must be at least 1"),
        ({"total_steps": -1}, OverflowError, None),
        ({"mode": "best"}, ValueError, "mode must be 'greedy' or 'sample'"),
        ({"mode": "sample"}, ValueError, "needs a seed"),
        ({"seed": 3}, ValueError, "only used with mode='sample'"),
        ({"initial": {"learning_rate": 0.1}}, ValueError, "unknown hyperparameter"),
        ({"initial": {"lr": math.nan}}, ValueError, "must be finite"),
        ({"nonfinite": "skip"}, ValueError, "nonfinite must be 'raise' or 'report'"),
    ],
)
def test_bad_configurations(kw, error, message):
    with pytest.raises(error, match=message):
        controller(**kw)


def test_bad_observations_change_nothing():
    ctl = controller()
    ctl.observe(0.5)
    before = ctl.state_dict()
    with pytest.raises(TypeError):
        ctl.observe("0.5")
    with pytest.raises(TypeError):
        ctl.observe(None)
    while not ctl.wants_reductions:
        ctl.observe(0.5)
    before = ctl.state_dict()
    with pytest.raises(ValueError, match="length 12"):
        ctl.observe(0.5, [ROW[:5]])
    with pytest.raises(TypeError):
        ctl.observe(0.5, [["x"] * 12])
    with pytest.raises(ValueError, match="numel must be a non-negative whole number"):
        ctl.observe(0.5, [[-1] + ROW[1:]])
    with pytest.raises(ValueError, match="numel"):
        ctl.observe(0.5, [[2.5] + ROW[1:]])
    unchanged(ctl, before)
    ctl.observe(0.5, [ROW])
    if not ctl.wants_reductions:
        before = ctl.state_dict()
        with pytest.raises(OrderError, match="not sampled"):
            ctl.observe(0.5, [ROW])
        unchanged(ctl, before)


NON_FINITE = [math.nan, math.inf, -math.inf, 1e39]  # the last overflows the core's float32


def test_non_finite_losses_raise_and_change_nothing():
    ctl = controller()
    for t in range(12):  # through sampled steps and a decision
        before = ctl.state_dict()
        for loss in NON_FINITE:
            with pytest.raises(NonFiniteLossError, match=f"loss of step {t} is .*nothing changed.*nonfinite='report'"):
                ctl.observe(loss, [ROW] if ctl.wants_reductions else None)
            with pytest.raises(NonFiniteLossError, match="not recorded"):
                ctl.check_step(loss)
            unchanged(ctl, before)
            assert ctl.step == t
        ctl.check_step(0.5)
        if ctl.observe(0.5, [ROW] if ctl.wants_reductions else None) == "decision_due":
            ctl.decide(1.0, 0.1)
    assert ctl.nonfinite == "raise"


def test_non_finite_losses_are_signals_when_reported():
    # The core's contract (and PROTOCOL.md's): a diverging run's NaN or infinite loss is what the
    # policy reacts to (it may restore a checkpoint), so with nonfinite="report" it is recorded.
    ctl = controller(nonfinite="report")
    for loss in NON_FINITE:
        ctl.check_step(loss)
        assert ctl.observe(loss) == "continue"
    assert ctl.step == len(NON_FINITE)


def test_calls_out_of_order():
    ctl = controller()
    with pytest.raises(OrderError, match="no decision is due: record step 0 first"):
        ctl.decide(1.0, 0.1)
    advance_to_decision(ctl)
    before = ctl.state_dict()
    with pytest.raises(OrderError, match="a decision is due after step 9"):
        ctl.observe(0.5)
    with pytest.raises(OrderError, match="a decision is due"):
        ctl.check_step()
    with pytest.raises(ValueError, match="param_norm must be finite"):
        ctl.decide(math.nan, 0.1)
    with pytest.raises(ValueError, match="displacement must be finite and non-negative"):
        ctl.decide(1.0, -0.1)
    with pytest.raises(TypeError):
        ctl.decide("1.0", 0.1)
    unchanged(ctl, before)
    ctl.decide(1.0, 0.1, eval_loss=None)
    for _ in range(3):
        advance_to_decision(ctl)
        ctl.decide(1.0, 0.1, 0.4)
    assert ctl.step == 40
    with pytest.raises(OrderError, match="the run has finished"):
        ctl.observe(0.5)


def test_bad_saved_states_change_nothing():
    ctl = controller()
    advance_to_decision(ctl)
    ctl.decide(1.0, 0.1)
    good = ctl.state_dict()
    other = controller()
    before = other.state_dict()
    corrupt = bytearray(good["state"])
    corrupt[len(corrupt) // 2] ^= 1
    cases = [
        ({"state": b"garbage!!!!!!"}, LhoptError, "bad magic"),
        ({"state": bytes(corrupt)}, LhoptError, "corrupt"),
        ({"state": good["state"][:-3]}, LhoptError, "truncated"),
        ({}, ValueError, "'state' entry is missing"),
        ({"state": 3}, TypeError, None),
    ]
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            other.load_state_dict(bad)
        unchanged(other, before)
    with pytest.raises(LhoptError, match="different policy"):
        Controller(_parity_policy(), total_steps=40, decisions=4).load_state_dict(good)
    with pytest.raises(LhoptError, match="run of 40 steps with 4 decisions"):
        controller(total_steps=80).load_state_dict(good)
    other.load_state_dict(good)
    assert other.state_dict() == good and other.step == 10


def _parity_policy():
    from conftest import REPO

    return (REPO / "tests" / "fixtures" / "parity_tiny.lhp").read_bytes()


def small_problem():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    return net, x, y


def snapshot(opt, net):
    return [p.detach().clone() for p in net.parameters()], copy.deepcopy(opt.state_dict())


def same(a, b):
    """Equality of nested state_dicts, tensors compared exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def assert_same(opt, net, snap):
    params, state = snap
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), params))
    assert same(opt.state_dict(), state)


def test_optimizer_bad_inputs_change_nothing():
    net, x, y = small_problem()
    opt = lhopt.torch.LHOPT(net.parameters(), total_steps=20, decisions=2)
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    snap = snapshot(opt, net)
    with pytest.raises(TypeError, match="needs the step's training loss"):
        opt.step()
    with pytest.raises(TypeError, match="not str"):
        opt.step(loss="0.3")
    with pytest.raises(ValueError, match="single number"):
        opt.step(loss=torch.ones(3))
    with pytest.raises(AttributeError, match="set by its policy"):
        opt.hyper = {"lr": 0.1}
    with pytest.raises(ValueError, match="fixed parameter list"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
    with pytest.raises(ValueError, match="'lhopt' entry is missing"):
        opt.load_state_dict(torch.optim.AdamW(net.parameters()).state_dict())
    other = lhopt.torch.LHOPT(torch.nn.Linear(4, 3).parameters(), total_steps=20, decisions=2)
    with pytest.raises(ValueError, match="different parameter list"):
        opt.load_state_dict(other.state_dict())
    assert_same(opt, net, snap)

    for _ in range(20):
        opt.step(loss=loss)
    snap = snapshot(opt, net)
    with pytest.raises(OrderError, match="the run has finished"):
        opt.step(loss=loss)
    assert_same(opt, net, snap)


def test_optimizer_non_finite_losses_raise_and_change_nothing():
    net, x, y = small_problem()
    opt = lhopt.torch.LHOPT(net.parameters(), total_steps=20, decisions=4)

    def closure(bad=None):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        return loss if bad is None else loss * bad

    for t in range(20):  # through sampled steps and decisions
        closure()
        snap = snapshot(opt, net)
        for bad in NON_FINITE:
            for call in (lambda: opt.step(loss=bad), lambda: opt.step(loss=torch.tensor(bad, dtype=torch.float64))):
                with pytest.raises(NonFiniteLossError, match=f"loss of step {t} is"):
                    call()
                assert_same(opt, net, snap)
            with pytest.raises(NonFiniteLossError, match="nothing changed"):
                opt.step(lambda: closure(bad))
            assert_same(opt, net, snap)
        opt.step(closure)
    assert opt.controller.step == 20 and len(opt.trace) == 4


def test_optimizer_reports_non_finite_losses_when_asked():
    net, x, y = small_problem()
    opt = lhopt.torch.LHOPT(net.parameters(), total_steps=20, decisions=2, nonfinite="report")
    torch.nn.functional.mse_loss(net(x), y).backward()
    params = [p.detach().clone() for p in net.parameters()]
    opt.step(loss=float("nan"))  # updates nothing, but the policy sees it
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), params))
    assert opt.controller.step == 1
    opt.step(loss=1.0)
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), params))


def test_ciao_bad_hyperparameters():
    net, _, _ = small_problem()
    opt = lhopt.torch.CIAO(net.parameters())
    with pytest.raises(ValueError, match="unknown hyperparameter 'beta1'"):
        opt.hyper = {"beta1": 0.9}
    with pytest.raises(ValueError, match="finite number"):
        opt.hyper = {"lr": float("inf")}
    assert opt.hyper == lhopt.INITIAL_HYPER
    with pytest.raises(ValueError, match="one device and dtype"):
        lhopt.torch.CIAO([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))])
