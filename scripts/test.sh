#!/usr/bin/env bash
# The project's test command (the README's quick start and .ci/run call exactly this).
# On a fresh machine it installs the real peer plugin servers (Go, Python, JS, Rust; see
# scripts/install-peers.sh) and then runs every test of the workspace with the peer tests required.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-peers.sh
# Exact system-call counts for loadgen's counters (tracefs; root only, else a note).
bash scripts/enable-syscall-counting.sh
export MOCK_KONG_REQUIRE_PEERS=1
cargo test --workspace --locked "$@"

# Every peer through the scenarios, the conformance fast tier (gated by its expected-failures
# file) and a load smoke, through the CLIs as users run them; summary in target/peer-matrix/.
bash scripts/peer-matrix.sh

# The performance gates: counters against the committed baseline, a paired A/B against the
# previous commit, a self-test (docs/ci-gates.md). Last, so it closes the output.
bash scripts/ci-gate.sh

# Reached only when every stage above passed (set -e): the closing summary line.
echo "stages: 3 passed, 0 failed (cargo test, peer matrix, performance gate)"
