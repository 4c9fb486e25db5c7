"""Type stubs of the compiled extension (src/lib.rs)."""

import os
from typing import Dict, List, Literal, Optional, Sequence, Tuple, TypedDict, Union

DEFAULT_POLICY: bytes
"""The shipped policy file (policies/default.lhp), used when no policy is given."""
HYPER_NAMES: List[str]
"""The eight hyperparameters of CIAO, in the core's order."""
REDUCTION_FIELDS: List[str]
"""The twelve numbers of one tensor's reductions, in the order ``Controller.observe`` takes."""
INITIAL_HYPER: Dict[str, float]
"""The spec's initial hyperparameters."""
CLIP_NORM_EPS: float
TRUST_MIN_NORM: float
TRUST_FLOOR: float
LOG_UPDATE_DELTA: float

class LhoptError(ValueError):
    """A policy file, saved state or run configuration the core rejected."""

class NonFiniteLossError(ValueError):
    """A NaN or infinite training loss, refused by a controller made with ``nonfinite="raise"``
    (the default); the step was not recorded and nothing changed."""

class OrderError(RuntimeError):
    """A call made out of order; it had no effect."""

class Restart(TypedDict):
    op: Literal["none", "save", "load", "swap"]
    register: Optional[int]

class Decision(TypedDict):
    hyper: Dict[str, float]
    restart: Restart
    # Set when the policy's state stopped being finite: the hyperparameters were held, no
    # restart was asked for, and the run goes on.
    warning: Optional[str]

class StateDict(TypedDict):
    state: bytes

Policy = Union[None, bytes, bytearray, str, "os.PathLike[str]"]

class Controller:
    """A frozen LHOPT policy steering one run of ``total_steps`` steps, with a decision every
    ``total_steps // decisions`` steps. ``policy``: None (the shipped one), bytes or a path.
    ``mode="sample"`` samples actions with ``seed`` instead of taking the most likely ones.
    The run starts where the policy was trained to start (``INITIAL_HYPER`` at the policy
    file's start lr); ``initial`` overrides some of these. ``nonfinite``: what ``observe``
    does with a NaN or infinite loss, raise ``NonFiniteLossError`` or report it to the policy."""

    def __init__(
        self,
        policy: Policy = None,
        *,
        total_steps: int,
        decisions: int,
        mode: Literal["greedy", "sample"] = "greedy",
        seed: Optional[int] = None,
        initial: Optional[Dict[str, float]] = None,
        nonfinite: Literal["raise", "report"] = "raise",
    ) -> None: ...
    def observe(
        self, loss: float, reductions: Optional[Sequence[Sequence[float]]] = None, clipped: bool = False
    ) -> Literal["continue", "decision_due", "finished"]:
        """Records one step's training loss and, on sampled steps, one row of
        ``REDUCTION_FIELDS`` per tensor and the clip flag. A loss that is NaN or infinite as a
        float32 raises ``NonFiniteLossError`` and records nothing, unless ``nonfinite="report"``."""
    def check_step(self, loss: Optional[float] = None) -> None:
        """Raises OrderError unless ``observe`` would accept a step now and, given the step's
        loss, ``NonFiniteLossError`` where ``observe`` would refuse it; changes nothing."""
    def decide(self, param_norm: float, displacement: float, eval_loss: Optional[float] = None) -> Decision:
        """Makes the decision ``observe`` announced."""
    @property
    def hyper(self) -> Dict[str, float]: ...
    @property
    def wants_reductions(self) -> bool:
        """Whether the next step should pass its reductions."""
    @property
    def step(self) -> int:
        """Steps recorded so far."""
    @property
    def total_steps(self) -> int: ...
    @property
    def decisions(self) -> int: ...
    @property
    def nonfinite(self) -> Literal["raise", "report"]: ...
    @property
    def preset(self) -> List[int]:
        """The policy's [pre, hidden, post] layer sizes."""
    @property
    def policy_name(self) -> str: ...
    @property
    def policy_card(self) -> str: ...
    @property
    def feature_set(self) -> int: ...
    def state_dict(self) -> StateDict:
        """The whole run state; restore it into a controller with the same policy and schedule."""
    def load_state_dict(self, state_dict: StateDict) -> None:
        """Restores a ``state_dict()``; on error nothing changes."""

def ciao_reference(
    params: List[List[float]],
    is_matrix: List[bool],
    grads: List[List[List[float]]],
    hypers: List[Sequence[float]],
) -> Tuple[List[List[float]], List[List[List[float]]], List[bool]]:
    """The core's reference CIAO on float32 slices over a gradient sequence (for testing other
    implementations): final parameters, each step's reduction rows, each step's clip flag."""

def _element_reductions(
    tensors: List[Tuple[int, int, int, int, int, int]], bc1: float, eps: float
) -> List[List[float]]:
    """Private, for ``lhopt.torch``: per ``(numel, grad, m, v, update, param)`` of data pointers
    of live contiguous float32 CPU tensors, a row in ``REDUCTION_FIELDS`` order from the core's
    fused pass, with grad_norm, param_norm, update_norm and lr_p at 0 for the caller to fill in.
    Wrong pointers crash the interpreter."""
