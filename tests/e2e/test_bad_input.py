"""Malformed requests over the wire (JSON HTTP, binary-extension HTTP, gRPC).

Every case must be answered with an error that names the input and the
reason (or, for well-formed edge cases such as empty tensors, with a correct
answer), and the server must keep serving. Whichever layer rejects a request
(Triton's frontend/core or rustpy's own validation) is fine; the tests check
the message the client gets.
"""
import numpy as np
import pytest

from e2e_client import infer, infer_error
from reliability import RELIABILITY, bytes_elems, http_infer_raw, start_server
from tritonharness import MODEL_REPOSITORY

BADINPUT = RELIABILITY / "badinput"


@pytest.fixture(scope="module")
def srv():
    s = start_server(MODEL_REPOSITORY, BADINPUT, name="badinput")
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def still_serving(srv):
    """After every case: the process is alive, ready, and answers correctly."""
    yield
    assert srv.running, "tritonserver died\n" + srv.log_tail()
    assert srv.is_live() and srv.is_ready()
    a = np.ones((1, 4), np.float32)
    r = infer(srv, "http", "add_sub", {"INPUT0": a, "INPUT1": a})
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a * 2)


def _json_input(name, shape, datatype, data=None, binary_size=None):
    d = {"name": name, "shape": list(shape), "datatype": datatype}
    if data is not None:
        d["data"] = data
    if binary_size is not None:
        d["parameters"] = {"binary_data_size": binary_size}
    return d


FOUR = [1.0, 2.0, 3.0, 4.0]
F32_4 = np.array(FOUR, np.float32).tobytes()


def _add_sub_header(in0, in1=None):
    inputs = [in0] if in1 is None else [in0, in1]
    return {"inputs": inputs}


def assert_error(status, body, *needles, code=(400,)):
    assert status in code, (status, body)
    msg = body["error"] if isinstance(body, dict) else str(body)
    for n in needles:
        assert n.lower() in msg.lower(), f"{n!r} not in error {msg!r}"
    return msg


# ------------------------------------------------------------- wrong dtype
def test_wrong_dtype_json(srv):
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT0", [1, 4], "INT32", [1, 2, 3, 4]),
        _json_input("INPUT1", [1, 4], "FP32", FOUR)))
    assert_error(st, body, "'INPUT0'", "INT32", "FP32")


def test_wrong_dtype_binary(srv):
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT0", [1, 4], "FP64", binary_size=32),
        _json_input("INPUT1", [1, 4], "FP32", binary_size=16)),
        np.array(FOUR, np.float64).tobytes() + F32_4)
    assert_error(st, body, "'INPUT0'", "FP64", "FP32")


def test_wrong_dtype_grpc(srv):
    msg = infer_error(srv, "grpc", "add_sub", {
        "INPUT0": np.ones((1, 4), np.int32), "INPUT1": np.ones((1, 4), np.float32)})
    assert "'INPUT0'" in msg and "INT32" in msg and "FP32" in msg, msg


# ------------------------------------------------------- wrong rank / dims
@pytest.mark.parametrize("shape", [[4], [1, 2, 2], [1, 5]], ids=["rank1", "rank3", "dims"])
def test_wrong_shape_json(srv, shape):
    n = int(np.prod(shape))
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT0", shape, "FP32", [1.0] * n),
        _json_input("INPUT1", shape, "FP32", [1.0] * n)))
    # Triton names the first input it checks (either one).
    assert_error(st, body, "'INPUT", "shape", str(shape).replace(" ", ""))


def test_wrong_shape_binary(srv):
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT0", [2, 2], "FP32", binary_size=16),
        _json_input("INPUT1", [2, 2], "FP32", binary_size=16)), F32_4 + F32_4)
    assert_error(st, body, "'INPUT", "shape", "[2,2]")


def test_wrong_shape_grpc(srv):
    msg = infer_error(srv, "grpc", "add_sub", {
        "INPUT0": np.ones((1, 3), np.float32), "INPUT1": np.ones((1, 4), np.float32)})
    assert "'INPUT0'" in msg and "shape" in msg, msg


def test_batch_sizes_disagree(srv):
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT0", [2, 4], "FP32", FOUR * 2),
        _json_input("INPUT1", [1, 4], "FP32", FOUR)))
    assert_error(st, body, "'INPUT0'", "batch size")


def test_binary_data_size_disagrees_with_shape(srv):
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT0", [1, 4], "FP32", binary_size=8),
        _json_input("INPUT1", [1, 4], "FP32", FOUR)), F32_4[:8])
    assert_error(st, body, "'INPUT0'", "byte size", "Expected 16, got 8")


def test_json_data_count_disagrees_with_shape(srv):
    # Triton's JSON parser rejects this before the request exists; its message
    # names the 'data' field, not the input (Triton's wording, not ours).
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT0", [1, 4], "FP32", FOUR[:3]),
        _json_input("INPUT1", [1, 4], "FP32", FOUR)))
    assert_error(st, body, "data", "shape", code=(400, 500))


def test_json_data_of_wrong_type(srv):
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT0", [1, 4], "FP32", ["a", "b", "c", "d"]),
        _json_input("INPUT1", [1, 4], "FP32", FOUR)))
    assert_error(st, body, "data", "non-number", code=(400, 500))


# --------------------------------------------------- missing / unknown input
def test_missing_input_json(srv):
    st, body = http_infer_raw(srv, "add_sub", _add_sub_header(
        _json_input("INPUT1", [1, 4], "FP32", FOUR)))
    assert_error(st, body, "missing", "'INPUT0'")


def test_missing_input_grpc(srv):
    msg = infer_error(srv, "grpc", "add_sub", {"INPUT1": np.ones((1, 4), np.float32)})
    assert "missing" in msg and "'INPUT0'" in msg, msg


def test_unknown_input_json(srv):
    st, body = http_infer_raw(srv, "add_sub", {"inputs": [
        _json_input("INPUT0", [1, 4], "FP32", FOUR),
        _json_input("INPUT1", [1, 4], "FP32", FOUR),
        _json_input("BOGUS", [1, 4], "FP32", FOUR)]})
    assert_error(st, body, "'BOGUS'", "expected 2 inputs but got 3")


def test_unknown_input_binary(srv):
    st, body = http_infer_raw(srv, "var", {"inputs": [
        _json_input("X", [1, 4], "FP32", binary_size=16),
        _json_input("NOT_AN_INPUT", [1, 4], "FP32", binary_size=16)]}, F32_4 + F32_4)
    assert_error(st, body, "'NOT_AN_INPUT'")


def test_unknown_output_requested(srv):
    hdr = _add_sub_header(_json_input("INPUT0", [1, 4], "FP32", FOUR),
                          _json_input("INPUT1", [1, 4], "FP32", FOUR))
    hdr["outputs"] = [{"name": "NOPE"}]
    st, body = http_infer_raw(srv, "add_sub", hdr)
    assert_error(st, body, "'NOPE'")


# ------------------------------------------------------- malformed BYTES
def _bytes_case(srv, payload, shape=(1, 1)):
    return http_infer_raw(srv, "string_upper", {"inputs": [
        _json_input("TEXT", shape, "BYTES", binary_size=len(payload))]}, payload)


def test_bytes_well_formed_binary(srv):
    st, body = _bytes_case(srv, bytes_elems(b"hello"))
    assert st == 200, body
    assert body["outputs"][0]["data"] == ["HELLO"]


def test_bytes_truncated_length_prefix(srv):
    st, body = _bytes_case(srv, b"\x05\x00")
    assert_error(st, body, "'TEXT'", "length", "2 bytes")


def test_bytes_element_longer_than_payload(srv):
    payload = bytes_elems(b"hello")
    payload = b"\x32\x00\x00\x00" + payload[4:]           # claims 50 bytes, has 5
    st, body = _bytes_case(srv, payload)
    assert_error(st, body, "'TEXT'", "50")


def test_bytes_trailing_partial_prefix(srv):
    st, body = _bytes_case(srv, bytes_elems(b"hello") + b"\x01")
    assert_error(st, body, "'TEXT'", "length")


@pytest.mark.parametrize("elems,shape", [
    ([b"a", b"b"], [1, 1]),          # more elements than the shape holds
    ([b"a"], [2, 1]),                # fewer
], ids=["too_many", "too_few"])
def test_bytes_element_count_mismatch(srv, elems, shape):
    st, body = _bytes_case(srv, bytes_elems(*elems), shape)
    assert_error(st, body, "'TEXT'", "element")


def test_bytes_not_utf8_reaches_user_code(srv):
    """Non-UTF-8 and NUL bytes survive; the element count is what matters."""
    data = np.array([[b"\xff\x00\xfe"]], dtype=object)
    msg = infer_error(srv, "grpc", "string_upper", {"TEXT": data})
    # string_upper decodes UTF-8 in user code: the model's own error names the
    # exception, and the server keeps serving.
    assert "UnicodeDecodeError" in msg, msg


# ----------------------------------------------------------- empty tensors
def test_empty_batch_rejected(srv, protocol):
    z = np.zeros((0, 4), np.float32)
    msg = infer_error(srv, protocol, "add_sub", {"INPUT0": z, "INPUT1": z})
    assert "INPUT" in msg, msg


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_empty_row_is_answered(srv, proto):
    """[1, 0] is a valid shape for dims [-1]: the model answers with an empty
    output. (Regression: an empty output used to get no buffer, which crashed
    the HTTP frontend with SIGSEGV and failed gRPC with 'response output count
    mismatch'.)"""
    r = infer(srv, proto, "var", {"X": np.zeros((1, 0), np.float32)})
    assert r.as_numpy("Y").shape == (1, 0)
    assert r.as_numpy("ROWS").tolist() == [[1]]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_empty_no_batch_tensor_is_answered(srv, proto):
    r = infer(srv, proto, "no_batch", {"INPUT": np.zeros((0,), np.float32)})
    assert r.as_numpy("SUM").tolist() == [0.0]
    assert r.as_numpy("SORTED").shape == (0,)


@pytest.mark.parametrize("shape", [(0, 0), (3, 0), (0, 5)])
def test_empty_bytes_tensor_is_answered(srv, protocol, shape):
    r = infer(srv, protocol, "var_bytes", {"S": np.zeros(shape, dtype=object)})
    assert r.as_numpy("N").tolist() == [0]
    assert r.as_numpy("TOTAL").tolist() == [0]
    assert r.as_numpy("ECHO").shape == shape


def test_empty_bytes_elements(srv, protocol):
    s = np.array([[b"", b"x"], [b"", b""]], dtype=object)
    r = infer(srv, protocol, "var_bytes", {"S": s})
    assert r.as_numpy("N").tolist() == [4] and r.as_numpy("TOTAL").tolist() == [1]
    assert r.as_numpy("ECHO").tolist() == s.tolist()


# --------------------------------------------------------------- oversized
def test_batch_larger_than_max_batch_size(srv, protocol):
    a = np.ones((65, 4), np.float32)
    msg = infer_error(srv, protocol, "add_sub", {"INPUT0": a, "INPUT1": a})
    assert "batch-size must be <= 64" in msg, msg


@pytest.mark.parametrize("shape,message", [
    ([1, 2**62 + 1], "model 'var': input 'X' has shape [1,4611686018427387905], whose size overflows"),
    # Triton's core refuses these two itself (its int64 byte size wraps for 2**61).
    ([1, 2**61], "[request id: <id_unknown>] input byte size mismatch for input 'X' for model 'var'. "
                 "Expected -9223372036854775808, got 4"),
    ([1, 2**31], "[request id: <id_unknown>] input byte size mismatch for input 'X' for model 'var'. "
                 "Expected 8589934592, got 4"),
], ids=["wraps_to_4_bytes", "huge", "2G_elems"])
def test_huge_declared_shape_tiny_payload(srv, shape, message):
    """A shape whose byte size overflows 64 bits (2**62+1 floats = 4 bytes
    mod 2**64: Triton's own check passes, rustpy's refuses it) or is far
    larger than the payload must not reach user code as a bogus array, nor
    make anyone allocate it."""
    st, body = http_infer_raw(srv, "var", {"inputs": [
        _json_input("X", shape, "FP32", binary_size=4)]}, b"\0\0\0\0")
    assert (st, body) == (400, {"error": message})


def test_huge_declared_bytes_shape(srv):
    # 2**32 x 2**32 elements is 0 mod 2**64: an empty payload must not pass as
    # an empty tensor of that shape.
    st, body = http_infer_raw(srv, "var_bytes", {"inputs": [
        _json_input("S", [2**32, 2**32], "BYTES", binary_size=4)]}, b"\0\0\0\0")
    assert (st, body) == (400, {"error": "[request id: <id_unknown>] unexpected number of string "
                                         "elements 1 for inference input 'S' for model 'var_bytes', "
                                         "expecting 0"})


def test_large_payload_is_served(srv, protocol):
    """32 MiB in one request is served (no size limit trips, nothing truncates)."""
    x = np.arange(8 * 2**20, dtype=np.float32)
    r = infer(srv, protocol, "no_batch", {"INPUT": x[::-1].copy()})
    assert r.as_numpy("SUM")[0] == x.sum(dtype=np.float64)
    np.testing.assert_array_equal(r.as_numpy("SORTED"), x)


def test_not_json_at_all(srv):
    import urllib.request
    req = urllib.request.Request(f"http://{srv.http_url}/v2/models/add_sub/infer",
                                 data=b"\x00\xffnot json{", method="POST")
    try:
        urllib.request.urlopen(req, timeout=60)
        raise AssertionError("garbage body accepted")
    except urllib.error.HTTPError as e:
        assert e.code in (400, 500)


def test_header_length_beyond_body(srv):
    import urllib.request
    body = b'{"inputs": []}'
    req = urllib.request.Request(
        f"http://{srv.http_url}/v2/models/add_sub/infer", data=body, method="POST",
        headers={"Inference-Header-Content-Length": str(len(body) + 100)})
    try:
        urllib.request.urlopen(req, timeout=60)
        raise AssertionError("inconsistent header length accepted")
    except urllib.error.HTTPError as e:
        assert e.code in (400, 500)


def test_errors_do_not_count_as_crash(srv):
    """Many bad requests in a row, interleaved with good ones."""
    for i in range(50):
        st, _ = _bytes_case(srv, b"\x09\x00\x00\x00abc")
        assert st == 400
        r = infer(srv, "grpc", "string_upper", {"TEXT": np.array([[b"ok%d" % i]], dtype=object)})
        assert r.as_numpy("UPPER")[0, 0] == b"OK%d" % i


@pytest.mark.parametrize("payload,needle", [
    (b"\x32\x00\x00\x00hello", "50"),                 # element longer than the payload
    (b"\x05\x00", "length"),                           # truncated length prefix
    (bytes_elems(b"a", b"b"), "element"),              # more elements than the shape
], ids=["long_element", "truncated_prefix", "too_many"])
def test_bytes_malformed_grpc_raw_contents(srv, payload, needle):
    """The same malformed BYTES payloads over gRPC (raw_input_contents)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    with grpc.insecure_channel(srv.grpc_url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name="string_upper")
        inp = req.inputs.add()
        inp.name, inp.datatype = "TEXT", "BYTES"
        inp.shape.extend([1, 1])
        req.raw_input_contents.append(payload)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, timeout=90)
    msg = err.value.details()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, msg
    assert "'TEXT'" in msg and needle in msg, msg
