#!/usr/bin/env bash
# The main job on the built-in reference server (the README's first quick-start command):
#   1. the conformance report of the Rust reference server, in both wire protocols;
#   2. the curves: requests/s and latency against PDK calls per request, with the raw
#      Unix-socket floor measured in the same run, as plots, CSV and a summary.
# Everything lands in target/main-job/ (or the directory given as the first argument).
# Needs only cargo: no peer runtimes. For the real Go/Python/JS servers see reports/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/main-job}
mkdir -p "$out"

cargo build --release --locked -q -p mock-kong -p loadgen
mk=target/release/mock-kong
lg=target/release/loadgen

status=0
for proto in msgpack protobuf; do
  echo "== conformance: reference server, $proto"
  "$mk" conform --protocol "$proto" --quiet-server \
    --json "$out/conformance-$proto.json" --junit "$out/conformance-$proto.junit.xml" \
    --markdown "$out/conformance-$proto.md" | tail -n 1 || status=1
done

echo
echo "== curves: reference server, both protocols (short run; reports/README.md has the full sweep)"
"$lg" sweep --reference --protocol msgpack,protobuf \
  --calls 0,1,2,3,5,8,10,15,20,30 --concurrency 1 \
  --duration 1s --warmup 300ms --trials 1 --out "$out/sweep" || status=1

echo
echo "conformance reports: $out/conformance-{msgpack,protobuf}.{md,json,junit.xml}"
echo "curves:              $out/sweep/{rps,latency,rps_normalised}.{png,svg}, results.json, summary.md"
exit $status
