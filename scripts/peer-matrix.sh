#!/usr/bin/env bash
# The peer matrix: every real plugin server (and the reference server in both protocols) through
#   1. the shipped scenarios (`mock-kong run scenarios/`), all passing, or for a server with a
#      list of scenarios expected to fail (scenarios/expected/<server>.txt) exactly those failing,
#   2. the conformance fast tier, gated by its expected-failures file,
#   3. a short load smoke (`loadgen run`, bench plugin, 5 PDK calls per request): measured, or
#      for a server whose events cannot complete ("fails" below) the point reported as a
#      failure with its error (loadgen exits 1; a smoke that unexpectedly passes fails here),
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

# server label | server options | conformance expected failures | scenarios expected to fail
# (- for none) | load smoke: ok, or fails (the point cannot complete)
servers=(
  "reference-msgpack|--reference --protocol msgpack|conformance/expected/reference-msgpack.txt|-|ok"
  "reference-protobuf|--reference --protocol protobuf|conformance/expected/reference-protobuf.txt|-|ok"
  "go|--peer go|conformance/expected/go.txt|-|ok"
  "python|--peer python|conformance/expected/python.txt|-|ok"
  "python-gevent|--peer python-gevent|conformance/expected/python-gevent.txt|-|ok"
  "js|--peer js|conformance/expected/js.txt|-|ok"
  # kong_rs: no event ends as Kong expects (conformance/expected/rust.txt, cause A).
  "rust|--peer rust|conformance/expected/rust.txt|scenarios/expected/rust.txt|fails"
)

status=0
passed=0
failed=0
step() { if [ "$1" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi; }
labels=()
for entry in "${servers[@]}"; do
  IFS='|' read -r label opts expected scen_expected load <<<"$entry"
  labels+=("$label")
  echo "== $label"
  # shellcheck disable=SC2086 # the options are words on purpose
  rc=0
  if [ "$scen_expected" = - ]; then
    "$mk" run --quiet-server $opts --json "$work/$label.scenarios.json" scenarios/ | tail -n 1 || rc=$?
  else
    # The run fails (exit 1) by design; the list decides. A 2 s timeout: each failure waits it out.
    "$mk" run --quiet-server $opts --timeout 2 --json "$work/$label.scenarios.json" scenarios/ >/dev/null || true
    python3 scripts/scenario-expectations.py "$work/$label.scenarios.json" "$scen_expected" || rc=$?
  fi
  step "$rc"
  rc=0
  # shellcheck disable=SC2086
  "$mk" conform --quiet-server $opts --expect-failures "$expected" \
    --json "$work/$label.conform.json" | tail -n 1 || rc=$?
  step "$rc"
  rc=0
  if [ "$load" = ok ]; then
    # shellcheck disable=SC2086
    "$lg" run $opts --trials 1 --calls 5 --concurrency 1 --duration 2s --warmup 500ms \
      --json "$work/$label.load.json" >/dev/null || rc=$?
    [ "$rc" = 0 ] || echo "load smoke failed (exit $rc)"
  else
    # Expected to fail: loadgen must exit 1 and report the point with its error, not drop it.
    # A 2 s timeout: loadgen retries a point's sample request for a few seconds.
    # shellcheck disable=SC2086
    "$lg" run $opts --timeout 2 --trials 1 --calls 5 --concurrency 1 --duration 2s --warmup 500ms \
      --json "$work/$label.load.json" >/dev/null 2>&1 || rc=$?
    if [ "$rc" = 1 ] && python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if d["failures"] and all(f["error"] for f in d["failures"]) and not d["points"] else 1)' "$work/$label.load.json"; then
      echo "load smoke: the point could not complete, as expected (reported with its error)"
      rc=0
    else
      echo "load smoke: expected the point to fail and be reported with its error (loadgen exit $rc)"
      rc=1
    fi
  fi
  step "$rc"
done

python3 scripts/peer-matrix-report.py "$work" "$out/peers.md" "${labels[@]}"
echo "wrote $out/peers.md"
echo "peer-matrix: $passed passed, $failed failed"
exit $status
