#!/usr/bin/env bash
# Runs every test of the project, from a clean clone, on a machine with only the Rust toolchain:
# installs what is missing (thumb target, qemu-system-arm, Open MPI, the datasets and PyTorch 2.11.0
# in caches outside the repo), then host tests for the whole workspace (trainer included), a 3-rank
# MPI meta-train (scripts/test-mpi.sh), the no_std thumb build, the firmware's no-alloc/no-panic
# link check and its run under QEMU, the Python package (built with maturin into a throwaway venv),
# and formatting/lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain: thumbv7em-none-eabihf target and qemu-system-arm"
rustup target list --installed | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
if ! command -v qemu-system-arm >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq qemu-system-arm >/dev/null || { apt-get update -qq && apt-get install -y -qq qemu-system-arm >/dev/null; }
    else
        echo "qemu-system-arm is missing: install it (Debian: sudo apt-get install qemu-system-arm)" >&2
        exit 1
    fi
fi

step "Open MPI and libclang for the trainer's mpi feature"
if ! { command -v mpirun && command -v mpicc && ldconfig -p | grep 'libclang\(-[0-9.]*\)\?\.so'; } >/dev/null; then
    mpi_packages=(openmpi-bin libopenmpi-dev libclang-dev)
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq "${mpi_packages[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${mpi_packages[@]}" >/dev/null; }
    else
        echo "Open MPI is missing: install it (Debian: sudo apt-get install ${mpi_packages[*]})" >&2
        exit 1
    fi
fi

step "datasets (sha256-pinned, cached outside the repo; a no-op once fetched)"
scripts/fetch-data.sh

step "libtorch (PyTorch 2.11.0, cached outside the repo)"
# shellcheck disable=SC1090
source <(scripts/setup-libtorch.sh --env)

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p lhopt-trainer --features mpi --all-targets --locked -- -D warnings

# Includes tests/tests/firmware.rs: the Cortex-M4F firmware built with panic-never (links only
# without a reachable panic or an allocator) and run under QEMU against the host's decisions.
step "host tests: every crate, the trainer included, and the firmware under QEMU"
cargo test --workspace --locked

# .cargo/config.toml builds for x86-64-v3; crates that embed lhopt-core get the baseline target
# unless they choose otherwise, so the core and the bit-for-bit firmware comparison run there too.
step "baseline x86-64 build (no AVX2): the core's tests and the firmware comparison"
RUSTFLAGS= CARGO_TARGET_DIR=target/baseline cargo test --locked -p lhopt-core -p lhopt-tests

# Ignored in plain `cargo test` (it needs the downloads above); here the data is always there.
step "the real datasets load with their published shapes"
cargo test -p lhopt-data --locked --test real_cache -- --ignored real_datasets_load_with_their_published_shapes

step "meta-training on 3 MPI ranks (loopback): every rank contributes, SIGKILLs resume"
scripts/test-mpi.sh

step "Python package: wheel into a throwaway venv with the cached torch, then pytest"
scripts/test-python.sh

step "no_std core for Cortex-M4F"
cargo build -p lhopt-core --target thumbv7em-none-eabihf --locked

step "all tests passed"
