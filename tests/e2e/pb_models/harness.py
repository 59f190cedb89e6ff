"""Shared by test_differential.py and test_migration.py: renders the pb_models
into a model repository, describes the requests sent to them (CASES), sends a
case to a server and reduces what came back to plain, comparable data.

Each model directory here holds `config.pbtxt.in` (with @NAME@ and @BACKEND@
placeholders) and `1/model.py`, written only against the official Python
backend's API (`import triton_python_backend_utils as pb_utils`).
"""
from __future__ import annotations

import json
import queue
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent

# Models loaded at startup. ctl_target is left for model_control to load,
# bls_init_fails and init_exits (which must fail to load) for test_differential.
CONTROLLED_MODELS = ["ctl_target", "bls_init_fails", "init_exits"]


def model_names() -> list:
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.pbtxt.in").is_file())


def render_model(src_name: str, dst: Path, name: str, backend: str) -> None:
    """Copies pb_models/<src_name> to dst with its config rendered."""
    src = MODELS_DIR / src_name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "config.pbtxt.in"))
    text = (src / "config.pbtxt.in").read_text()
    (dst / "config.pbtxt").write_text(text.replace("@NAME@", name).replace("@BACKEND@", backend))


def render_repository(dst: Path, variants: dict) -> list:
    """Renders every model once per variant: variants maps a name suffix to a
    backend, e.g. {"_python": "python", "_rustpy": "rustpy"} or {"": "python"}.
    Returns the names of the models to load at startup."""
    dst.mkdir(parents=True, exist_ok=True)
    startup = []
    for model in model_names():
        for suffix, backend in variants.items():
            name = model + suffix
            render_model(model, dst / name, name, backend)
            if model not in CONTROLLED_MODELS:
                startup.append(name)
    return startup


def wait_for_models(server, names, timeout: float = 120.0) -> dict:
    """Waits until each model is READY or has failed; returns {name: reason}
    for the ones that are not READY."""
    deadline = time.monotonic() + timeout
    while True:
        index = {m["name"]: m for m in server.repository_index()}
        pending = [n for n in names if index.get(n, {}).get("state") not in ("READY", "UNAVAILABLE")]
        if not pending or time.monotonic() > deadline:
            return {n: index.get(n, {}).get("reason", index.get(n, {}).get("state", "missing"))
                    for n in names if index.get(n, {}).get("state") != "READY"}
        time.sleep(0.2)


# ------------------------------------------------------------------ cases


@dataclass
class Case:
    id: str
    model: str
    inputs: dict
    # "http" | "grpc" | "stream" (one request on a gRPC bidirectional stream)
    protocol: str = "http"
    outputs: Optional[list] = None
    kwargs: dict = field(default_factory=dict)
    # Set while rustpy is known not to support this case yet (xfail, not strict).
    rustpy_xfail: Optional[str] = None


def s(*items) -> np.ndarray:
    """A BYTES array."""
    return np.array([i.encode() if isinstance(i, str) else i for i in items], dtype=np.object_)


def i32(*v):
    return np.array(v, dtype=np.int32)


def f32(*v):
    return np.array(v, dtype=np.float32)


TENSOR_INPUTS = {
    "F32": np.arange(12, dtype=np.float32).reshape(3, 4) / 4,
    "STR": s("alpha", "\u00e9t\u00e9", "", "x\x00y"),
    "B": np.array([True, False, True]),
    "H": np.array([0.5, -1.25, 65504], dtype=np.float16),
    "U64": np.array([0, 2**63, 2**64 - 2], dtype=np.uint64),
}

ERROR_CODES = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED",
               "ALREADY_EXISTS", "CANCELLED"]


def _cases() -> list:
    c = []
    for proto in ("http", "grpc"):
        c.append(Case(f"tensor_api-{proto}", "tensor_api", TENSOR_INPUTS, proto))
        c.append(Case(f"identity-{proto}", "identity", {"IN": f32(1, 2, 3)}, proto))
        c.append(Case(f"arg_checks-{proto}", "arg_checks", {"IN": f32(1, 2)}, proto))
        c.append(Case(f"helpers-{proto}", "helpers", {"IN": f32(1, 2)}, proto))
        c.append(Case(f"init_args-{proto}", "init_args", {"IN": np.array([[1, 2], [3, 4]], dtype=np.int64)},
                      proto))
        c.append(Case(f"request_api-plain-{proto}", "request_api", {"IN": np.array([[1, 2, 3]], dtype=np.int32)},
                      proto))
        c.append(Case(f"request_api-fields-{proto}", "request_api",
                      {"IN": np.array([[5, 6]], dtype=np.int32)}, proto,
                      kwargs={"request_id": "req-17", "sequence_id": 42, "sequence_start": True,
                              "parameters": {"p_str": "v", "p_int": 12, "p_bool": True},
                              "timeout": 5000000}))
        c.append(Case(f"request_api-string-corr-{proto}", "request_api",
                      {"IN": np.array([[5]], dtype=np.int32)}, proto,
                      kwargs={"sequence_id": "seq-a", "sequence_end": True}))
        c.append(Case(f"request_api-requested-{proto}", "request_api",
                      {"IN": np.array([[1, 2]], dtype=np.int32)}, proto, outputs=["OUT1"]))
        c.append(Case(f"request_api-requested-info-{proto}", "request_api",
                      {"IN": np.array([[1, 2]], dtype=np.int32)}, proto, outputs=["INFO", "OUT0"]))
        c.append(Case(f"package_imports-{proto}", "package_imports", {"IN": f32(1, 2)}, proto))
        c.append(Case(f"self_import-{proto}", "self_import", {"IN": f32(1)}, proto))
        c.append(Case(f"async_execute-{proto}", "async_execute", {"IN": f32(1, 2)}, proto))
        c.append(Case(f"async_execute-raise-{proto}", "async_execute", {"IN": f32(-1)}, proto))
        c.append(Case(f"auto_complete-{proto}", "auto_complete",
                      {"IN": np.array([[1, 2], [3, 4]], dtype=np.float32)}, proto))
        c.append(Case(f"auto_complete-optional-{proto}", "auto_complete",
                      {"IN": np.array([[1, 2]], dtype=np.float32), "OPT": np.array([[3]], dtype=np.int32)},
                      proto))
        c.append(Case(f"metrics-{proto}", "metrics", {"IN": np.array([2.5])}, proto))
    # Not "none", "none_item" nor "sender_no_final": the official backend never
    # answers those requests (test_differential pins that down separately).
    error_modes = ["ok", "raise", "raise_model_exception", "raise_multiline", "wrong_count_more",
                   "wrong_count_empty", "tuple", "dict", "bad_item",
                   "error_default", "error_with_outputs", "error_multiline", "unknown_output",
                   "wrong_dtype", "wrong_shape", "no_outputs", "sender_final",
                   "sender_no_final_then_final", "sender_twice", "sender_final_only",
                   "sender_and_return", "sender_caught", "sender_error_response"]
    error_modes += ["error_code:" + code for code in ERROR_CODES]
    for mode in error_modes:
        for proto in ("http", "grpc"):
            c.append(Case(f"errors-{mode}-{proto}", "errors", {"MODE": s(mode)}, proto))
    dec = [("inline", 3), ("inline", 0), ("inline_last_final", 2), ("thread", 3), ("zero", 0),
           ("error", 0), ("error_final", 0), ("return_list", 0), ("raise", 0),
           ("raise_after_send", 0), ("raise_after_final", 0), ("checks", 0), ("race_final", 8), ("report", 0)]
    for mode, n in dec:
        c.append(Case(f"decoupled-{mode}-{n}", "decoupled", {"MODE": s(mode), "N": i32(n)}, "stream"))
    c.append(Case("decoupled-over-http", "decoupled", {"MODE": s("inline"), "N": i32(1)}, "http"))
    c.append(Case("async_decoupled-3", "async_decoupled", {"N": i32(3)}, "stream"))
    for mode in ["exec", "async_exec", "missing_model", "missing_model_decoupled", "error_target",
                 "decoupled", "request_fields"]:
        c.append(Case(f"bls-{mode}", "bls", {"MODE": s(mode), "IN": f32(1, 2, 3)}, "http"))
    c.append(Case("bls-decoupled_as_default", "bls", {"MODE": s("decoupled_as_default"), "IN": f32(1)}, "http"))
    c.append(Case("bls-constructor_errors", "bls", {"MODE": s("constructor_errors"), "IN": f32(1)}, "http"))
    # Not "missing" (loading a model that does not exist): the official
    # backend's error path for model control aborts the server intermittently
    # (boost::interprocess::lock_exception), which would take every other case
    # down with it.
    c.append(Case("bls_phases-http", "bls_phases", {"IN": f32(1, 2)}, "http"))
    for mode in ("on_return", "pre_return", "pre_return_final", "post_return", "zero_pre_return",
                 "two_pre_return", "pre_and_on_return", "on_and_post_return"):
        for protocol in ("http", "grpc"):
            c.append(Case(f"sender_default-{mode}-{protocol}", "sender_default",
                          {"MODE": np.array([[mode.encode()]], dtype=np.object_),
                           "IN": np.array([[7.0]], np.float32)}, protocol))
    c.append(Case("model_control-cycle", "model_control", {"MODE": s("cycle")}, "http"))
    return c


CASES = _cases()


# ------------------------------------------------------------- normalising
class Normaliser:
    """Maps what legitimately differs between two deployments of one model onto
    a common form. Each rule is explained where it is applied."""

    def __init__(self, names: dict, paths: dict):
        # names: {actual model name: canonical name}; paths: {actual: canonical}
        self.paths = sorted(paths.items(), key=lambda kv: -len(kv[0]))
        self._map = dict(names)
        self._name_re = None
        if names:
            # The model's own name: `errors_python` and `errors_rustpy` are one
            # model deployed twice. Instance suffixes (`errors_python_0_0`, as
            # both backends name the instance in execute's messages) are kept,
            # so naming the model instead of the instance is a difference.
            alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
            self._name_re = re.compile(r"(?<![A-Za-z0-9_])(" + alternatives + r")((?:_\d+)*)(?![A-Za-z0-9_])")

    def text(self, value: str) -> str:
        # Where each deployment lives (temp repository directories).
        for actual, canon in self.paths:
            value = value.replace(actual, canon)
        if self._name_re is not None:
            value = self._name_re.sub(lambda m: self._map[m.group(1)] + m.group(2), value)
        return value

    def data(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            out = {self.text(k): self.data(v) for k, v in value.items()}
            if "backend" in out and "name" in out and "input" in out:
                out = self.model_config(out)
            return out
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

    @staticmethod
    def model_config(cfg: dict) -> dict:
        """A model configuration as Triton hands it to the backend:
        - `backend` is what the two deployments differ in;
        - Triton's core fills in `default_model_filename: "model.py"` only for
          models whose backend is named "python"; rustpy loads the same file
          when it is empty."""
        cfg = dict(cfg)
        cfg["backend"] = "<backend>"
        if cfg.get("default_model_filename") in ("", None):
            cfg["default_model_filename"] = "model.py"
        return cfg

    def error(self, message: str) -> str:
        """An error message without the parts that describe where the Python
        code runs rather than what went wrong:
        - the official backend appends pybind11's rendering of the traceback
          ("\\n\\nAt:\\n  file(line): function"), rustpy a standard
          "\\nTraceback (most recent call last):" block; both are dropped;
        - trailing whitespace (the official wrong-count message ends in "\\n").
        """
        message = self.text(message)
        for marker in ("\n\nAt:\n", "\nTraceback (most recent call last):"):
            cut = message.find(marker)
            if cut >= 0:
                message = message[:cut]
        return message.rstrip()


def _bytes_value(v):
    return v if isinstance(v, bytes) else bytes(v)


def reduce_outputs(result, protocol: str, norm: Normaliser) -> dict:
    """{name: {"datatype", "shape", "data"}} with INFO parsed as JSON."""
    resp = result.get_response()
    if protocol == "http":
        outs = [(o["name"], o["datatype"], list(o["shape"])) for o in resp.get("outputs", [])]
    else:
        outs = [(o.name, o.datatype, list(o.shape)) for o in resp.outputs]
    reduced = {}
    for name, datatype, shape in outs:
        arr = result.as_numpy(name)
        entry = {"datatype": datatype, "shape": [int(d) for d in shape],
                 "numpy_dtype": None if arr is None else str(arr.dtype)}
        if arr is not None:
            if datatype == "BYTES":
                values = [_bytes_value(v) for v in arr.ravel()]
                if name == "INFO":
                    entry["data"] = [norm.data(json.loads(v.decode())) for v in values]
                else:
                    entry["data"] = values
            elif arr.dtype.kind == "f":
                # Bit patterns: NaNs and -0.0 compare exactly.
                entry["data"] = arr.view(np.dtype("u%d" % arr.dtype.itemsize)).ravel().tolist()
            else:
                entry["data"] = arr.ravel().tolist()
        reduced[name] = entry
    return dict(sorted(reduced.items()))


def reduce_error(e, norm: Normaliser) -> dict:
    return {"error": {"status": str(e.status()), "message": norm.error(e.message())}}


def _client_kwargs(case: Case) -> dict:
    return dict(case.kwargs)


def run_unary(server, case: Case, model: str, norm: Normaliser, timeout: float = 90.0) -> dict:
    from tritonclient.utils import InferenceServerException
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    mod = httpclient if case.protocol == "http" else grpcclient
    kw = _client_kwargs(case)
    if case.protocol == "http":
        client = server.http_client(network_timeout=timeout, connection_timeout=timeout)
    else:
        client = server.grpc_client()
        kw["client_timeout"] = timeout
    inputs = make_inputs(mod, case.inputs)
    outputs = None if case.outputs is None else [mod.InferRequestedOutput(n) for n in case.outputs]
    try:
        result = client.infer(model, inputs, outputs=outputs, **kw)
    except InferenceServerException as e:
        return reduce_error(e, norm)
    finally:
        client.close()
    return {"outputs": reduce_outputs(result, case.protocol, norm)}


def make_inputs(mod, arrays: dict) -> list:
    from tritonclient.utils import np_to_triton_dtype
    inputs = []
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        inp = mod.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    return inputs


def run_stream(server, case: Case, model: str, norm: Normaliser, timeout: float = 90.0,
               settle: float = 2.0) -> dict:
    """Sends the case on a gRPC stream with empty final responses enabled and
    collects every response until the final one. tritonclient reports an error
    response without its final flag, so after an error the stream is watched
    for `settle` seconds more before the request counts as done (2 s: a later
    response must not be missed on a loaded machine)."""
    import tritonclient.grpc as grpcclient
    q: "queue.Queue" = queue.Queue()
    client = server.grpc_client()
    client.start_stream(callback=lambda result, error: q.put((result, error)))
    items = []
    try:
        client.async_stream_infer(model, make_inputs(grpcclient, case.inputs), request_id="r1",
                                  enable_empty_final_response=True, **_client_kwargs(case))
        deadline = time.monotonic() + timeout
        last_error = False
        while True:
            wait = settle if last_error else max(0.0, deadline - time.monotonic())
            try:
                result, error = q.get(timeout=wait)
            except queue.Empty:
                if last_error:
                    break
                items.append({"timeout": True})
                break
            if error is not None:
                items.append(reduce_error(error, norm))
                last_error = True
                continue
            last_error = False
            resp = result.get_response()
            final = resp.parameters["triton_final_response"].bool_param
            items.append({"final": final, "outputs": reduce_outputs(result, "grpc", norm)})
            if final:
                break
    finally:
        # A stream that never ended must be cancelled: stop_stream() alone
        # waits for it for ever.
        client.stop_stream(cancel_requests=bool(items and items[-1].get("timeout")))
        client.close()
    return {"stream": items}


def no_answer(result: dict) -> Optional[str]:
    """Why `result` (of run_case) is not the server's answer but the harness
    giving up waiting, or None when it is an answer. Two sides that both
    time out compare equal, so a differential test must rule this out.
    DEADLINE_EXCEEDED is only ever the client's own deadline: Triton maps no
    server-side error to it."""
    if "outputs" in result:
        return None
    if "error" in result:
        if result["error"]["status"] == "StatusCode.DEADLINE_EXCEEDED":
            return "no response before the client's deadline"
        return None
    if "stream" in result:
        if any(item.get("timeout") for item in result["stream"]):
            return "the stream did not end (no final response) before the timeout"
        return None
    return f"not a result of run_case: {result!r:.200}"


def run_case(server, case: Case, model: str, norm: Normaliser) -> dict:
    if case.protocol == "stream":
        return run_stream(server, case, model, norm)
    return run_unary(server, case, model, norm)
