#!/usr/bin/env bash
# Builds the Python package (python/, PyO3 + maturin) into a throwaway virtual environment that
# sees the cached PyTorch 2.11.0, and runs its tests. Called by scripts/test.sh; runs alone too.
# Needs: python3 >= 3.9 with venv, network access to PyPI (maturin, pytest), the cached torch
# (scripts/setup-libtorch.sh) and the Fashion-MNIST cache (scripts/fetch-data.sh fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# shellcheck disable=SC1090
source <(scripts/setup-libtorch.sh --env)
torch_python="$VIRTUAL_ENV/bin/python"
torch_site=$("$torch_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
unset VIRTUAL_ENV

scripts/fetch-data.sh fashion-mnist

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A venv of the same interpreter as the cached torch, which it sees through a .pth file.
"$torch_python" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' | {
    read -r site
    echo "$torch_site" >"$site/lhopt-test-torch.pth"
}
"$py" -m pip install --quiet "maturin>=1.9,<2" "pytest>=8" numpy

cargo fmt --manifest-path python/Cargo.toml --check
PYO3_PYTHON="$py" cargo clippy --manifest-path python/Cargo.toml --locked --all-targets -- -D warnings
"$tmp/venv/bin/maturin" build --release --locked -m python/Cargo.toml -i "$py" -o "$tmp/dist"
"$py" -m pip install --quiet "$tmp"/dist/lhopt-*.whl

# The core behind its C API, the reference of the parity test.
cargo build --locked -p lhopt-capi
export LHOPT_C_LIBRARY="$repo/target/debug/liblhopt.so"
# From outside the source tree, so that `import lhopt` finds the installed wheel.
(cd "$tmp" && "$py" -m pytest -q "$repo/python/tests")
