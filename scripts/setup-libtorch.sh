#!/usr/bin/env bash
# Installs PyTorch 2.11.0 (the libtorch that tch 0.24 is built against) from PyPI into a cache
# outside the repository, once per machine, and prints the environment a build needs.
#
#   source <(scripts/setup-libtorch.sh --env)   # install if missing, then export the build env
#   scripts/setup-libtorch.sh                   # install if missing, print where it is
#
# The cache lives in $LHOPT_CACHE (default ~/.cache/lhopt). A second run is a no-op.
set -euo pipefail

TORCH_VERSION=2.11.0
cache="${LHOPT_CACHE:-$HOME/.cache/lhopt}"
venv="$cache/torch-$TORCH_VERSION"
py="$venv/bin/python"

say() { echo "lhopt setup: $*" >&2; }

installed() {
    [ -x "$py" ] && "$py" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null
}

if ! installed; then
    say "installing torch==$TORCH_VERSION from PyPI into $venv (about 5 GB, a few minutes, once per machine)"
    mkdir -p "$cache"
    rm -rf "$venv.partial"
    python3 -m venv "$venv.partial"
    if ! "$venv.partial/bin/python" -m pip install --quiet --no-input "torch==$TORCH_VERSION" >&2; then
        say "error: pip could not install torch==$TORCH_VERSION."
        say "       Check that PyPI is reachable and that $cache has about 6 GB free, then run this script again."
        exit 1
    fi
    # The venv is only moved into place once complete, so an interrupted install is never mistaken
    # for a finished one. venvs hard-code their path, so rebuild the launcher scripts after moving.
    rm -rf "$venv"
    mv "$venv.partial" "$venv"
    python3 -m venv --upgrade "$venv" >/dev/null
    installed || { say "error: torch installed but does not import from $venv"; exit 1; }
    say "torch==$TORCH_VERSION installed"
fi

torch_lib=$("$py" 2>/dev/null -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
if [ "${1:-}" = "--env" ]; then
    # torch-sys's LIBTORCH_USE_PYTORCH runs `python` from the active VIRTUAL_ENV.
    echo "export VIRTUAL_ENV='$venv'"
    echo "export PATH='$venv/bin':\"\$PATH\""
    echo "export LIBTORCH_USE_PYTORCH=1"
    echo "export LHOPT_TORCH_LIB='$torch_lib'"
else
    say "torch $TORCH_VERSION ready at $venv (libs: $torch_lib)"
fi
