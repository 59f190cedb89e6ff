"""Decoupled streaming: stream_counter (generator predict) over gRPC and HTTP SSE."""
import json
import urllib.request

import numpy as np
import pytest

from e2e_client import infer_error, stream


def _values(responses):
    """[(InferResult, final)] -> the OUT values of the non-empty responses."""
    values = []
    for result, _final in responses:
        assert not isinstance(result, Exception), result
        out = result.as_numpy("OUT")
        if out is not None:
            assert out.dtype == np.int32 and out.shape == (1,), (out.dtype, out.shape)
            values.append(int(out[0]))
    return values


@pytest.mark.parametrize("count", [1, 5, 50])
def test_stream_counter_grpc(server, count):
    got = stream(server, "stream_counter", [("r", {"COUNT": np.array([count], np.int32)})])
    responses = got["r"]
    assert _values(responses) == list(range(count))
    # exactly one final flag, on the last response
    assert [final for _, final in responses].count(True) == 1
    assert responses[-1][1] is True


def test_stream_counter_zero_sends_only_final(server):
    got = stream(server, "stream_counter", [("z", {"COUNT": np.array([0], np.int32)})])
    assert _values(got["z"]) == []
    assert len(got["z"]) == 1 and got["z"][0][1] is True
    assert got["z"][0][0].as_numpy("OUT") is None  # the empty final response


def test_stream_counter_interleaved_requests(server):
    counts = {"a": 7, "b": 3, "c": 12, "d": 0}
    got = stream(server, "stream_counter",
                 [(rid, {"COUNT": np.array([n], np.int32)}) for rid, n in counts.items()])
    assert None not in got, got.get(None)
    for rid, n in counts.items():
        assert _values(got[rid]) == list(range(n)), rid
        assert got[rid][-1][1] is True


def test_stream_counter_generate_stream_http(server):
    """HTTP streaming through Triton's generate extension (server-sent events)."""
    req = urllib.request.Request(
        f"http://{server.http_url}/v2/models/stream_counter/generate_stream",
        data=json.dumps({"COUNT": 4}).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read().decode()
    events = [json.loads(line[len("data:"):]) for line in body.splitlines()
              if line.startswith("data:")]
    assert [e["OUT"] for e in events if "OUT" in e] == [0, 1, 2, 3], body


def test_non_streaming_infer_on_decoupled_model_fails_cleanly(server):
    msg = infer_error(server, "grpc", "stream_counter", {"COUNT": np.array([2], np.int32)})
    assert "decoupled" in msg.lower(), msg
    assert server.is_ready()
