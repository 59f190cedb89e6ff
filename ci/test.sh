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
RUSTPY_E2E_REFERENCE= "$DEPS/venv/bin/pytest" tests/e2e -q -rfE --durations=15 -p no:cacheprovider "$@"

if [[ -n "${RUSTPY_E2E_REFERENCE:-}" && "${RUSTPY_E2E_REFERENCE}" != 0 ]]; then
  step "e2e (reference implementation on the official python backend)"
  RUSTPY_E2E_REFERENCE=1 "$DEPS/venv/bin/pytest" tests/e2e/test_examples.py \
    tests/e2e/test_streaming.py tests/e2e/test_errors.py -q -rfE -p no:cacheprovider "$@"
fi

echo "[test] all tests passed" >&2
