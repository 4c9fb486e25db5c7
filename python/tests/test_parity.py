"""lhopt.Controller is the core, bit for bit: the same run is replayed through the extension and
through the core's C API (`liblhopt.so`, loaded with ctypes), with the trainer's parity-fixture
policy. Every status, decision and the whole saved controller state (observer, recurrent state,
PRNG) after every decision must be identical."""

import ctypes
import math
import random
import struct
from pathlib import Path

import pytest

import lhopt

T, K = 400, 100
TENSORS = [2048, 32, 320]


class Hyper(ctypes.Structure):
    _fields_ = [(name, ctypes.c_float) for name in lhopt.HYPER_NAMES]


class Reductions(ctypes.Structure):
    _fields_ = [("numel", ctypes.c_uint64)] + [(name, ctypes.c_float) for name in lhopt.REDUCTION_FIELDS[1:]]


class Decision(ctypes.Structure):
    _fields_ = [("hyper", Hyper), ("restart", ctypes.c_int), ("restart_register", ctypes.c_uint8)]


def bind(lib):
    """The C signatures (include/lhopt.h), so ctypes passes 64-bit sizes correctly."""
    c = ctypes
    ptr = c.c_void_p
    lib.lhopt_controller_new.argtypes = [c.c_char_p, c.c_size_t, c.c_uint64, c.c_uint32, ptr, c.POINTER(c.c_uint64), c.POINTER(ptr)]
    lib.lhopt_controller_wants_reductions.argtypes = [ptr, c.POINTER(c.c_bool)]
    lib.lhopt_controller_observe.argtypes = [ptr, c.c_float, c.POINTER(Reductions), c.c_size_t, c.c_bool, c.POINTER(c.c_int)]
    lib.lhopt_controller_decide.argtypes = [ptr, c.c_float, c.c_float, c.c_float, c.POINTER(Decision)]
    lib.lhopt_controller_save_state.argtypes = [ptr, c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t)]
    lib.lhopt_controller_free.argtypes = [ptr]
    lib.lhopt_last_error.argtypes = [c.c_char_p, c.c_size_t]
    return lib


STATUS = ["continue", "decision_due", "finished"]
RESTART = ["none", "save", "load", "swap"]


class CoreRun:
    """One controller of the C API."""

    def __init__(self, lib, policy: bytes, seed):
        self.lib = lib
        self.ptr = ctypes.c_void_p()
        seed_arg = ctypes.byref(ctypes.c_uint64(seed)) if seed is not None else None
        self.check(lib.lhopt_controller_new(policy, len(policy), T, K, None, seed_arg, ctypes.byref(self.ptr)))

    def check(self, status):
        if status != 0:
            buf = ctypes.create_string_buffer(512)
            self.lib.lhopt_last_error(buf, 512)
            raise AssertionError(buf.value.decode())

    def wants_reductions(self):
        out = ctypes.c_bool()
        self.check(self.lib.lhopt_controller_wants_reductions(self.ptr, ctypes.byref(out)))
        return out.value

    def observe(self, loss, rows, clipped):
        arr = (Reductions * len(rows))(*[Reductions(int(r[0]), *r[1:]) for r in rows]) if rows else None
        status = ctypes.c_int()
        self.check(self.lib.lhopt_controller_observe(self.ptr, loss, arr, len(rows or []), clipped, ctypes.byref(status)))
        return STATUS[status.value]

    def decide(self, param_norm, displacement, eval_loss):
        out = Decision()
        eval_loss = math.nan if eval_loss is None else eval_loss
        self.check(self.lib.lhopt_controller_decide(self.ptr, param_norm, displacement, eval_loss, ctypes.byref(out)))
        register = out.restart_register if out.restart else None
        return {name: getattr(out.hyper, name) for name in lhopt.HYPER_NAMES}, RESTART[out.restart], register

    def state(self):
        buf = ctypes.create_string_buffer(1 << 16)
        written = ctypes.c_size_t()
        self.check(self.lib.lhopt_controller_save_state(self.ptr, buf, len(buf), ctypes.byref(written)))
        return buf.raw[: written.value]

    def free(self):
        self.lib.lhopt_controller_free(self.ptr)


def f32(x: float) -> float:
    """x rounded to float32."""
    return struct.unpack("f", struct.pack("f", x))[0]


def run_inputs(seed: int):
    """A synthetic run with the awkward cases: NaN and infinite losses, clipped steps, decisions
    without an eval loss. Doubles, so the extension's conversions to float32 are exercised."""
    rng = random.Random(seed)
    steps = []
    for t in range(T):
        loss = 0.1 + 2.2 / (1 + 3 * t / T) * rng.uniform(0.95, 1.05)
        if t in (37, 111):
            loss = math.nan if t == 37 else math.inf
        rows = []
        for numel in TENSORS:
            g = rng.uniform(0.1, 1.0)
            rows.append(
                [numel, g, g * rng.uniform(0.3, 0.9), g * rng.uniform(0.6, 0.9), rng.uniform(8, 14), rng.uniform(3, 6), 1e-3 * rng.uniform(1, 2), rng.uniform(-0.2, 0.6) * g, rng.uniform(-0.1, 0.1) * g, rng.uniform(-0.1, 0.4) * g, numel * rng.uniform(0.9, 1.0), numel * rng.uniform(-8, -7)]
            )
        steps.append((loss, rows, rng.random() < 0.2))
    decide = []
    for k in range(1, K + 1):
        eval_loss = None if k % 2 else 0.15 + 2 / (1 + 3 * k / K)
        decide.append((20 + 0.1 * k, 1 / (1 + 0.2 * k), eval_loss))
    return steps, decide


@pytest.mark.parametrize("seed", [None, 7], ids=["greedy", "sample"])
def test_decisions_and_state_are_the_cores_bit_for_bit(parity_policy, core_c_library, seed):
    lib = bind(ctypes.CDLL(str(core_c_library)))
    ctl = lhopt.Controller(parity_policy, total_steps=T, decisions=K, mode="greedy" if seed is None else "sample", seed=seed, nonfinite="report")
    ref = CoreRun(lib, parity_policy, seed)
    steps, decide = run_inputs(seed=3)
    decisions, ops = 0, set()
    try:
        for t, (loss, rows, clipped) in enumerate(steps):
            want = ref.wants_reductions()
            assert ctl.wants_reductions == want, f"step {t}"
            given = rows if want else None
            status = ctl.observe(loss, given, clipped)
            assert status == ref.observe(f32(loss), [[r[0]] + [f32(x) for x in r[1:]] for r in rows] if want else None, clipped), f"step {t}"
            if status == "decision_due":
                param_norm, displacement, eval_loss = decide[decisions]
                decisions += 1
                got = ctl.decide(param_norm, displacement, eval_loss)
                hyper, op, register = ref.decide(f32(param_norm), f32(displacement), None if eval_loss is None else f32(eval_loss))
                assert got["hyper"] == hyper, f"decision {decisions}"
                assert (got["restart"]["op"], got["restart"]["register"]) == (op, register)
                assert ctl.state_dict()["state"] == ref.state(), f"state after decision {decisions}"
                ops.add(op)
        assert ctl.state_dict()["state"] == ref.state()
    finally:
        ref.free()
    assert decisions == K and ctl.step == T
    # The run must have moved: a controller that ignored its inputs would otherwise pass.
    assert ctl.hyper != lhopt.INITIAL_HYPER and ops != {"none"}


def test_the_default_policy_is_bundled():
    shipped = (Path(__file__).resolve().parents[2] / "policies" / "default.lhp").read_bytes()
    assert lhopt.DEFAULT_POLICY == shipped
    ctl = lhopt.Controller(total_steps=100, decisions=10)
    from_file = lhopt.Controller(shipped, total_steps=100, decisions=10)
    assert ctl.policy_name == from_file.policy_name != ""
    assert ctl.preset == [32, 32, 32]
