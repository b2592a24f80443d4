#!/usr/bin/env bash
# The peer matrix: every real plugin server (and the reference server in both protocols) through
#   1. the shipped scenarios (`mock-kong run scenarios/`),
#   2. the conformance fast tier, gated by its expected-failures file,
#   3. a short load smoke (`loadgen run`, bench plugin, 5 PDK calls per request),
# then a markdown summary with each peer's exact kit and runtime versions.
#
#   scripts/peer-matrix.sh [--release] [--out DIR]
#
# CI (scripts/test.sh) runs it with the debug binaries into target/peer-matrix/; the committed
# reports/peers.md comes from `scripts/peer-matrix.sh --release --out reports`.
# Exit status: 0 when every step of every server passed, 1 otherwise (the summary says which).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
out=target/peer-matrix
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--release] [--out DIR]" >&2; exit 2 ;;
  esac
done

if [ "$profile" = release ]; then
  cargo build --release --locked -q -p mock-kong -p loadgen
else
  cargo build --locked -q -p mock-kong -p loadgen
fi
mk="target/$profile/mock-kong"
lg="target/$profile/loadgen"
work="target/peer-matrix/work"
mkdir -p "$out" "$work"

# server label | server options | expected-failures file
servers=(
  "reference-msgpack|--reference --protocol msgpack|conformance/expected/reference-msgpack.txt"
  "reference-protobuf|--reference --protocol protobuf|conformance/expected/reference-protobuf.txt"
  "go|--peer go|conformance/expected/go.txt"
  "python|--peer python|conformance/expected/python.txt"
  "python-gevent|--peer python-gevent|conformance/expected/python-gevent.txt"
  "js|--peer js|conformance/expected/js.txt"
)

status=0
passed=0
failed=0
step() { if [ "$1" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi; }
for entry in "${servers[@]}"; do
  IFS='|' read -r label opts expected <<<"$entry"
  echo "== $label"
  # shellcheck disable=SC2086 # the options are words on purpose
  rc=0
  "$mk" run --quiet-server $opts --json "$work/$label.scenarios.json" scenarios/ | tail -n 1 || rc=$?
  step "$rc"
  rc=0
  # shellcheck disable=SC2086
  "$mk" conform --quiet-server $opts --expect-failures "$expected" \
    --json "$work/$label.conform.json" | tail -n 1 || rc=$?
  step "$rc"
  rc=0
  # shellcheck disable=SC2086
  "$lg" run $opts --trials 1 --calls 5 --concurrency 1 --duration 2s --warmup 500ms \
    --json "$work/$label.load.json" >/dev/null || rc=$?
  [ "$rc" = 0 ] || echo "load smoke failed (exit $rc)"
  step "$rc"
done

python3 scripts/peer-matrix-report.py "$work" "$out/peers.md" "${servers[@]%%|*}"
echo "wrote $out/peers.md"
echo "peer-matrix: $passed passed, $failed failed"
exit $status
