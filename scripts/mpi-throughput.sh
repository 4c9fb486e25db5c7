#!/usr/bin/env bash
# Meta-training throughput at 1, 2 and 3 MPI ranks on loopback (README "Meta-training across
# machines"): the built-in CPU configuration from a random policy (no warm start), one rollout
# thread per rank, UPDATES updates per run, preset PRESET. Prints decisions/s over each whole run
# (learner included) and rank 0's report: its busy time per update, each rollout rank's time per
# episode, and the bytes per update both ways. Needs Open MPI and the datasets.
#
#   scripts/mpi-throughput.sh [UPDATES=8] [PRESET=tiny] [RANKS="1 2 3"]
set -euo pipefail
cd "$(dirname "$0")/.."
updates="${1:-8}" preset="${2:-tiny}" ranks="${3:-1 2 3}"
# shellcheck disable=SC1090
source <(scripts/setup-libtorch.sh --env)
cargo build --release --locked -p lhopt-trainer --features mpi >&2
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/lhopt"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/config.toml" <<TOML
preset = "$preset"
updates = $updates
plot_every = 1000
[imitation]
tasks = 0
[rollout]
workers = 1
TOML
for np in $ranks; do
    mpirun --allow-run-as-root --oversubscribe -np "$np" "$bin" meta-train --quiet \
        --config "$tmp/config.toml" --out "$tmp/run$np" 2>"$tmp/log$np"
    last="$(tail -n1 "$tmp/run$np/metrics.jsonl")"
    decisions="$(grep -o '"decisions":[0-9]*' <<<"$last" | cut -d: -f2)"
    seconds="$(grep -o '"seconds":[0-9.]*' <<<"$last" | cut -d: -f2)"
    # From update 1 on as well: the first collection also pays for starting the processes and
    # for any tuned reference not yet in the cache.
    first="$(head -n1 "$tmp/run$np/metrics.jsonl")"
    decisions1="$(grep -o '"decisions":[0-9]*' <<<"$first" | cut -d: -f2)"
    seconds1="$(grep -o '"seconds":[0-9.]*' <<<"$first" | cut -d: -f2)"
    awk -v np="$np" -v d="$decisions" -v s="$seconds" -v d1="$decisions1" -v s1="$seconds1" \
        -v u="$updates" -v p="$preset" 'BEGIN {
            printf "%s, %d rank(s): %d updates, %d decisions in %.1f s: %.2f decisions/s; after update 1: %.2f decisions/s\n",
                p, np, u, d, s, d / s, (d - d1) / (s - s1) }'
    grep '^learner: [0-9rp]' "$tmp/log$np" | sed 's/^/    /' || true
done
