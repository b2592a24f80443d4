#!/usr/bin/env bash
# The project's test command (the README's quick start and .ci/run call exactly this).
# On a fresh machine it installs the real peer plugin servers (Go, Python, JS, Rust; see
# scripts/install-peers.sh), checks what the build can enforce (formatting, clippy, the codec
# crate's purity, that the benches and the fuzz targets build), runs every test of the workspace
# with the peer tests required, then the statistical tier alone, the peer matrix and the gates.
#
# Arguments are passed to the ordinary `cargo test` run (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

stage() { printf '\n== %s\n' "$*"; }

# One-shot builds gain nothing from incremental caches, which take gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

bash scripts/install-peers.sh
# Exact system-call counts for loadgen's counters (tracefs; root only, else a note).
bash scripts/enable-syscall-counting.sh

stage "static checks: rustfmt, clippy (warnings are errors), codec purity"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# "Codecs are pure" (ARCHITECTURE.md) as a fact of the build: the codec crate has no async
# runtime among its dependencies.
if cargo tree -p mock-kong-codec -e normal --prefix none --locked | grep -q '^tokio '; then
  echo "mock-kong-codec depends on tokio: the codecs and event drivers must stay free of I/O" >&2
  exit 1
fi

# The fuzz crate has its own lock file; a dependency added to mock-kong must be locked there too.
if ! cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null 2>&1; then
  echo "fuzz/Cargo.lock does not match mock-kong's dependencies: run 'cargo update --manifest-path fuzz/Cargo.toml --workspace' and commit it" >&2
  exit 1
fi

stage "builds: benches, fuzz targets"
cargo bench --workspace --no-run --locked
# The fuzz targets live outside the workspace (fuzz/README.md). With nightly and cargo-fuzz
# installed they are built as fuzzing builds them (sanitizers); otherwise they are built with
# the default toolchain, which proves they compile. Installing nightly and cargo-fuzz here
# would add about a minute to every CI run (measured: 12 s + 45 s), so this script does not.
if cargo +nightly fuzz --version >/dev/null 2>&1; then
  (cd fuzz && cargo +nightly fuzz build)
else
  echo "fuzz: nightly with cargo-fuzz is not installed; building the targets with $(rustc --version | cut -d' ' -f1-2) without sanitizer instrumentation (fuzzing itself: fuzz/README.md)"
  cargo build --manifest-path fuzz/Cargo.toml --locked --target-dir target/fuzz
fi

stage "tests"
export MOCK_KONG_REQUIRE_PEERS=1
cargo test --workspace --locked "$@"
# The statistical tier: loadgen tests that compare measured timings, #[ignore]d in the ordinary
# run and run here one at a time, so no other test shares the machine while they measure.
stage "tests: the statistical tier (serial)"
cargo test -p loadgen --locked --test it -- --ignored --test-threads=1

# Every peer through the scenarios, the conformance fast tier (gated by its expected-failures
# file) and a load smoke, through the CLIs as users run them; summary in target/peer-matrix/.
stage "peer matrix"
bash scripts/peer-matrix.sh

# The performance gates: counters against the committed baseline, a paired A/B against the
# previous commit, a self-test (docs/ci-gates.md). Last, so it closes the output.
stage "performance gates"
bash scripts/ci-gate.sh

# Reached only when every stage above passed (set -e): the closing summary line.
echo "stages: 6 passed, 0 failed (static checks, builds, cargo test, statistical tier, peer matrix, performance gates)"
