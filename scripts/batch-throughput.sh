#!/usr/bin/env bash
# Meta-training throughput with batched task instances against the unbatched configuration,
# back to back on this machine under the same load: two short runs from a random policy (no
# imitation warm start), each with its own empty reference cache, stopped after SECONDS. Prints
# each run's decisions/s and inner steps/s from its own counters (the last metrics.jsonl line:
# totals over the run's wall time, learner included), its peak RSS, and where the time went
# (summed over the metrics lines: worker seconds in episodes and in tuned references, learner
# seconds in ingest and update, the latter also as a share of the wall time; then the worker
# seconds and decisions of the configurations batching can speed up, batched or not, and the
# others': the part batching can touch and its rate).
#
#   scripts/batch-throughput.sh [SECONDS=240] [K=32] [FAMILIES=batched|all] [FIRST=unbatched|batched]
#
# FAMILIES=batched samples only the families with batched tasks (quadratic, algorithmic,
# image MLP); all adds the unbatched ones (image CNN, char LM) as meta-train does by default.
# Both runs give one reference K episodes (the unbatched one sets episodes_per_task = K), so the
# difference is the batching, not the reference amortisation. FIRST says which runs first:
# alternate it between pairs so that a load that drifts does not favour one side.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck disable=SC1090
source <(scripts/setup-libtorch.sh --env)
scripts/fetch-data.sh >&2
cargo build --release --locked -q -p lhopt-trainer

seconds="${1:-240}"
k="${2:-32}"
case "${3:-batched}" in
    batched) families='["NoisyQuadratic", "Algorithmic", "ImageMlp"]' ;;
    all) families='["NoisyQuadratic", "Algorithmic", "ImageMlp", "ImageCnn", "CharLm"]' ;;
    *) echo "FAMILIES must be batched or all, not $3" >&2; exit 2 ;;
esac
work="$(mktemp -d)"
echo "runs in $work; $seconds s each, K = $k, families $families"
case "${4:-unbatched}" in
    unbatched) order="unbatched batched" ;;
    batched) order="batched unbatched" ;;
    *) echo "FIRST must be unbatched or batched, not $4" >&2; exit 2 ;;
esac
for mode in $order; do
    instances=1
    [ "$mode" = batched ] && instances="$k"
    cat > "$work/$mode.toml" <<TOML
updates = 1000000
plot_every = 1000000
[imitation]
tasks = 0
[rollout]
families = $families
episodes_per_task = $k
batch_instances = $instances
TOML
    LHOPT_CACHE="$work/cache-$mode" /usr/bin/time -f "%M" -o "$work/$mode.rss" \
        timeout "$seconds" target/release/lhopt meta-train --quiet \
        --config "$work/$mode.toml" --out "$work/run-$mode" >/dev/null 2>"$work/$mode.log" || true
    python3 - "$work/run-$mode/metrics.jsonl" "$(tail -n1 "$work/$mode.rss")" "$mode" <<'PY'
import json, sys
path, rss_kib, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    lines = [json.loads(l) for l in open(path).read().splitlines()]
    line = lines[-1]
except (OSError, IndexError):
    sys.exit(f"{mode}: no update finished (see the run's log next to {path})")
s = line["seconds"]
print(f"{mode:9}: {line['update']} updates in {s:.0f} s: {line['decisions'] / s:.1f} decisions/s, "
      f"{line['inner_steps'] / s:.0f} inner steps/s, {line['episodes']} episodes, "
      f"peak RSS {rss_kib / 1024:.0f} MiB")
keys = ("episode_seconds", "reference_seconds", "learner_seconds", "batchable_seconds", "batchable_decisions")
total = {k: sum(l[k] for l in lines) for k in keys}
worker = total["episode_seconds"] + total["reference_seconds"]
print(f"{'':9}  worker s: episodes {total['episode_seconds']:.0f}, references "
      f"{total['reference_seconds']:.0f} ({100 * total['reference_seconds'] / max(worker, 1e-9):.0f}%); "
      f"learner {total['learner_seconds']:.0f} s ({100 * total['learner_seconds'] / s:.0f}% of the wall)")
rest_s, rest_d = worker - total["batchable_seconds"], line["decisions"] - total["batchable_decisions"]
print(f"{'':9}  batchable configurations: {total['batchable_seconds']:.0f} worker s "
      f"({100 * total['batchable_seconds'] / max(worker, 1e-9):.0f}%), {total['batchable_decisions']} decisions, "
      f"{total['batchable_decisions'] / max(total['batchable_seconds'], 1e-9):.2f} per worker s; "
      f"others: {rest_s:.0f} worker s, {rest_d} decisions, {rest_d / max(rest_s, 1e-9):.2f} per worker s")
PY
done
