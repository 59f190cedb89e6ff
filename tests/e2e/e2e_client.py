"""Small protocol-agnostic helpers over tritonclient.http / tritonclient.grpc."""
from __future__ import annotations

import queue
import re
from typing import Optional

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

PROTOCOLS = ("http", "grpc")


def module(protocol: str):
    return httpclient if protocol == "http" else grpcclient


def client(server, protocol: str, **kw):
    return server.http_client(**kw) if protocol == "http" else server.grpc_client(**kw)


def make_inputs(protocol: str, arrays: dict, dtypes: Optional[dict] = None) -> list:
    """{name: ndarray} -> [InferInput]; dtypes overrides the Triton dtype of a name."""
    mod = module(protocol)
    inputs = []
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        dtype = (dtypes or {}).get(name) or np_to_triton_dtype(arr.dtype)
        inp = mod.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    return inputs


def make_outputs(protocol: str, names) -> Optional[list]:
    if names is None:
        return None
    return [module(protocol).InferRequestedOutput(n) for n in names]


def infer(server_or_client, protocol: str, model: str, arrays: dict, *,
          outputs=None, parameters=None, request_id: str = "", dtypes=None):
    c = server_or_client
    if hasattr(c, "http_client"):
        c = client(c, protocol)
    return c.infer(model, make_inputs(protocol, arrays, dtypes),
                   outputs=make_outputs(protocol, outputs),
                   parameters=parameters, request_id=request_id)


def infer_error(server_or_client, protocol: str, model: str, arrays: dict, **kw) -> str:
    """Runs an inference that must fail; returns the error message."""
    try:
        infer(server_or_client, protocol, model, arrays, **kw)
    except InferenceServerException as e:
        return e.message()
    raise AssertionError(f"inference on {model!r} over {protocol} succeeded but should fail")


def output_names(result, protocol: str) -> list:
    resp = result.get_response()
    if protocol == "http":
        return [o["name"] for o in resp.get("outputs", [])]
    return [o.name for o in resp.outputs]


def has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text) is not None


def stream(server, model: str, requests: list, timeout: float = 60.0) -> dict:
    """Sends `requests` ([(request_id, {name: ndarray}), ...]) on one gRPC stream
    with enable_empty_final_response=True and collects, per request id, the list of
    (InferResult, is_final) until every request has its final response. Errors
    arrive as (InferenceServerException, True)."""
    got = {rid: [] for rid, _ in requests}
    q: "queue.Queue" = queue.Queue()
    c = server.grpc_client()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        for rid, arrays in requests:
            c.async_stream_infer(model, make_inputs("grpc", arrays), request_id=rid,
                                 enable_empty_final_response=True)
        pending = set(got)
        while pending:
            result, error = q.get(timeout=timeout)
            if error is not None:
                # A stream error carries no request id: it ends the request if only
                # one is pending; otherwise it is kept under the key None.
                if len(pending) == 1:
                    got[pending.pop()].append((error, True))
                else:
                    got.setdefault(None, []).append((error, True))
                continue
            resp = result.get_response()
            final = resp.parameters["triton_final_response"].bool_param
            got[resp.id].append((result, final))
            if final:
                pending.discard(resp.id)
    finally:
        c.stop_stream()
        c.close()
    return got
