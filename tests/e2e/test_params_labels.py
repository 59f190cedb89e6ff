"""Typed request parameters (request_parameters.json) and labels through the
real tritonserver, over HTTP and gRPC.

- Each request's parameters are checked before predict: a bad one fails only
  its own request (INVALID_ARG, naming model, parameter and rule) while the
  other requests of the same batch succeed; missing ones get their defaults;
  predict sees typed Python values.
- Triton's classification extension works for rustpy models: asking for an
  output with class_count k gives "score:index:label" strings read from the
  output's label_filename.
- `ctx.labels` / `ctx.output_labels` (docs/python-api.md, "Labels"): the
  model `labelled` answers what it was given, so the client sees it.
"""
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

import e2e_client as ec

REPO = Path(__file__).resolve().parent / "repos" / "params"
X = np.array([[0.1, 0.4, 0.2, 0.3]], dtype=np.float32)


@pytest.fixture(scope="module")
def params_server():
    from tritonharness import TritonServer
    s = TritonServer(REPO, name="params").start()
    yield s
    s.stop()


def _infer(server, protocol, parameters=None, outputs=None):
    return ec.infer(server, protocol, "typed", {"X": X}, parameters=parameters, outputs=outputs)


def test_defaults_and_typed_values_reach_predict(params_server, protocol):
    r = _infer(params_server, protocol, parameters={"scale": 2, "mode": "reverse"})
    np.testing.assert_allclose(r.as_numpy("PROBS"), (X * 2)[:, ::-1], rtol=1e-6)
    seen = r.as_numpy("SEEN")[0, 0].decode()
    # An int sent for a float parameter arrives as float; the others are defaults.
    assert seen == ("[('mode', 'str', 'reverse'), ('scale', 'float', 2.0), "
                    "('top_k', 'int', 4), ('trace', 'bool', False)]"), seen


@pytest.mark.parametrize("parameters, message", [
    ({"scale": 11.5}, "request parameter 'scale' is 11.5, above the maximum 10"),
    ({"scale": "big"}, "request parameter 'scale' must be of type float, got string \"big\""),
    ({"mode": "sideways"},
     "request parameter 'mode' is \"sideways\", not one of the allowed values [\"plain\", \"reverse\"]"),
    ({"top_k": 0}, "request parameter 'top_k' is 0, below the minimum 1"),
    ({"trace": 1}, "request parameter 'trace' must be of type bool, got int 1"),
    ({"temperature": 0.5},
     "unknown request parameter 'temperature' (the model accepts: scale, mode, top_k, trace)"),
])
def test_bad_parameters_fail_with_a_clear_error(params_server, protocol, parameters, message):
    try:
        _infer(params_server, protocol, parameters=parameters)
    except InferenceServerException as e:
        assert "model 'typed'" in e.message() and message in e.message(), e.message()
        if protocol == "http":
            assert e.status() == "400", e.status()
        else:
            assert e.status() == "StatusCode.INVALID_ARGUMENT", e.status()
        return
    raise AssertionError("a bad parameter was accepted")


def test_a_bad_request_fails_alone_in_its_batch(params_server, protocol):
    """Three requests sent together form one batch (queue delay 3 s, preferred
    size 3); the one with a bad parameter fails, the two others run in one
    predict call (ROWS: the call's row count) and succeed."""
    stats_before = params_server.model_stats("typed")
    before, inferred_before = stats_before["execution_count"], stats_before["inference_count"]
    results = [None] * 3
    params = [{"scale": 1.0}, {"scale": -1.0}, {"scale": 3.0}]

    # Clients made up front and a barrier: on a loaded machine, making a
    # client inside each thread could spread the sends past the queue delay.
    clients = [ec.client(params_server, protocol) for _ in range(3)]
    go = threading.Barrier(3)

    def send(i):
        c = clients[i]
        go.wait(timeout=60)
        try:
            results[i] = ec.infer(c, protocol, "typed", {"X": X}, parameters=params[i])
        except InferenceServerException as e:
            results[i] = e

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(results[1], InferenceServerException), results[1]
    assert "request parameter 'scale' is -1.0, below the minimum 0" in results[1].message()
    for i, k in ((0, 1.0), (2, 3.0)):
        assert not isinstance(results[i], Exception), results[i]
        np.testing.assert_allclose(results[i].as_numpy("PROBS"), X * k, rtol=1e-6)
        assert results[i].as_numpy("ROWS")[0, 0] == 2
    # All three went to the backend in a single execution.
    after = params_server.model_stats_when(
        "typed", lambda st: st["inference_count"] >= inferred_before + 2)
    assert after["execution_count"] == before + 1


def test_classification_extension_returns_labels(params_server, protocol):
    mod = ec.module(protocol)
    out = mod.InferRequestedOutput("PROBS", class_count=2)
    c = ec.client(params_server, protocol)
    r = c.infer("typed", ec.make_inputs(protocol, {"X": X}), outputs=[out])
    got = [v.decode() if isinstance(v, bytes) else v for v in r.as_numpy("PROBS").reshape(-1)]
    assert got == ["0.400000:1:dog", "0.300000:3:fish"], got
    # With parameters too: the labels follow the reversed scores.
    r = c.infer("typed", ec.make_inputs(protocol, {"X": X}), outputs=[out],
                parameters={"mode": "reverse"})
    got = [v.decode() if isinstance(v, bytes) else v for v in r.as_numpy("PROBS").reshape(-1)]
    assert got == ["0.400000:2:bird", "0.300000:0:cat"], got


@pytest.mark.parametrize("model, labels, output_labels", [
    # label_filename wins over the labels.txt beside it (which says "not these").
    ("labelled", ["ant", "bee", "wasp"], {"SCORES": ["ant", "bee", "wasp"]}),
    # No label_filename: labels.txt beside config.pbtxt.
    ("labels_fallback", ["red", "green", "blue"], {}),
])
def test_ctx_labels_reach_the_model(params_server, protocol, model, labels, output_labels):
    x = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)
    r = ec.infer(params_server, protocol, model, {"X": x})
    for row in range(2):
        assert json.loads(r.as_numpy("LABELS")[row, 0]) == labels
        assert json.loads(r.as_numpy("OUTPUT_LABELS")[row, 0]) == output_labels
    if output_labels:
        # The same file names the classes of Triton's classification extension.
        mod = ec.module(protocol)
        c = ec.client(params_server, protocol)
        r = c.infer(model, ec.make_inputs(protocol, {"X": x[:1]}),
                    outputs=[mod.InferRequestedOutput("SCORES", class_count=1)])
        got = [v.decode() if isinstance(v, bytes) else v for v in r.as_numpy("SCORES").reshape(-1)]
        assert got == ["0.700000:1:bee"], got
