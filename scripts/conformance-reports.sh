#!/usr/bin/env bash
# Runs `mock-kong conform` (fast tier) against the reference server in both protocols and
# against the real peers, each with its expected-failures file, and writes the reports kept in
# reports/conformance/ (JSON, JUnit, markdown per server, and the server x group matrix
# README.md). Needs the peers (scripts/install-peers.sh).
#
#   scripts/conformance-reports.sh            # check against conformance/expected/*.txt
#   scripts/conformance-reports.sh --fix      # rewrite the expected-failures files first
set -euo pipefail
cd "$(dirname "$0")/.."

fix=()
if [[ "${1:-}" == "--fix" ]]; then
  fix=(--fix-expectations)
fi

cargo build --quiet -p mock-kong
bin="${CARGO_TARGET_DIR:-target}/debug/mock-kong"
out=reports/conformance
mkdir -p "$out" conformance/expected

status=0
run() {
  local name=$1; shift
  echo "== $name"
  "$bin" conform "$@" --quiet-server \
    --expect-failures "conformance/expected/$name.txt" "${fix[@]}" \
    --json "$out/$name.json" --junit "$out/$name.junit.xml" --markdown "$out/$name.md" \
    | tail -n 1 || status=1
}

run reference-msgpack --protocol msgpack
run reference-protobuf --protocol protobuf
for peer in go python python-gevent js js-dir; do
  run "$peer" --peer "$peer"
done
"$bin" conform --matrix "$out"
exit $status
