#!/usr/bin/env bash
# Re-measures reports/kong-curves: Kong's documented "RPS with IPC count per request" curves,
# through HTTP (`loadgen sweep --via http`, the bench plugin behind `mock-kong proxy`).
#
# Each sweep measures its curves with --interleave: the five call counts of a curve are prepared
# together and measured round by round (ROUNDS rounds, one short trial of each per round), so a
# slow spell of a shared machine hits every call count of the curve alike, and summary.md compares
# the curves with Kong's trial by trial ("paired by trial"). The sweep is run REPS times (every
# server started afresh each time: two runs of one server can differ for their whole lifetime)
# and the runs are merged (trial i of every point stays paired).
#
# usage: scripts/kong-curves.sh [OUT_DIR]        (default: reports/kong-curves)
# env:   REPS         sweeps merged (default 2)
#        ROUNDS       rounds (trials per point) of each sweep (default 15)
#        CONCURRENCY  keep-alive connections, comma-separated (default 1,8,16)
#        PEERS        peers of peers.toml (default go,python,js)
#        CALLS        PDK calls per request (default 0,1,5,10,30: the points Kong's docs are read at)
#        DURATION     measured window per trial (default 500ms; warm-up 200ms)
#        MULTICORE    proxy workers of the multicore variant at 30 calls (default 2; 0: none)
# The first sweep also measures the transport and HTTP floors. Takes about REPS x 15 min with
# the defaults. Needs the peers: bash scripts/install-peers.sh.
# Exit status: that of the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-reports/kong-curves}
REPS=${REPS:-2}
ROUNDS=${ROUNDS:-15}
CONCURRENCY=${CONCURRENCY:-1,8,16}
PEERS=${PEERS:-go,python,js}
CALLS=${CALLS:-0,1,5,10,30}
DURATION=${DURATION:-500ms}
MULTICORE=${MULTICORE:-2}

bash scripts/install-peers.sh --check --only "$PEERS" >/dev/null 2>&1 || {
    echo "kong-curves: the peers are not installed; run: bash scripts/install-peers.sh" >&2
    exit 3
}
cargo build --release --bins -q
LG=target/release/loadgen
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

multicore=()
if [ "$MULTICORE" != 0 ]; then multicore=(--multicore "$MULTICORE"); fi
runs=()
for i in $(seq 1 "$REPS"); do
    floors=--no-floor
    if [ "$i" = 1 ]; then floors=; fi
    echo "kong-curves: sweep $i of $REPS (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
    "$LG" sweep --via http --peer "$PEERS" --reference --calls "$CALLS" \
        --concurrency "$CONCURRENCY" "${multicore[@]}" --interleave --duration "$DURATION" \
        --warmup 200ms --trials "$ROUNDS" $floors --out "$work/rep$i" >"$work/rep$i.log" 2>&1 || {
        echo "kong-curves: sweep $i failed; its output:" >&2
        tail -20 "$work/rep$i.log" >&2
        exit 1
    }
    runs+=("$work/rep$i")
done
mkdir -p "$OUT"
"$LG" baseline merge "${runs[@]}" --out "$OUT/results.json"
# The sweeps ran in a temporary directory: keep this machine's paths out of the report.
sed -i "s#--out $work/rep[0-9]*#--out DIR#g" "$OUT/results.json"
"$LG" plot "$OUT/results.json"
echo "kong-curves: wrote $OUT (summary.md, results.json, plots)" >&2
