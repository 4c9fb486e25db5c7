#!/usr/bin/env bash
# The MPI meta-training path end to end on loopback (called by scripts/test.sh; needs Open MPI,
# libclang and libtorch set up): builds `lhopt` with `--features mpi`, runs a 3-rank meta-train of
# a few updates on tiny noisy quadratics and checks that both rollout ranks contributed episodes
# and acted with policies newer than the first; that frames from a misbehaving rank
# (examples/mpi_bad_rank.rs) are logged and dropped, and its reported failure ends the job with a
# message naming it; then kills a rollout rank and later the learner
# with SIGKILL mid-run, resumes each time under a fresh mpirun, and checks that metrics.jsonl
# counts updates 1..N with no gap and no duplicate.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debug profile: shares the dependency builds (torch-sys above all) with `cargo test`.
cargo build -p lhopt-trainer --features mpi --locked --bin lhopt --example mpi_bad_rank
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/lhopt"
bad_rank="${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/mpi_bad_rank"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export LHOPT_CACHE="$tmp/cache" LHOPT_DATA="$tmp/data"
run="$tmp/run"
cat >"$tmp/tiny.toml" <<'EOF'
plot_every = 1000
[imitation]
tasks = 0
[ppo]
minibatch = 16
minibatches = 2
buffer = 64
chunk_len = 4
[rollout]
workers = 1
families = ["NoisyQuadratic"]
max_steps = 48
decisions = [4, 6]
min_interval = 8
EOF
mpi() { mpirun --allow-run-as-root --oversubscribe -np 3 "$bin" meta-train --quiet "$@"; }
fail() { echo "test-mpi: $*" >&2; exit 1; }
updates() { grep -o '"update":[0-9]*' "$run/metrics.jsonl" | cut -d: -f2; }

# Fresh run: every rollout rank sent episodes, and some acted with a policy after update 1.
mpi --config "$tmp/tiny.toml" --updates 6 --out "$run" 2>"$tmp/log" || { cat "$tmp/log"; fail "3-rank run failed"; }
for rank in 1 2; do
    line="$(grep "learner: rank $rank:" "$tmp/log")" || { cat "$tmp/log"; fail "no report of rank $rank"; }
    episodes="$(sed -E 's/.*: ([0-9]+) episodes.*/\1/' <<<"$line")"
    newest="$(sed -E 's/.*newest policy ([0-9]+).*/\1/' <<<"$line")"
    [ "$episodes" -gt 0 ] || fail "rank $rank contributed no episodes: $line"
    [ "$newest" -ge 1 ] || fail "rank $rank never acted with a new policy: $line"
    echo "rank $rank: $episodes episodes, newest policy $newest"
done
[ "$(updates | tr '\n' ' ')" = "1 2 3 4 5 6 " ] || fail "metrics after the first run: $(updates | tr '\n' ' ')"
[ -f "$run/policy.lhp" ] || fail "no policy.lhp"

# A third rank that sends a truncated frame, garbage and a frame of another version: the learner
# logs and drops each and finishes the run on rank 1's episodes.
mpirun --allow-run-as-root --oversubscribe -np 2 "$bin" meta-train --quiet --config "$tmp/tiny.toml" \
    --updates 3 --out "$tmp/bad" : -np 1 "$bad_rank" 2>"$tmp/log" || { cat "$tmp/log"; fail "a malformed frame ended the run"; }
dropped="$(grep -c "learner: dropped a message of .* bytes from rank 2" "$tmp/log")" || true
[ "$dropped" = 3 ] || { cat "$tmp/log"; fail "expected 3 dropped frames from rank 2, the log has $dropped"; }
[ "$(grep -c . "$tmp/bad/metrics.jsonl")" = 3 ] || fail "the run beside a bad rank did not reach 3 updates"
echo "3 malformed frames from rank 2 logged and dropped; the run finished:"
grep "learner: dropped" "$tmp/log"

# The bad rank then reports a failure: the learner stops the ranks and ends the job naming it;
# the checkpoint stays readable.
if mpirun --allow-run-as-root --oversubscribe -np 2 "$bin" meta-train --quiet --resume --updates 100 \
    --out "$tmp/bad" : -np 1 "$bad_rank" fail >"$tmp/log" 2>&1; then
    fail "a failed rank did not end the job"
fi
grep "MPI job: rank 2 failed: the disk is full" "$tmp/log" || { cat "$tmp/log"; fail "no message names the failed rank"; }
"$bin" export --checkpoint "$tmp/bad/checkpoint.bin" --out "$tmp/bad.lhp" || fail "the checkpoint is unreadable"

# Continues the run towards a far total in the background, SIGKILLs rank $1 once this run has
# added $2 metrics lines, and checks that the job ended (mpirun naming the killed rank). The
# threshold counts from the lines already there: an absolute one can be passed before the new
# job has started a process to kill.
kill_rank_mid_run() {
    local victim="$1" past pid="" p
    past=$(($(updates | wc -l) + $2))
    mpi --resume --updates 100000 --out "$run" >"$tmp/killed.log" 2>&1 &
    local job=$!
    until [ "$(updates | wc -l)" -gt "$past" ]; do
        kill -0 "$job" 2>/dev/null || { cat "$tmp/killed.log"; fail "the run ended before the kill"; }
        sleep 0.2
    done
    for p in $(pgrep -f "$bin meta-train"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$victim"; then pid=$p; fi
    done
    [ -n "$pid" ] || fail "no process of rank $victim"
    kill -KILL "$pid"
    if wait "$job"; then fail "the job went on after rank $victim was killed"; fi
    grep -q "process rank $victim .*signal 9" "$tmp/killed.log" || { cat "$tmp/killed.log"; fail "no message names rank $victim"; }
    echo "rank $victim killed at $(updates | wc -l) metrics lines; the job ended:"
    grep -m1 "process rank $victim .*signal 9" "$tmp/killed.log"
}
kill_rank_mid_run 2 2
kill_rank_mid_run 0 2
# A line written after the last checkpoint (killed before it) is dropped on resume and redone.
total=$(($(updates | wc -l) + 3))
mpi --resume --updates "$total" --out "$run" 2>"$tmp/log" || { cat "$tmp/log"; fail "resume failed"; }
[ "$(updates | tr '\n' ' ')" = "$(seq -s ' ' 1 "$total") " ] || fail "metrics after the resumes: $(updates | tr '\n' ' ')"
echo "metrics count updates 1..$total once each after two SIGKILLs and resumes"
