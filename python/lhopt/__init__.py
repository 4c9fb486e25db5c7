"""LHOPT: a frozen learned policy that steers the hyperparameters of a training run.

- :class:`Controller` is the core controller (Rust, no dependencies): feed it each step's loss
  and, on sampled steps, per-tensor reductions; it decides new hyperparameters and checkpoint
  restarts every ``total_steps // decisions`` steps.
- :class:`lhopt.torch.LHOPT` (needs PyTorch) is a ``torch.optim.Optimizer`` that runs the inner
  optimizer CIAO and steers itself with a :class:`Controller`.

The shipped policy (``DEFAULT_POLICY``) is used unless another is given.
"""

from importlib.metadata import PackageNotFoundError, version

from ._lhopt import (
    DEFAULT_POLICY,
    HYPER_NAMES,
    INITIAL_HYPER,
    REDUCTION_FIELDS,
    Controller,
    LhoptError,
    NonFiniteLossError,
    OrderError,
)

try:
    __version__ = version("lhopt")
except PackageNotFoundError:  # imported from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_POLICY",
    "HYPER_NAMES",
    "INITIAL_HYPER",
    "REDUCTION_FIELDS",
    "Controller",
    "LhoptError",
    "NonFiniteLossError",
    "OrderError",
]
