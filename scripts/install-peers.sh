#!/usr/bin/env bash
# Install the official Kong plugin servers ("peers") that mock-kong drives in
# its tests, from the pinned sources under plugins/ into the git-ignored
# .peers/ directory at the repository root:
#
#   go      plugins/go (go.mod + go.sum, github.com/Kong/go-pdk)
#           -> .peers/go/bin/<plugin>            one binary per plugin
#   python  plugins/python/requirements.txt (+ constraints.txt, kong-pdk)
#           -> .peers/python/venv                a virtualenv
#   js      plugins/js/package.json + package-lock.json (kong-pdk on npm)
#           -> plugins/js/node_modules           `npm ci`
#           -> .peers/js/single/<plugin>/        one-plugin directories
#                                                (symlinks to plugins/js/plugins)
#   rust    plugins/rust (Cargo.toml + Cargo.lock, kong_rs on crates.io)
#           -> .peers/rust/bin/<plugin>          one binary per plugin (no multiphase:
#                                                kong_rs has only the access phase)
#           kong_rs's protobuf crate runs protoc at build time: the protoc shipped by
#           the crate protoc-bin-vendored (pinned in plugins/rust/Cargo.lock) is used,
#           or $PROTOC when set. Build products stay in .peers/rust/target.
#           kong_rs always binds /usr/local/kong/<plugin>.socket; plugins/rust/kong-rs-ns
#           runs each server in a private mount namespace (root, or unprivileged user
#           namespaces). The installer probes that and says so when it cannot work:
#           a warning, or exit 3 when MOCK_KONG_REQUIRE_PEERS is set.
#
# Each part is skipped when its stamp file (.peers/<part>/.stamp, a hash of
# the lock files, the sources and the runtime version) is current, so a
# second run does nothing and takes well under a second.
#
# Usage: scripts/install-peers.sh [--check] [--only go,python,js,rust] [--force]
#   --check   only report what is installed and whether it is up to date;
#             changes nothing; exits 1 when something is missing or stale
#   --only    handle only the listed parts (default: go,python,js,rust)
#   --force   rebuild even when the stamps are current
#
# Exit codes: 0 ok, 1 --check found something missing or stale,
#             2 usage error, 3 a required runtime is missing, 4 install failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/.peers"
PLUGINS=(hello bench exit multiphase faults)
RUST_PLUGINS=(hello bench exit faults) # kong_rs 0.2.0 has only the access phase

CHECK=0
FORCE=0
ONLY="go,python,js,rust"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --check) CHECK=1 ;;
    --force) FORCE=1 ;;
    --only)
      [[ $# -ge 2 ]] || { echo "install-peers: --only needs a list such as go,python,js,rust" >&2; exit 2; }
      ONLY="$2"; shift ;;
    --only=*) ONLY="${1#--only=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-peers: unknown argument '$1' (expected --check, --only LIST, --force or --help)" >&2; exit 2 ;;
  esac
  shift
done

WANT_GO=0; WANT_PY=0; WANT_JS=0; WANT_RS=0
IFS=',' read -r -a parts <<<"$ONLY"
for part in "${parts[@]}"; do
  case "$part" in
    go) WANT_GO=1 ;;
    python) WANT_PY=1 ;;
    js) WANT_JS=1 ;;
    rust) WANT_RS=1 ;;
    "") ;;
    *) echo "install-peers: unknown part '$part' in --only (expected go, python, js or rust)" >&2; exit 2 ;;
  esac
done

log() { printf 'install-peers: %s\n' "$*" >&2; }
die() { local code="$1"; shift; printf 'install-peers: error: %s\n' "$*" >&2; exit "$code"; }

# ---------------------------------------------------------------- runtimes

missing=()
if [[ $WANT_GO == 1 ]] && ! command -v go >/dev/null 2>&1; then
  missing+=("go (Go toolchain >= 1.21, needed for the 'go' peer)")
fi
if [[ $WANT_PY == 1 ]] && ! command -v python3 >/dev/null 2>&1; then
  missing+=("python3 (Python >= 3.8 with the venv module, needed for the 'python' peers)")
fi
if [[ $WANT_JS == 1 ]]; then
  command -v node >/dev/null 2>&1 || missing+=("node (Node.js >= 16, needed for the 'js' peers)")
  command -v npm >/dev/null 2>&1 || missing+=("npm (needed to install the 'js' peers)")
fi
if [[ $WANT_RS == 1 ]]; then
  command -v cargo >/dev/null 2>&1 || missing+=("cargo (Rust toolchain >= 1.85, needed for the 'rust' peer)")
  command -v rustc >/dev/null 2>&1 || missing+=("rustc (Rust toolchain >= 1.85, needed for the 'rust' peer)")
fi
if [[ ${#missing[@]} -gt 0 && $CHECK == 0 ]]; then
  for m in "${missing[@]}"; do log "missing runtime: $m"; done
  die 3 "install the runtime(s) above, or leave their part out with --only (e.g. --only python,js)"
fi

if command -v sha256sum >/dev/null 2>&1; then
  hash_stdin() { sha256sum | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
  hash_stdin() { shasum -a 256 | cut -d' ' -f1; }
else
  die 3 "neither sha256sum nor shasum is available to compute the stamp hashes"
fi

# hash_inputs LABEL FILE... : one hash over the runtime label and the files' contents
hash_inputs() {
  local label="$1"; shift
  { printf '%s\n' "$label"; for f in "$@"; do printf '== %s\n' "${f#"$ROOT"/}"; cat "$f"; done; } | hash_stdin
}

stamp_current() { # STAMPFILE HASH
  [[ $FORCE == 0 && -f "$1" && "$(cat "$1")" == "$2" ]]
}

STATUS=0 # for --check
report() { printf '  %-8s %s\n' "$1" "$2"; }

# ---------------------------------------------------------------- go

go_hash() {
  local files
  mapfile -t files < <(cd "$ROOT" && find plugins/go -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort)
  hash_inputs "$(go version)" "${files[@]/#/$ROOT/}"
}

go_installed() {
  local p
  for p in "${PLUGINS[@]}"; do [[ -x "$PEERS/go/bin/$p" ]] || return 1; done
}

install_go() {
  local ver major minor h p
  ver="$(go env GOVERSION)"           # e.g. go1.26.8
  major="${ver#go}"; major="${major%%.*}"
  minor="${ver#go*.}"; minor="${minor%%[.a-z]*}"
  if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || (( major == 1 && minor < 21 )); then
    die 3 "go-pdk v0.11 needs Go >= 1.21, but 'go' is $ver"
  fi
  h="$(go_hash)"
  if stamp_current "$PEERS/go/.stamp" "$h" && go_installed; then
    log "go: up to date ($PEERS/go/bin)"
    return
  fi
  log "go: building ${PLUGINS[*]} into .peers/go/bin"
  mkdir -p "$PEERS/go/bin"
  for p in "${PLUGINS[@]}"; do
    (cd "$ROOT/plugins/go" && GOTOOLCHAIN=local go build -trimpath -buildvcs=false -o "$PEERS/go/bin/$p" "./cmd/$p") \
      || die 4 "go build of plugin '$p' failed (see above); the module proxy must serve github.com/Kong/go-pdk as pinned in plugins/go/go.sum"
  done
  printf '%s\n' "$h" >"$PEERS/go/.stamp"
}

check_go() {
  if ! command -v go >/dev/null 2>&1; then report go "runtime missing (go)"; STATUS=1; return; fi
  if ! go_installed; then report go "not installed (.peers/go/bin)"; STATUS=1; return; fi
  if ! stamp_current "$PEERS/go/.stamp" "$(go_hash)"; then report go "installed but stale (sources or go changed)"; STATUS=1; return; fi
  report go "ok: $(go_versions | tr '\n' ' ')"
}

go_versions() {
  local kit
  kit="$(go version -m "$PEERS/go/bin/hello" 2>/dev/null | awk '$1 == "dep" && $2 == "github.com/Kong/go-pdk" {print $3}')"
  printf 'go.kit=github.com/Kong/go-pdk %s\n' "${kit:-unknown}"
  printf 'go.protocol=ProtoBuf:1\n'
  printf 'go.runtime=%s\n' "$(go env GOVERSION)"
}

# ---------------------------------------------------------------- python

VENV="$PEERS/python/venv"
PY_REQ="$ROOT/plugins/python/requirements.txt"
PY_CON="$ROOT/plugins/python/constraints.txt"

py_hash() { hash_inputs "$(python3 --version 2>&1)" "$PY_REQ" "$PY_CON"; }
py_installed() { [[ -x "$VENV/bin/python" && -x "$VENV/bin/kong-python-pluginserver" ]]; }

install_python() {
  local h
  h="$(py_hash)"
  if stamp_current "$PEERS/python/.stamp" "$h" && py_installed; then
    log "python: up to date ($VENV)"
    return
  fi
  log "python: creating .peers/python/venv and installing plugins/python/requirements.txt"
  rm -rf "$VENV"
  mkdir -p "$PEERS/python"
  python3 -m venv "$VENV" \
    || die 4 "'python3 -m venv' failed; install the venv module (Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$PY_REQ" \
    || die 4 "pip install -r plugins/python/requirements.txt failed (see above)"
  printf '%s\n' "$h" >"$PEERS/python/.stamp"
}

check_python() {
  if ! command -v python3 >/dev/null 2>&1; then report python "runtime missing (python3)"; STATUS=1; return; fi
  if ! py_installed; then report python "not installed (.peers/python/venv)"; STATUS=1; return; fi
  if ! stamp_current "$PEERS/python/.stamp" "$(py_hash)"; then report python "installed but stale (requirements or python3 changed)"; STATUS=1; return; fi
  report python "ok: $(py_versions | tr '\n' ' ')"
}

py_versions() {
  printf 'python.kit=kong-pdk %s\n' \
    "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kong-pdk"))' 2>/dev/null || echo unknown)"
  printf 'python.protocol=MsgPack:1\n'
  printf 'python.runtime=%s\n' "$("$VENV/bin/python" --version 2>&1)"
}

# ---------------------------------------------------------------- js

JS_DIR="$ROOT/plugins/js"

js_hash() {
  local files
  mapfile -t files < <(cd "$ROOT" && find plugins/js/plugins -maxdepth 1 -type f -name '*.js' | LC_ALL=C sort)
  hash_inputs "node $(node --version) npm $(npm --version 2>/dev/null)" \
    "$JS_DIR/package.json" "$JS_DIR/package-lock.json" "${files[@]/#/$ROOT/}"
}

js_installed() {
  local p
  [[ -x "$JS_DIR/node_modules/.bin/kong-js-pluginserver" ]] || return 1
  for p in "${PLUGINS[@]}"; do [[ -e "$PEERS/js/single/$p/$p.js" ]] || return 1; done
}

install_js() {
  local h f name
  h="$(js_hash)"
  if stamp_current "$PEERS/js/.stamp" "$h" && js_installed; then
    log "js: up to date ($JS_DIR/node_modules)"
    return
  fi
  log "js: npm ci in plugins/js"
  (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error 1>&2) \
    || die 4 "npm ci in plugins/js failed (see above)"
  # kong-js-pluginserver serves every file of its -d directory and Kong 3.9
  # uses only the first plugin of a dump, so give each plugin a directory of
  # its own (relative symlinks, so the tree can move).
  rm -rf "$PEERS/js/single"
  for f in "$JS_DIR"/plugins/*.js; do
    name="$(basename "$f" .js)"
    mkdir -p "$PEERS/js/single/$name"
    ln -s "../../../../plugins/js/plugins/$name.js" "$PEERS/js/single/$name/$name.js"
  done
  printf '%s\n' "$h" >"$PEERS/js/.stamp"
}

check_js() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then report js "runtime missing (node/npm)"; STATUS=1; return; fi
  if ! js_installed; then report js "not installed (plugins/js/node_modules, .peers/js/single)"; STATUS=1; return; fi
  if ! stamp_current "$PEERS/js/.stamp" "$(js_hash)"; then report js "installed but stale (lock files, plugins or node changed)"; STATUS=1; return; fi
  report js "ok: $(js_versions | tr '\n' ' ')"
}

js_versions() {
  printf 'js.kit=kong-pdk %s\n' \
    "$(node -p 'require(process.argv[1]).version' "$JS_DIR/node_modules/kong-pdk/package.json" 2>/dev/null || echo unknown)"
  printf 'js.protocol=MsgPack:1\n'
  printf 'js.runtime=node %s\n' "$(node --version)"
}

# ---------------------------------------------------------------- rust

RS_DIR="$ROOT/plugins/rust"
RS_TARGET="$PEERS/rust/target"

rs_hash() {
  local files
  mapfile -t files < <(cd "$ROOT" && find plugins/rust -type f \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) | LC_ALL=C sort)
  hash_inputs "$(rustc --version) $(cargo --version) PROTOC=${PROTOC:-vendored}" "${files[@]/#/$ROOT/}"
}

rs_installed() {
  local p
  for p in "${RUST_PLUGINS[@]}"; do [[ -x "$PEERS/rust/bin/$p" ]] || return 1; done
}

# The private /usr/local each kong_rs server needs (plugins/rust/kong-rs-ns): a warning when
# this machine cannot make one, an error when the peers are required.
rs_probe() {
  local why
  if why="$("$RS_DIR/kong-rs-ns" --probe 2>&1)"; then
    return 0
  fi
  if [[ -n "${MOCK_KONG_REQUIRE_PEERS:-}" ]]; then
    die 3 "rust: the kong_rs servers cannot run here: $why"
  fi
  log "rust: WARNING: built, but the kong_rs servers cannot run here, so the rust peer tests will be skipped: $why"
}

install_rust() {
  local ver major minor h p line protoc_env=()
  ver="$(rustc --version)"          # e.g. rustc 1.95.0 (59807616e 2026-04-14)
  major="$(awk '{print $2}' <<<"$ver" | cut -d. -f1)"
  minor="$(awk '{print $2}' <<<"$ver" | cut -d. -f2)"
  if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || (( major == 1 && minor < 85 )); then
    die 3 "kong_rs 0.2.0 is edition 2024 and needs Rust >= 1.85, but rustc is '$ver'"
  fi
  h="$(rs_hash)"
  if stamp_current "$PEERS/rust/.stamp" "$h" && rs_installed; then
    log "rust: up to date ($PEERS/rust/bin)"
    rs_probe
    return
  fi
  if [[ -n "${PROTOC:-}" ]]; then
    log "rust: using PROTOC=$PROTOC"
  else
    log "rust: building plugins/rust/protoc-path (the protoc of protoc-bin-vendored)"
    (cd "$RS_DIR" && cargo build --locked --release --quiet --target-dir "$RS_TARGET" -p protoc-path) \
      || die 4 "cargo build of plugins/rust/protoc-path failed (see above); crates.io must serve protoc-bin-vendored as pinned in plugins/rust/Cargo.lock"
    line="$("$RS_TARGET/release/protoc-path")" \
      || die 3 "no protoc for this platform in protoc-bin-vendored (see above); install one (Debian: apt-get install protobuf-compiler libprotobuf-dev) and set PROTOC"
    mapfile -t protoc_env <<<"$line"
    [[ ${#protoc_env[@]} == 2 ]] || die 3 "plugins/rust/protoc-path printed '$line', not PROTOC and PROTOC_INCLUDE; install a protoc and set PROTOC"
  fi
  log "rust: building ${RUST_PLUGINS[*]} with kong_rs into .peers/rust/bin"
  (cd "$RS_DIR" && env "${protoc_env[@]}" cargo build --locked --release --quiet --target-dir "$RS_TARGET" -p kong-rs-fixtures) \
    || die 4 "cargo build of plugins/rust failed (see above); crates.io must serve kong_rs as pinned in plugins/rust/Cargo.lock"
  mkdir -p "$PEERS/rust/bin"
  for p in "${RUST_PLUGINS[@]}"; do
    cp "$RS_TARGET/release/$p" "$PEERS/rust/bin/$p.tmp"
    mv "$PEERS/rust/bin/$p.tmp" "$PEERS/rust/bin/$p"
  done
  printf '%s\n' "$h" >"$PEERS/rust/.stamp"
  rs_probe
}

check_rust() {
  local why
  if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then report rust "runtime missing (cargo/rustc)"; STATUS=1; return; fi
  if ! rs_installed; then report rust "not installed (.peers/rust/bin)"; STATUS=1; return; fi
  if ! stamp_current "$PEERS/rust/.stamp" "$(rs_hash)"; then report rust "installed but stale (sources, lock file or rustc changed)"; STATUS=1; return; fi
  if ! why="$("$RS_DIR/kong-rs-ns" --probe 2>&1)"; then report rust "installed, but cannot run here: $why"; STATUS=1; return; fi
  report rust "ok: $(rs_versions | tr '\n' ' ')"
}

rs_versions() {
  printf 'rust.kit=kong_rs %s\n' \
    "$(awk '/^name = "kong_rs"$/ {getline; gsub(/"/, "", $3); print $3}' "$RS_DIR/Cargo.lock")"
  printf 'rust.protocol=ProtoBuf:1\n'
  printf 'rust.runtime=%s\n' "$(rustc --version)"
}

# ---------------------------------------------------------------- main

if [[ $CHECK == 1 ]]; then
  echo "peers installed under $PEERS:"
  if [[ $WANT_GO == 1 ]]; then check_go; fi
  if [[ $WANT_PY == 1 ]]; then check_python; fi
  if [[ $WANT_JS == 1 ]]; then check_js; fi
  if [[ $WANT_RS == 1 ]]; then check_rust; fi
  exit "$STATUS"
fi

mkdir -p "$PEERS"
if [[ $WANT_GO == 1 ]]; then install_go; fi
if [[ $WANT_PY == 1 ]]; then install_python; fi
if [[ $WANT_JS == 1 ]]; then install_js; fi
if [[ $WANT_RS == 1 ]]; then install_rust; fi

{
  if [[ $WANT_GO == 1 ]]; then go_versions; fi
  if [[ $WANT_PY == 1 ]]; then py_versions; fi
  if [[ $WANT_JS == 1 ]]; then js_versions; fi
  if [[ $WANT_RS == 1 ]]; then rs_versions; fi
} >"$PEERS/versions.txt.tmp"
mv "$PEERS/versions.txt.tmp" "$PEERS/versions.txt"
echo "peers installed under $PEERS (versions in .peers/versions.txt):"
sed 's/^/  /' "$PEERS/versions.txt"
