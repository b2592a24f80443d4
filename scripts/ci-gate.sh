#!/usr/bin/env bash
# The performance gates of the project's own CI. They use only evidence that holds on any
# machine (docs/ci-gates.md): never a time measured here against a time measured elsewhere.
#
#  1. Counters: a short sweep of the built-in reference server (both protocols, 0/1/10 PDK
#     calls) gated against the counters of the committed baseline
#     reports/baselines/reference-debug.json (`loadgen gate --counters-only`): PDK calls, round
#     trips, bytes, system calls and harness allocations per request, server memory growth.
#     The baseline was made on another machine; counts do not depend on the machine.
#  2. Paired A/B: the reference server of the previous commit (built in a git worktree into its
#     own target directory) against this commit's, measured in one run on this machine with
#     trials interleaved (`loadgen ab`), both protocols. A regression is measured once more and
#     fails the gate only when the second run confirms it.
#  3. Self-test: the gate still bites: `reference` against `reference+split-writes` (each frame
#     in two system calls: a counter regression) and against `reference+very-slow-pdk` (+200 µs
#     per PDK call: a time regression) must both be regressions.
#
# Exit codes: 0 no regression, 1 a regression (or a self-test that did not bite), 2 error.
# Environment: GATE_PREV (the commit to compare with, default HEAD~1; `none` skips step 2),
# GATE_OUT (where the reports go, default a temporary directory), GATE_PIN (default 1: run the
# measurements on one CPU with taskset; 0: unpinned).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${GATE_OUT:-$(mktemp -d)}"
mkdir -p "$out"
prev="${GATE_PREV:-HEAD~1}"
start=$(date +%s)

bash scripts/enable-syscall-counting.sh
cargo build -q --locked -p loadgen
loadgen="${CARGO_TARGET_DIR:-target}/debug/loadgen"
# On a 2-vCPU VM a wake-up across vCPUs costs ten times one on the same CPU, and an unpinned
# pair of processes flips between both placements for seconds at a time; one CPU for the
# harness and both servers keeps the pairs' ratios tight. Pinning changes no counter.
pin=()
if [ "${GATE_PIN:-1}" = 1 ] && command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then
    pin=(taskset -c 0)
fi
say() { echo "ci-gate: $*" >&2; }

# --- 1. counters against the committed baseline ------------------------------------------
say "1/3 counters of this build against reports/baselines/reference-debug.json"
"${pin[@]}" "$loadgen" sweep --reference --protocol msgpack,protobuf --calls 0,1,10 \
    --concurrency 1 --duration 300ms --warmup 100ms --trials 3 --multicore 0 --no-floor \
    --out "$out/counters" >"$out/counters.log" 2>&1 || { cat "$out/counters.log" >&2; say "the sweep failed"; exit 2; }
set +e
"$loadgen" gate --baseline reports/baselines/reference-debug.json --current "$out/counters" \
    --counters-only --markdown "$out/counters.md" --junit "$out/counters.junit.xml" \
    >"$out/counters-gate.log" 2>&1
code=$?
set -e
sed -n '/^## loadgen gate/,/^Reads are reported/p' "$out/counters-gate.log" >&2
case "$code" in
    0) say "counters: as in the baseline" ;;
    1) say "counters: REGRESSION (see $out/counters.md)"; exit 1 ;;
    *) cat "$out/counters-gate.log" >&2; say "counters: cannot judge (exit $code)"; exit 2 ;;
esac

# --- 2. paired A/B against the previous commit -------------------------------------------
ab() { # ab NAME BASELINE CURRENT [options...]: runs `loadgen ab`, returns its exit code
    local name=$1; shift
    set +e
    "${pin[@]}" "$loadgen" ab "$@" --markdown "$out/$name.md" --junit "$out/$name.junit.xml" \
        >"$out/$name.log" 2>&1
    local c=$?
    set -e
    grep -E '^(no regression|REGRESSION|cannot judge)' "$out/$name.log" >&2 || true
    return "$c"
}
if [ "$prev" = none ]; then
    say "2/3 skipped (GATE_PREV=none)"
elif ! git rev-parse -q --verify "$prev^{commit}" >/dev/null; then
    say "2/3 skipped: $prev is not in this clone (a shallow clone?); steps 1 and 3 still gate"
else
    rev=$(git rev-parse --short "$prev")
    say "2/3 paired A/B: the reference server of $rev against this build's"
    wt="$out/prev-worktree"
    git worktree add -q --detach "$wt" "$prev"
    trap 'git worktree remove --force "$wt" 2>/dev/null || true' EXIT
    prev_target="${CARGO_TARGET_DIR:-$PWD/target}/ci-gate-prev"
    if ! (cd "$wt" && CARGO_TARGET_DIR="$prev_target" cargo build -q --locked -p loadgen) \
        >"$out/prev-build.log" 2>&1; then
        cat "$out/prev-build.log" >&2
        say "2/3 skipped: $rev does not build"
    else
        for proto in msgpack protobuf; do
            side="reference:$proto"
            result=0
            ab "ab-$proto" "$side" "$side" --baseline-exe "$prev_target/debug/loadgen" || result=$?
            if [ "$result" = 2 ]; then
                # Too few usable forks (trials lost on a busy machine): measure once more.
                say "$proto: cannot judge; measuring once more"
                result=0
                ab "ab-$proto-again" "$side" "$side" --baseline-exe "$prev_target/debug/loadgen" || result=$?
            fi
            if [ "$result" = 1 ]; then
                say "$proto: a regression; measuring again to confirm"
                result=0
                ab "ab-$proto-confirm" "$side" "$side" --baseline-exe "$prev_target/debug/loadgen" || result=$?
                if [ "$result" = 1 ]; then
                    cat "$out/ab-$proto-confirm.md" >&2
                    say "$proto: REGRESSION against $rev, confirmed (reports in $out)"
                    exit 1
                fi
                say "$proto: not confirmed (a false alarm of the first run)"
            fi
            if [ "$result" != 0 ]; then
                cat "$out/ab-$proto.log" >&2
                say "$proto: cannot judge (exit $result)"
                exit 2
            fi
        done
    fi
fi

# --- 3. self-test: the gate bites ---------------------------------------------------------
say "3/3 self-test: known regressions must be caught"
for fault in split-writes very-slow-pdk; do
    result=0
    ab "selftest-$fault" reference "reference+$fault" --calls 10 --pairs 12 || result=$?
    if [ "$result" = 2 ]; then
        # "Cannot judge" (fewer than 6 usable forks: trials lost on a machine too busy to run
        # them) says nothing about whether the gate bites: measure once more.
        say "self-test reference+$fault: cannot judge (exit 2); measuring once more"
        result=0
        ab "selftest-$fault-again" reference "reference+$fault" --calls 10 --pairs 12 || result=$?
    fi
    if [ "$result" != 1 ]; then
        cat "$out/selftest-$fault.log" >&2
        say "the gate did not catch reference+$fault (exit $result): the gate is broken"
        exit 1
    fi
done
say "no regression ($(($(date +%s) - start)) s; reports in $out)"
