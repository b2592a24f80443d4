#!/usr/bin/env bash
# Runs `mock-kong conform` (fast tier) against the reference server in both protocols and
# against the real peers, each with its expected-failures file, and writes the reports kept in
# reports/conformance/ (JSON, JUnit, markdown per server, and the server x group matrix
# README.md). Needs the peers (scripts/install-peers.sh).
#
#   scripts/conformance-reports.sh            # check against conformance/expected/*.txt
#   scripts/conformance-reports.sh --fix      # rewrite the expected-failures files first
#   scripts/conformance-reports.sh --slow     # also the slow tier (2.5 to 6 min per server),
#                                             # into reports/conformance/slow/ (no lists)
set -euo pipefail
cd "$(dirname "$0")/.."

fix=()
slow=0
for arg in "$@"; do
  case "$arg" in
    --fix) fix=(--fix-expectations) ;;
    --slow) slow=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

cargo build --quiet -p mock-kong
bin="${CARGO_TARGET_DIR:-target}/debug/mock-kong"
out=reports/conformance
mkdir -p "$out" conformance/expected

status=0
run() {
  local name=$1; shift
  local fix_this=("${fix[@]}")
  # rust.txt is written by hand (the causes in kong_rs's source, one evidence line per check).
  if [[ $name == rust && ${#fix[@]} -gt 0 ]]; then
    echo "(conformance/expected/rust.txt is kept as written; edit it by hand)"
    fix_this=()
  fi
  echo "== $name"
  "$bin" conform "$@" --quiet-server \
    --expect-failures "conformance/expected/$name.txt" "${fix_this[@]}" \
    --json "$out/$name.json" --junit "$out/$name.junit.xml" --markdown "$out/$name.md" \
    | tail -n 1 || status=1
}

run reference-msgpack --protocol msgpack
run reference-protobuf --protocol protobuf
for peer in go python python-gevent js js-dir rust; do
  run "$peer" --peer "$peer"
done

if [[ $slow == 1 ]]; then
  mkdir -p "$out/slow"
  for s in "reference-msgpack --protocol msgpack" "reference-protobuf --protocol protobuf" \
           "go --peer go" "python --peer python" "js --peer js" "rust --peer rust"; do
    set -- $s; name=$1; shift
    echo "== $name (slow tier)"
    "$bin" conform "$@" --tier slow --quiet-server \
      --json "$out/slow/$name.json" --markdown "$out/slow/$name.md" | tail -n 1 || true
  done
  "$bin" conform --matrix "$out/slow"
fi

"$bin" conform --matrix "$out"
if [[ -f "$out/rust-findings.md" ]]; then
  printf '\nThe rust (kong_rs) failures, each explained from the kit'"'"'s source: [rust-findings.md](rust-findings.md).\n' >> "$out/README.md"
fi
if [[ -f "$out/slow/README.md" ]]; then
  printf '\nSlow tier (instances idle past 60 s, resources over thousands of events): [slow/README.md](slow/README.md).\n' >> "$out/README.md"
fi
exit $status
