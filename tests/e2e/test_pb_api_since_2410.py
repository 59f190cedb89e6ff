"""The python_backend API added after r24.10 (Triton 2.51) that the 2.51
server can carry, rustpy only (the official 2.51 backend predates it):

- `InferenceResponse(..., parameters={...})` and `response.parameters()`
  (r25.02): checked as upstream checks them, and delivered to the client
  (HTTP and gRPC), from returned responses and through a decoupled sender;
- BLS responses carry the callee's response parameters (r25.02) and error
  code (r25.04);
- `.cancel()` on a decoupled BLS call's response iterator (r25.04): the
  callee sees `is_cancelled()`, the stream ends early with CANCELLED, and
  cancelling a finished stream does nothing.

In-process and process-isolated (`--backend-config=rustpy,default-isolation=process`).
Upstream's own QA for these (qa/L0_backend_python/parameters, decoupled's
*_cancel models) runs through ../shared/upstream-qa.
"""
import json
import queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from e2e_client import PROTOCOLS, infer, infer_error

ECHO_PARAMS = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "PARAMS").as_numpy()[0].decode()
            params = json.loads(text)
            if isinstance(params, dict) and "int_key" in params:
                params = {1: "an int key"}
            if isinstance(params, dict) and "float" in params:
                params["float"] = 0.5
            out = pb_utils.Tensor("OUT", np.array([text.encode()], dtype=np.object_))
            try:
                response = pb_utils.InferenceResponse([out], parameters=params)
                assert json.loads(response.parameters()) == params
            except pb_utils.TritonModelException as e:
                response = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
            responses.append(response)
        return responses
'''

STREAM_PARAMS = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            text = pb_utils.get_input_tensor_by_name(request, "PARAMS").as_numpy()[0].decode()
            for params in json.loads(text):
                out = pb_utils.Tensor("OUT", np.array([json.dumps(params).encode()], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse([out], parameters=params))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

UNTIL_CANCELLED = '''
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        request = requests[0]
        sender = request.get_response_sender()
        for i in range(400):
            if request.is_cancelled():
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "cancelled after %d" % i, pb_utils.TritonError.CANCELLED)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return None
            sender.send(pb_utils.InferenceResponse(
                [pb_utils.Tensor("N", np.array([i], dtype=np.int32))]))
            time.sleep(0.02)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

CALLER = '''
import asyncio
import json
import numpy as np
import triton_python_backend_utils as pb_utils


def bls(model, text):
    return pb_utils.InferenceRequest(
        model_name=model, requested_output_names=["OUT"],
        inputs=[pb_utils.Tensor("PARAMS", np.array([text.encode()], dtype=np.object_))])


def until_cancelled():
    return pb_utils.InferenceRequest(
        model_name="until_cancelled", requested_output_names=["N"],
        inputs=[pb_utils.Tensor("X", np.array([0], dtype=np.int32))])


def read_after_cancel(stream, stop_at):
    got, error = [], None
    for response in stream:
        if response.has_error():
            error = [response.error().code(), response.error().message()]
            break
        if not response.output_tensors():
            break
        got.append(int(pb_utils.get_output_tensor_by_name(response, "N").as_numpy()[0]))
        if len(got) == stop_at:
            stream.cancel()
    stream.cancel()  # after completion: nothing to do, no error
    return {"got": got, "error": error}


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            if mode == "params":
                one = bls("echo_params", json.dumps({"a": 1, "b": "x", "c": True})).exec()
                stream = bls("stream_params", json.dumps([{"k": 1}, {"k": "two"}])).exec(decoupled=True)
                streamed = [json.loads(r.parameters()) for r in stream if r.output_tensors()]
                bad = bls("echo_params", json.dumps({"int_key": 1})).exec()
                out = {"one": json.loads(one.parameters()), "streamed": streamed,
                       "error": [bad.error().code(), bad.error().message()]}
            elif mode == "cancel":
                out = read_after_cancel(until_cancelled().exec(decoupled=True), 3)
            elif mode == "cancel_async":
                out = read_after_cancel(await until_cancelled().async_exec(decoupled=True), 2)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUT", np.array([json.dumps(out).encode()], dtype=np.object_))]))
        return responses
'''


def config(name, inputs, outputs, decoupled=False):
    tensors = lambda kind, spec: ", ".join(
        '{ name: "%s" data_type: %s dims: [ 1 ] }' % (n, t) for n, t in spec)
    text = 'name: "%s"\nbackend: "rustpy"\nmax_batch_size: 0\n' % name
    text += "input [ %s ]\noutput [ %s ]\n" % (tensors("input", inputs), tensors("output", outputs))
    if decoupled:
        text += "model_transaction_policy { decoupled: true }\n"
    return text


MODELS = {
    "echo_params": (ECHO_PARAMS, [("PARAMS", "TYPE_STRING")], [("OUT", "TYPE_STRING")], False),
    "stream_params": (STREAM_PARAMS, [("PARAMS", "TYPE_STRING")], [("OUT", "TYPE_STRING")], True),
    "until_cancelled": (UNTIL_CANCELLED, [("X", "TYPE_INT32")], [("N", "TYPE_INT32")], True),
    "caller": (CALLER, [("MODE", "TYPE_STRING")], [("OUT", "TYPE_STRING")], False),
}

MODES = {"in_process": [], "process": ["--backend-config=rustpy,default-isolation=process"]}


@pytest.fixture(scope="module", params=list(MODES))
def server(request, tmp_path_factory):
    from tritonharness import TritonServer
    repo = tmp_path_factory.mktemp("pb_api") / "repo"
    for name, (code, inputs, outputs, decoupled) in MODELS.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(config(name, inputs, outputs, decoupled))
        (repo / name / "1" / "model.py").write_text(code)
    s = TritonServer(repo, extra_args=MODES[request.param], name="pb_api_" + request.param).start()
    yield s
    s.stop()


def response_parameters(result, protocol):
    if protocol == "http":
        return result.get_response().get("parameters", {})
    params = {}
    for key, value in result.get_response().parameters.items():
        params[key] = getattr(value, value.WhichOneof("parameter_choice"))
    return params


def text(arr):
    return np.array([arr.encode()], dtype=np.object_)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_response_parameters_reach_the_client(server, protocol):
    for params in ({}, {"one": False}, {"b": True, "s": "Hello", "i": 1024, "neg": -(2 ** 63)}):
        result = infer(server, protocol, "echo_params", {"PARAMS": text(json.dumps(params))})
        assert response_parameters(result, protocol) == params
        assert result.as_numpy("OUT")[0].decode() == json.dumps(params)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_response_parameters_are_refused_as_upstream(server, protocol):
    for params, message in (
            ([], "Expect dict, got <class 'list'>"),
            ({"int_key": 1}, "Expect parameters keys to have type str, found type <class 'int'>"),
            ({"float": 1}, "Expect parameters values to have type bool/int/str, found type <class 'float'>"),
            ({"none": None}, "Expect parameters values to have type bool/int/str, found type <class 'NoneType'>"),
            ({"nested": ["x"]}, "Expect parameters values to have type bool/int/str, found type <class 'list'>"),
            ({"big": 2 ** 64}, "fit in 64 bits")):
        error = infer_error(server, protocol, "echo_params", {"PARAMS": text(json.dumps(params))})
        assert message in error, error


def test_decoupled_responses_carry_their_parameters(server):
    sent = [{"bool": False, "int": 2048}, {"str": "Hello World!"}]
    results = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        c.start_stream(callback=lambda result, error: results.put((result, error)))
        inp = grpcclient.InferInput("PARAMS", [1], "BYTES")
        inp.set_data_from_numpy(text(json.dumps(sent)))
        c.async_stream_infer("stream_params", [inp])
        got = [results.get(timeout=60) for _ in sent]
        c.stop_stream()
    for (result, error), params in zip(got, sent):
        assert error is None
        # The gRPC stream adds its own triton_final_response parameter.
        assert response_parameters(result, "grpc") == dict(params, triton_final_response=False)


def call(server, mode, protocol="http"):
    out = infer(server, protocol, "caller", {"MODE": text(mode)})
    return json.loads(out.as_numpy("OUT")[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bls_responses_carry_the_callees_parameters_and_error_code(server, protocol):
    out = call(server, "params", protocol)
    assert out["one"] == {"a": 1, "b": "x", "c": True}
    assert out["streamed"] == [{"k": 1}, {"k": "two"}]
    # The callee's INVALID_ARG reaches the caller (r25.04; 2.51 said INTERNAL).
    assert out["error"][0] == 3 and "found type <class 'int'>" in out["error"][1]


@pytest.mark.parametrize("mode,stop_at", [("cancel", 3), ("cancel_async", 2)])
def test_cancel_on_a_decoupled_bls_stream(server, mode, stop_at):
    out = call(server, mode)
    # The callee saw is_cancelled() and ended the stream with CANCELLED
    # long before its 400 responses; nothing raised on the second cancel().
    assert out["got"][:stop_at] == list(range(stop_at)), out
    assert len(out["got"]) < 100, out
    assert out["error"][0] == 7 and out["error"][1].startswith("cancelled after"), out
