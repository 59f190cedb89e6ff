#!/usr/bin/env bash
# The one command that runs every test:
#   install deps -> release build of the workspace -> Rust unit/integration tests
#   -> end-to-end pytest suite against a real tritonserver (tests/e2e).
# Extra arguments go to pytest, e.g.  bash ci/test.sh -k streaming -x
# Env: RUSTPY_E2E_REFERENCE=1 additionally runs the e2e suite with the pure-Python
#      reference implementation of the batched API on the official python backend.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEPS="${RUSTPY_DEPS:-$ROOT/.rustpy-deps}"
export RUSTPY_DEPS="$DEPS"

step() { echo; echo "=== [test] $* ===" >&2; }

step "install"
bash ci/install.sh

# The images' build step (deploy/docker/scripts/build.sh: cargo build --release
# --locked --workspace), for the interpreter .cargo/config.toml names.
step "deploy/docker/scripts/build.sh (cargo build --release --locked --workspace)"
PYO3_PYTHON="${PYO3_PYTHON:-$(sed -n 's/^PYO3_PYTHON *= *"\(.*\)"/\1/p' .cargo/config.toml)}" \
  bash deploy/docker/scripts/build.sh "${CARGO_TARGET_DIR:-$ROOT/target}/image"

# The backend again for a second CPython (3.12, the NGC images' Python), when
# this machine has one with a shared libpython (ci/install.sh): served by
# tests/e2e/test_python312.py, skipped there otherwise.
PY312="${RUSTPY_PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}"
if [[ -x "$PY312" ]]; then
  step "cargo build --release --locked -p triton-rustpy for $PY312"
  PYO3_PYTHON="$PY312" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/py312" \
    cargo build --release --locked -p triton-rustpy
  export RUSTPY_BACKEND_LIB_PY312="${CARGO_TARGET_DIR:-$ROOT/target}/py312/release/libtriton_rustpy.so"
  export RUSTPY_PY312="$PY312"
fi

step "cargo test --workspace --release"
# The Rust tests that run the real tritonserver (crates/rustpy-cli/tests/serve.rs,
# golden.rs) fail instead of skipping when it or the backend library is missing.
export RUSTPY_REQUIRE_SERVER=1
cargo test --workspace --release

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export RUSTPY_BACKEND_LIB="${RUSTPY_BACKEND_LIB:-$TARGET_DIR/release/libtriton_rustpy.so}"
export RUSTPY_CLI="${RUSTPY_CLI:-$TARGET_DIR/release/rustpy}"
if [[ ! -f "$RUSTPY_BACKEND_LIB" ]]; then
  echo "[test] backend library missing: $RUSTPY_BACKEND_LIB" >&2
  exit 1
fi

step "e2e: pytest tests/e2e (backend $RUSTPY_BACKEND_LIB)"
# The reference mode is opt-in for the extra run below, never for the main one.
# -rfEs: failures, errors and every skip with its reason. The whole suite (no
# extra arguments) also fails when it skips a test tests/e2e/allowed_skips.txt
# does not allow (tests/e2e/conftest.py; docs/reliability.md, "How we test").
CHECK_SKIPS=1
[[ $# -eq 0 ]] || CHECK_SKIPS=0
RUSTPY_E2E_REFERENCE= RUSTPY_CHECK_SKIPS=$CHECK_SKIPS "$DEPS/venv/bin/pytest" tests/e2e -q -rfEs \
  --durations=15 -p no:cacheprovider "$@"

if [[ -n "${RUSTPY_E2E_REFERENCE:-}" && "${RUSTPY_E2E_REFERENCE}" != 0 ]]; then
  step "e2e (reference implementation on the official python backend)"
  RUSTPY_E2E_REFERENCE=1 "$DEPS/venv/bin/pytest" tests/e2e/test_examples.py \
    tests/e2e/test_streaming.py tests/e2e/test_errors.py -q -rfEs -p no:cacheprovider "$@"
fi

echo "[test] all tests passed" >&2
