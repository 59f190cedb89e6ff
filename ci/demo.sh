#!/usr/bin/env bash
# Demo: install deps, build the backend, serve model_repository/ with a real
# tritonserver (via tests/e2e/tritonharness.py), send one request to add_sub, print the
# answer, stop the server.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEPS="${RUSTPY_DEPS:-$ROOT/.rustpy-deps}"
export RUSTPY_DEPS="$DEPS"

bash ci/install.sh
cargo build --release -p triton-rustpy
export RUSTPY_BACKEND_LIB="${RUSTPY_BACKEND_LIB:-${CARGO_TARGET_DIR:-$ROOT/target}/release/libtriton_rustpy.so}"

exec "$DEPS/venv/bin/python" - "$ROOT" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, str(Path(sys.argv[1]) / "tests" / "e2e"))
import numpy as np
import tritonclient.http as httpclient

from tritonharness import MODEL_REPOSITORY, TritonServer, TritonStartError

server = TritonServer(MODEL_REPOSITORY, name="demo")
try:
    server.start()
except TritonStartError as e:
    sys.exit(f"[demo] {e}")
try:
    print(f"[demo] tritonserver ready at http://{server.http_url} (grpc {server.grpc_url}), "
          f"models: {', '.join(m['name'] for m in server.repository_index())}")
    client = server.http_client()
    a = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    b = np.array([[0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", list(a.shape), "FP32"),
              httpclient.InferInput("INPUT1", list(b.shape), "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("add_sub", inputs)
    print(f"[demo] add_sub({a.tolist()}, {b.tolist()})")
    print(f"[demo]   OUTPUT0 (a+b) = {result.as_numpy('OUTPUT0').tolist()}")
    print(f"[demo]   OUTPUT1 (a-b) = {result.as_numpy('OUTPUT1').tolist()}")
    assert np.array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(result.as_numpy("OUTPUT1"), a - b)
finally:
    server.stop()
    print("[demo] server stopped")
PY
