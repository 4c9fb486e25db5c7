"""CIAO and LHOPT as ``torch.optim`` optimizers.

:class:`CIAO` is the inner optimizer of LHOPT (Adam with an infinity-norm second moment, weight
decay inside the update, gradient clipping against a decaying rolling max of the gradient norm
and a LAMB trust ratio for tensors with two or more dimensions) at hyperparameters you set.
:class:`LHOPT` is CIAO steered by a frozen policy: two lines in a training loop::

    opt = lhopt.torch.LHOPT(model.parameters(), total_steps=len(loader) * epochs)
    ...
    loss.backward(); opt.step(loss=loss); opt.zero_grad()

Every data-dependent quantity (rolling max, clip factor, trust ratio) stays on the parameters'
device; a step reads the reductions back to the host only when the policy samples it, in one
transfer.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from ._lhopt import (
    CLIP_NORM_EPS,
    HYPER_NAMES,
    INITIAL_HYPER,
    LOG_UPDATE_DELTA,
    TRUST_FLOOR,
    TRUST_MIN_NORM,
    Controller,
    _element_reductions,
)

__all__ = ["CIAO", "LHOPT", "DEFAULT_DECISIONS"]

DEFAULT_DECISIONS = 16
"""Decisions per run when ``LHOPT`` is not told (fewer when the run is shorter)."""

Rows = List[List[float]]


def _global_norm(norms: List[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(norms))


class CIAO(torch.optim.Optimizer):
    """CIAO at fixed (or hand-set) hyperparameters.

    ``hyper`` maps the names in ``lhopt.HYPER_NAMES`` to values; missing names keep the spec's
    initial values (``lhopt.INITIAL_HYPER``). All parameters must share one device and one
    floating dtype (tested with float32). Parameter groups are accepted, but every tensor gets
    the same hyperparameters. A parameter without a gradient counts as having a zero gradient.
    Gradients are scaled in place when the clip fires. Memory: besides the two moments, an
    update buffer and a work buffer as large as the parameters (reused every step).
    """

    def __init__(self, params: Iterable[Any], hyper: Optional[Dict[str, float]] = None):
        super().__init__(params, defaults={})
        self._params: List[torch.Tensor] = [p for g in self.param_groups for p in g["params"]]
        first = self._params[0]
        for p in self._params:
            if p.device != first.device or p.dtype != first.dtype:
                raise ValueError(
                    "all parameters must share one device and dtype "
                    f"(found {first.device}/{first.dtype} and {p.device}/{p.dtype})"
                )
            if not p.is_floating_point():
                raise TypeError(f"CIAO updates floating-point parameters, not {p.dtype}")
            self.state[p] = {
                "m": torch.zeros_like(p, memory_format=torch.preserve_format),
                "v": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        self._bind_state()
        # The trust ratio applies to matrices only; it is computed for every tensor (fewer ops
        # per step than a gather and a scatter) and let through where both norms reach this
        # floor: TRUST_MIN_NORM for matrices, NaN (which no norm reaches) for the others.
        self._trust_floor = torch.tensor(
            [TRUST_MIN_NORM if p.dim() >= 2 else math.nan for p in self._params], dtype=first.dtype, device=first.device
        )
        # Every tensor takes every step with the same hyperparameters, so the bias corrections
        # are shared scalars (the core keeps one per tensor, all equal).
        self._bc1 = 0.0
        self._un_bc = 0.0
        self._un_ema = torch.zeros(len(self._params), dtype=first.dtype, device=first.device)
        self._rolling_max = torch.zeros((), dtype=first.dtype, device=first.device)
        # Scratch space (not state): the update u and a work buffer, each one flat buffer with a
        # flat row and a shaped view per parameter, so that a pass over all tensors can be a
        # single op.
        numels = [p.numel() for p in self._params]
        self._u_flat = first.new_empty(sum(numels))
        self._work_flat = first.new_empty(sum(numels))
        # Sliced, not split: views of a multi-output op could not be written in grad mode.
        starts = [sum(numels[:i]) for i in range(len(numels))]
        self._u_rows = [self._u_flat[a : a + n] for a, n in zip(starts, numels)]
        self._work_rows = [self._work_flat[a : a + n] for a, n in zip(starts, numels)]
        self._u = [x.view(p.shape) for x, p in zip(self._u_rows, self._params)]
        self._work = [x.view(p.shape) for x, p in zip(self._work_rows, self._params)]
        # On the CPU the sampled steps' element sums run as one fused pass in the core over the
        # buffers (float32, contiguous) instead of ~15 torch ops: a third of the cost, most of it
        # torch's per-op overhead. Elsewhere they stay on the device (one transfer per step).
        self._fused_reductions = first.device.type == "cpu" and first.dtype == torch.float32
        self._hyper = dict(INITIAL_HYPER)
        self.hyper = hyper or {}
        self._frozen = True

    def _bind_state(self) -> None:
        """The moments as lists, looked up once (a tensor's hash is a Python call) and again
        whenever the state is replaced."""
        self._ms = [self.state[p]["m"] for p in self._params]
        self._vs = [self.state[p]["v"] for p in self._params]

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if getattr(self, "_frozen", False):
            raise ValueError(f"{type(self).__name__} steps a fixed parameter list; create a new one")
        super().add_param_group(param_group)

    @property
    def hyper(self) -> Dict[str, float]:
        """The hyperparameters in force (a copy)."""
        return dict(self._hyper)

    @hyper.setter
    def hyper(self, values: Dict[str, float]) -> None:
        updated = dict(self._hyper)
        for name, value in values.items():
            if name not in updated:
                raise ValueError(f"unknown hyperparameter {name!r}; the names are {', '.join(HYPER_NAMES)}")
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            updated[name] = float(value)
        self._hyper = updated
        for group in self.param_groups:
            group["lr"] = updated["lr"]  # for schedulers' and loggers' eyes only

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One CIAO update from the parameters' ``.grad``; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss

    @torch.no_grad()
    def update(self, reductions: bool = False) -> Optional[Tuple[Rows, bool]]:
        """One CIAO update. With ``reductions=True`` also returns, in one device-to-host
        transfer, one row per tensor in ``lhopt.REDUCTION_FIELDS`` order and whether the clip
        fired: what ``Controller.observe`` takes."""
        return self._update(reductions)

    def _update(self, reductions: bool = False) -> Optional[Tuple[Rows, bool]]:
        # update() without its no_grad context, for the steps, which are already inside one.
        h = self._hyper
        params = self._params
        grads = []
        for p in params:
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError("CIAO does not support sparse gradients")
            grads.append(p.grad if p.grad is not None else torch.zeros_like(p))

        # Global clip, decided on the device: scaling by exactly 1 leaves gradients unchanged.
        grad_norms = torch.stack(torch._foreach_norm(grads))
        grad_norm = torch.linalg.vector_norm(grad_norms)
        self._rolling_max = torch.maximum(grad_norm, self._rolling_max * (1.0 - h["clip_ombeta"]))
        clip = self._rolling_max * h["clip_frac"] / (grad_norm + CLIP_NORM_EPS)
        scale = clip.clamp(max=1.0)
        # Reading the factor costs nothing on the CPU, and spares a pass over the gradients on
        # the steps where the clip does not fire (most of them); elsewhere it would stall the
        # device, so the scaling always runs there.
        if scale.device.type != "cpu" or scale.item() < 1.0:
            torch._foreach_mul_(grads, scale)

        ob1, ob2, eps, wd = h["ombeta1"], h["ombeta2"], h["eps"], h["wd"]
        self._bc1 = self._bc1 * (1.0 - ob1) + ob1
        ms, vs = self._ms, self._vs
        # Into persistent buffers (out=): fresh large temporaries cost page faults every step,
        # and copies before in-place ops an extra pass.
        u, work = self._u, self._work
        torch._foreach_lerp_(ms, grads, ob1)  # m ← (1 − β₁')·m + β₁'·g in one pass
        torch._foreach_mul_(vs, 1.0 - ob2)
        for g, w in zip(grads, work):
            torch.abs(g, out=w)
        torch._foreach_maximum_(vs, work)
        # u = m̂ / (v + eps) + wd·p, with m̂ = m / bc1 folded into one fused pass.
        for v, w, p, x in zip(vs, work, params, u):
            torch.add(v, eps, out=w)
            torch.mul(p, wd, out=x)
        torch._foreach_addcdiv_(u, ms, work, value=1.0 / self._bc1)
        param_norms = torch.stack(torch._foreach_norm(params))
        update_norms = torch.stack(torch._foreach_norm(u))
        lr_p = self._tensor_lrs(param_norms, update_norms)

        torch._foreach_addcmul_(params, u, (-lr_p).unbind())
        if not reductions:
            return None
        # The reductions read g, m, v and u, which the parameter update leaves as they are, and
        # the new p. ‖g‖ after the clip is the clip factor times the norm before it.
        grad_norms = grad_norms * scale
        if self._fused_reductions and self._plain_arrays(grads):
            return self._host_reductions(grads, grad_norms, param_norms, update_norms, lr_p, clip)
        grad_rows = [g.reshape(-1) for g in grads]
        sums = self._device_element_sums(grad_rows, ms, vs, eps)
        grad_dot_param = torch.stack([torch.dot(g, p.reshape(-1)) for g, p in zip(grad_rows, params)])
        columns = [grad_norms, *sums[:2], param_norms, update_norms, lr_p, sums[2], grad_dot_param, *sums[3:]]
        rows = torch.stack(columns, dim=1)
        flag = (clip < 1.0).to(rows.dtype).reshape(1)
        host = torch.cat([rows.reshape(-1), flag]).tolist()
        width = len(columns)
        out = [[float(p.numel())] + host[i * width : (i + 1) * width] for i, p in enumerate(params)]
        return out, host[-1] > 0.5

    def _plain_arrays(self, grads: List[torch.Tensor]) -> bool:
        """Whether the fused pass may read these buffers as raw memory: all plain contiguous
        float32 arrays (a loaded state or a user's tensor may be a strided or expanded view)."""
        fusable = (*grads, *self._params, *self._ms, *self._vs)
        return all(x.is_contiguous() and x.dtype == torch.float32 for x in fusable)

    def _host_reductions(self, grads, grad_norms, param_norms, update_norms, lr_p, clip) -> Tuple[Rows, bool]:
        """The rows of ``update(reductions=True)`` on the CPU, after the update: the core's fused
        pass over g, m, v, u and the new p (``_element_reductions``, which reads the buffers
        through their data pointers: all float32, contiguous and alive for the call), with the
        norms and learning rates the update computed filled in."""
        buffers = [
            (p.numel(), g.data_ptr(), m.data_ptr(), v.data_ptr(), x.data_ptr(), p.data_ptr())
            for p, g, m, v, x in zip(self._params, grads, self._ms, self._vs, self._u_rows)
        ]
        rows = _element_reductions(buffers, self._bc1, self._hyper["eps"])
        known = torch.stack([grad_norms, param_norms, update_norms, lr_p], dim=1).tolist()
        for row, (grad_norm, param_norm, update_norm, tensor_lr) in zip(rows, known):
            row[1], row[4], row[5], row[6] = grad_norm, param_norm, update_norm, tensor_lr
        return rows, clip.item() < 1.0

    def _tensor_lrs(self, param_norms, update_norms) -> torch.Tensor:
        """The learning rate of every tensor: lr, times the trust ratio for matrices."""
        h = self._hyper
        lo = h["lamb_ombeta"]
        self._un_ema.mul_(1.0 - lo).add_(update_norms, alpha=lo)
        self._un_bc = self._un_bc * (1.0 - lo) + lo
        un = self._un_ema / self._un_bc
        trusted = torch.minimum(param_norms, un) >= self._trust_floor
        ratio = (param_norms / un).clamp_(min=TRUST_FLOOR)
        return torch.where(trusted, ratio, 1.0).mul_(h["lr"])

    def _device_element_sums(self, grad_rows, ms, vs, eps) -> List[torch.Tensor]:
        """‖m̂‖, ‖m̂ − g‖, g·m̂, g·u, #(v > eps), Σ ln(|u| + δ), per tensor (g flat, u in
        self._u), with m̂ = m / bc1 never stored whole."""
        work, bc1 = self._work, self._bc1
        m_rows = [m.reshape(-1) for m in ms]
        mhat_norms = torch.stack(torch._foreach_norm(ms)) / bc1
        grad_dot_mhat = torch.stack([torch.dot(g, m) for g, m in zip(grad_rows, m_rows)]) / bc1
        for g, m, w in zip(grad_rows, m_rows, self._work_rows):
            torch.add(g, m, alpha=-1.0 / bc1, out=w)  # g − m̂, of the same norm as m̂ − g
        diff_norms = torch.stack(torch._foreach_norm(self._work_rows))
        grad_dot_update = torch.stack([torch.dot(g, x) for g, x in zip(grad_rows, self._u_rows)])
        # A count as a sum of ones in the work buffer: several times faster than count_nonzero
        # of a mask, and exact up to 2^24 per tensor (the core reports it as a float32 too).
        for v, w in zip(vs, work):
            torch.gt(v, eps, out=w)
        counts = torch.stack([w.sum() for w in work])
        torch.abs(self._u_flat, out=self._work_flat)
        self._work_flat.add_(LOG_UPDATE_DELTA).log_()
        sum_logs = torch.stack([w.sum() for w in work])
        return [mhat_norms, diff_norms, grad_dot_mhat, grad_dot_update, counts, sum_logs]

    def state_dict(self) -> Dict[str, Any]:
        sd = super().state_dict()
        sd["ciao"] = {
            "rolling_max": self._rolling_max.clone(),
            "un_ema": self._un_ema.clone(),
            "bc1": self._bc1,
            "un_bc": self._un_bc,
            "hyper": dict(self._hyper),
        }
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        extra = self._extra(state_dict, "ciao")
        hyper = extra["hyper"]
        if extra["un_ema"].shape != self._un_ema.shape:
            raise ValueError("the saved state belongs to a different parameter list")
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in ("ciao", "lhopt")})
        self._bind_state()
        self._rolling_max = extra["rolling_max"].to(self._rolling_max).clone()
        self._un_ema = extra["un_ema"].to(self._un_ema).clone()
        self._bc1, self._un_bc = float(extra["bc1"]), float(extra["un_bc"])
        CIAO.hyper.fset(self, hyper)

    @staticmethod
    def _extra(state_dict: Dict[str, Any], key: str) -> Dict[str, Any]:
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get(key), dict):
            raise ValueError(f"not a state_dict of this optimizer: the {key!r} entry is missing")
        return state_dict[key]

    # Checkpoint registers: real copies of parameters, buffers and optimizer state.

    def _live(self, buffers: List[torch.Tensor]) -> Dict[str, List[torch.Tensor]]:
        return {"params": self._params, "buffers": buffers, "m": self._ms, "v": self._vs, "un_ema": [self._un_ema]}

    @torch.no_grad()
    def _snapshot(self, buffers: List[torch.Tensor], into: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """A copy of everything a restart restores, written into ``into``'s tensors when given
        (a register being overwritten), so that steady-state restarts allocate nothing."""
        live = self._live(buffers)
        if into is None:
            snap = {k: [t.detach().clone() for t in ts] for k, ts in live.items()}
        else:
            snap = into
            for k, ts in live.items():
                if ts:
                    torch._foreach_copy_(snap[k], ts)
        snap["bc1"], snap["un_bc"] = self._bc1, self._un_bc
        snap["rolling_max"] = self._rolling_max.clone()
        return snap

    @torch.no_grad()
    def _restore(self, snap: Dict[str, Any], buffers: List[torch.Tensor]) -> None:
        for k, dst in self._live(buffers).items():
            if dst:
                torch._foreach_copy_(dst, snap[k])
        self._bc1, self._un_bc = snap["bc1"], snap["un_bc"]
        self._rolling_max = snap["rolling_max"].clone()


class LHOPT(CIAO):
    """CIAO steered by a frozen LHOPT policy (``policy``: None for the shipped one, bytes or a
    path) over a run of ``total_steps`` steps with ``decisions`` decisions (default
    ``DEFAULT_DECISIONS``, 16, where the shipped policy was trained).

    Call ``step(closure)`` or ``step(loss=loss)`` once per training step, after
    ``loss.backward()``. Every ``total_steps // decisions`` steps the policy sets new
    hyperparameters and may save, load or swap a checkpoint register: a real copy of the
    parameters, the ``buffers`` given (e.g. ``model.buffers()``, for batch-norm statistics) and
    the optimizer state. ``eval_fn()``, if given, returns an eval loss for each decision. The run
    starts where the policy was trained to start (the policy file's start lr, every other value
    at ``lhopt.INITIAL_HYPER``); ``initial`` overrides some of these. A step
    whose loss is NaN or infinite raises ``lhopt.NonFiniteLossError`` and changes nothing (the
    parameters, the optimizer state and the controller); with ``nonfinite="report"`` it updates
    nothing but is reported to the policy, which may then restore a checkpoint (the core's
    contract). ``trace`` lists every decision; ``state_dict()`` holds the controller,
    the registers and the trace, so a restored run continues exactly.
    """

    def __init__(
        self,
        params: Iterable[Any],
        total_steps: int,
        decisions: Optional[int] = None,
        policy: Any = None,
        eval_fn: Optional[Callable[[], Any]] = None,
        *,
        mode: str = "greedy",
        seed: Optional[int] = None,
        initial: Optional[Dict[str, float]] = None,
        buffers: Iterable[torch.Tensor] = (),
        nonfinite: str = "raise",
    ):
        if decisions is None:
            # Inside the shipped policy's training range (8 to 64 decisions per run,
            # policies/default.md): outside it the policy's behaviour is untested.
            decisions = max(1, min(DEFAULT_DECISIONS, int(total_steps)))
        self._controller = Controller(
            policy,
            total_steps=total_steps,
            decisions=decisions,
            mode=mode,
            seed=seed,
            initial=initial,
            nonfinite=nonfinite,
        )
        super().__init__(params, hyper=self._controller.hyper)
        self.eval_fn = eval_fn
        self._buffers = list(buffers)
        self._anchor = [p.detach().clone() for p in self._params]
        self._registers: Dict[int, Dict[str, Any]] = {}
        self._spare: Optional[Dict[str, Any]] = None  # reused by swaps
        self.trace: List[Dict[str, Any]] = []

    @property
    def controller(self) -> Controller:
        """The controller (for its ``step``, ``policy_name``, ...; ``step()`` drives it)."""
        return self._controller

    @CIAO.hyper.setter
    def hyper(self, values: Dict[str, float]) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("LHOPT's hyperparameters are set by its policy")
        CIAO.hyper.fset(self, values)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None, *, loss: Any = None) -> Any:
        """One training step: the closure's (or ``loss``'s) value is reported to the policy, the
        parameters take a CIAO update, and a decision is made when one is due. Returns the loss."""
        if (closure is None) == (loss is None):
            raise TypeError("LHOPT.step needs the step's training loss: step(closure) or step(loss=loss)")
        if closure is not None:
            self._controller.check_step()  # the closure runs only for a step that can be taken
            with torch.enable_grad():
                loss = closure()
        value = self._loss_value(loss)
        # Refuses a step out of order or a non-finite loss (unless reported) before any update.
        self._controller.check_step(value)
        report = None
        if math.isfinite(value):
            report = self._update(reductions=self._controller.wants_reductions)
        rows, clipped = report if report is not None else (None, False)
        if self._controller.observe(value, rows, clipped) == "decision_due":
            self._decide()
        return loss

    @staticmethod
    def _loss_value(loss: Any) -> float:
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError(f"the loss must be a single number, got a tensor of shape {tuple(loss.shape)}")
            return float(loss.item())
        if isinstance(loss, numbers.Real) and not isinstance(loss, bool):
            return float(loss)
        raise TypeError(f"the loss must be a number or a one-element tensor, not {type(loss).__name__}")

    def _decide(self) -> None:
        params, work = self._params, self._work
        for p, a, w in zip(params, self._anchor, work):
            torch.sub(p, a, out=w)
        norms = torch.stack([_global_norm(torch._foreach_norm(params)), _global_norm(torch._foreach_norm(work))])
        param_norm, displacement = norms.tolist()
        eval_loss = None if self.eval_fn is None else float(self.eval_fn())
        decision = self._controller.decide(param_norm, displacement, eval_loss)
        CIAO.hyper.fset(self, decision["hyper"])
        self._restart(decision["restart"])
        # After any restart: the next displacement is measured from where training resumes.
        torch._foreach_copy_(self._anchor, params)
        self.trace.append(
            {
                "step": self._controller.step,
                "hyper": decision["hyper"],
                "restart": decision["restart"],
                "warning": decision["warning"],
                "param_norm": param_norm,
                "displacement": displacement,
                "eval_loss": eval_loss,
            }
        )

    def _restart(self, restart: Dict[str, Any]) -> None:
        op, register = restart["op"], restart["register"]
        if op == "none":
            return
        if op == "save":
            self._registers[register] = self._snapshot(self._buffers, into=self._registers.get(register))
            return
        saved = self._registers.get(register)
        if saved is None:
            # The core only reports loads of registers it recorded as saved.
            raise RuntimeError(f"register {register} is empty: optimizer and controller are out of step")
        if op == "swap":
            self._spare = self._snapshot(self._buffers, into=self._spare)
            self._restore(saved, self._buffers)
            self._registers[register], self._spare = self._spare, saved
        else:
            self._restore(saved, self._buffers)

    def state_dict(self) -> Dict[str, Any]:
        sd = super().state_dict()
        sd["lhopt"] = {
            "controller": self._controller.state_dict(),
            "anchor": [a.clone() for a in self._anchor],
            "registers": copy.deepcopy(self._registers),
            "trace": copy.deepcopy(self.trace),
        }
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        extra = self._extra(state_dict, "lhopt")
        anchor = extra["anchor"]
        if len(anchor) != len(self._params) or any(a.shape != p.shape for a, p in zip(anchor, self._params)):
            raise ValueError("the saved state belongs to a different parameter list")
        previous = self._controller.state_dict()
        self._controller.load_state_dict(extra["controller"])  # checks policy and schedule
        try:
            super().load_state_dict(state_dict)
        except BaseException:
            self._controller.load_state_dict(previous)
            raise
        first = self._params[0]
        torch._foreach_copy_(self._anchor, [a.to(first) for a in anchor])
        def to_device(x):
            if isinstance(x, torch.Tensor):
                return x.to(first.device).clone()
            return [to_device(t) for t in x] if isinstance(x, list) else x

        self._registers = {int(r): {k: to_device(v) for k, v in snap.items()} for r, snap in extra["registers"].items()}
        self.trace = copy.deepcopy(extra["trace"])
