"""User code in a process-isolated model can reach the shared-memory files
the backend maps (they are open in its process: /proc/self/fd). Truncating
one must not take the server down: a mapping touched past the end of its
file raises SIGBUS in whoever touches it, and the backend reads and writes
the regions from the server process (docs/isolation.md, "Transport").

Every region is sealed against shrinking (the truncate fails in the worker
with EPERM), the BLS regions too: both sides map them, and the server reads
a worker's BLS inputs there in place (docs/isolation.md, "BLS tensors").
Scribbling over them while a call is in flight changes at most that call's
answer.
"""
import json
import textwrap

import numpy as np
import pytest

from e2e_client import infer
from reliability import start_server

HOSTILE_CONFIG = """
name: "hostile"
backend: "rustpy"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_UINT8 dims: [ -1 ] },
        { name: "MODE" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_UINT8 dims: [ -1 ] },
         { name: "REPORT" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "rustpy.isolation" value { string_value: "process" } }
"""

HOSTILE_MODEL = textwrap.dedent('''
    """MODE 0: OUT = IN ^ 0x33 (computed here); MODE 1: truncate every
    rustpy memfd of this process but the output region to 0 bytes, REPORT =
    what each truncate did; MODE 2: OUT = a BLS call to `target` with IN;
    MODE 3: truncate the output region; MODE 4: the BLS call of MODE 2 while
    a thread scribbles over both BLS regions, REPORT = how many writes."""
    import json
    import os
    import threading

    import numpy as np
    import triton_python_backend_utils as pb_utils


    def memfds():
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink("/proc/self/fd/" + fd)
            except OSError:
                continue
            if target.startswith("/memfd:rustpy-"):
                yield int(fd), target[len("/memfd:"):].split()[0]


    class TritonPythonModel:
        def execute(self, requests):
            out = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
                mode = int(pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0])
                report = {}
                y = x ^ np.uint8(0x33)
                if mode in (1, 3):
                    for fd, name in memfds():
                        if (name == "rustpy-output") != (mode == 3):
                            continue
                        try:
                            os.ftruncate(fd, 0)
                            report[name] = "truncated"
                        except OSError as e:
                            report[name] = type(e).__name__
                elif mode == 4:
                    stop, scribbling = threading.Event(), threading.Event()
                    writes = [0]

                    def scribble():
                        junk = os.urandom(1 << 16)
                        fds = [fd for fd, name in memfds() if name.startswith("rustpy-bls-")]
                        while True:
                            for fd in fds:
                                for at in range(0, 8 << 20, 1 << 20):
                                    os.pwrite(fd, junk, at)
                                    writes[0] += 1
                            scribbling.set()
                            if stop.is_set():
                                return

                    t = threading.Thread(target=scribble)
                    t.start()
                    scribbling.wait()
                    try:
                        resp = pb_utils.InferenceRequest(
                            model_name="target", requested_output_names=["OUT"],
                            inputs=[pb_utils.Tensor("IN", x)]).exec()
                    finally:
                        stop.set()
                        t.join()
                    report["writes"] = writes[0]
                    report["error"] = resp.error().message() if resp.has_error() else None
                    if not resp.has_error():
                        y = pb_utils.get_output_tensor_by_name(resp, "OUT").as_numpy()
                elif mode == 2:
                    resp = pb_utils.InferenceRequest(
                        model_name="target", requested_output_names=["OUT"],
                        inputs=[pb_utils.Tensor("IN", x)]).exec()
                    if resp.has_error():
                        raise pb_utils.TritonModelException(resp.error().message())
                    y = pb_utils.get_output_tensor_by_name(resp, "OUT").as_numpy()
                out.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUT", np.ascontiguousarray(y)),
                    pb_utils.Tensor("REPORT", np.array([json.dumps(report).encode()], dtype=np.object_))]))
            return out
''')

TARGET_CONFIG = """
name: "target"
backend: "rustpy"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_UINT8 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_UINT8 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

TARGET_MODEL = textwrap.dedent('''
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor(
                "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy() ^ 0x33)])
                for r in requests]
''')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("hostile")
    for name, config, model in (("hostile", HOSTILE_CONFIG, HOSTILE_MODEL),
                                ("target", TARGET_CONFIG, TARGET_MODEL)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(config)
        (repo / name / "1" / "model.py").write_text(model)
    s = start_server(repo, name="hostile", wait_models=["hostile", "target"])
    yield s
    s.stop()


def ask(s, x, mode):
    r = infer(s, "http", "hostile", {"IN": x, "MODE": np.array([mode], np.int32)})
    return r.as_numpy("OUT"), json.loads(r.as_numpy("REPORT")[0])


def assert_still_serving(server):
    """The other model answers over gRPC and the server is live."""
    x = np.arange(16, dtype=np.uint8)
    r = infer(server, "grpc", "target", {"IN": x})
    np.testing.assert_array_equal(r.as_numpy("OUT"), x ^ 0x33)
    assert server.is_live()


def test_truncating_the_shared_memory_does_not_take_the_server_down(server):
    big = (np.arange(3 << 20) % 251).astype(np.uint8)  # grows every region past its first size
    for mode in (0, 2):  # tensor regions and BLS regions in use
        out, _ = ask(server, big, mode)
        np.testing.assert_array_equal(out, big ^ 0x33)

    # Every region refuses to shrink, the BLS regions too (both sides map
    # them). (Before the seals, the server died of SIGBUS writing the next
    # request's input into its mapping.)
    _, report = ask(server, big, 1)
    out, _ = ask(server, big, 0)
    np.testing.assert_array_equal(out, big ^ 0x33)
    for region in ("rustpy-input", "rustpy-bls-in", "rustpy-bls-out"):
        assert report.get(region) == "PermissionError", report
    _, report = ask(server, big, 3)
    assert report == {"rustpy-output": "PermissionError"}, report

    # The server, this model (same worker) and BLS through the truncated
    # regions all keep working, large tensors included.
    for mode in (0, 2, 0, 2):
        out, _ = ask(server, big, mode)
        np.testing.assert_array_equal(out, big ^ 0x33)
    assert_still_serving(server)


def test_scribbling_over_the_bls_regions_during_a_call_harms_only_that_call(server):
    """The server reads a worker's fixed-size BLS inputs in place and the
    called model writes its outputs into the worker's region: a thread of the
    worker writing junk over both while the call runs may change that call's
    answer, nothing else (no crash, no other model's data, later calls exact)."""
    big = (np.arange(8 << 20) % 253).astype(np.uint8)
    for _ in range(3):
        out, report = ask(server, big, 4)
        assert report["writes"] > 0, report
        if report["error"] is None:
            # The bytes may be anyone's: the model's own doing.
            assert out.shape == big.shape, report
    for mode in (2, 0, 2):
        out, _ = ask(server, big, mode)
        np.testing.assert_array_equal(out, big ^ 0x33)
    assert_still_serving(server)
