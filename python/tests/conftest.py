"""Shared fixtures: the repository's files and the core's C library as a reference."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def parity_policy() -> bytes:
    """The trainer's exported Tiny policy of the parity fixture (tests/fixtures/parity_tiny.lhp)."""
    return (REPO / "tests" / "fixtures" / "parity_tiny.lhp").read_bytes()


@pytest.fixture(scope="session")
def register_policy() -> bytes:
    """A policy that uses the checkpoint registers (policies/v1.lhp saves, loads and swaps; the
    shipped default holds them), for tests of what restarts do."""
    return (REPO / "policies" / "v1.lhp").read_bytes()


@pytest.fixture(scope="session")
def core_c_library() -> Path:
    """The core behind its C API (`liblhopt.so` of lhopt-capi): $LHOPT_C_LIBRARY, or built here."""
    given = os.environ.get("LHOPT_C_LIBRARY")
    if given:
        return Path(given)
    subprocess.run(["cargo", "build", "--quiet", "--locked", "-p", "lhopt-capi"], cwd=REPO, check=True)
    return REPO / "target" / "debug" / "liblhopt.so"
