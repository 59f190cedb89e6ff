"""Differential test: every model of tests/e2e/pb_models runs twice in ONE
tritonserver, as `<name>_python` on Triton's official Python backend and as
`<name>_rustpy` on rustpy (same model.py; configs differ only in name and
backend). Each case sends identical requests to both and asserts identical
outputs (names, datatypes, shapes, values), error status codes and error
messages, after the normalisations of pb_models/harness.py (each explained
there): the model's own name, the official backend's instance name in error
messages, repository paths, traceback tails, and the two fields of the model
config that Triton's core fills in differently for a backend named "python".

Where the official backend's behaviour is surprising it is matched and noted
(pb_models/README.md lists those, in pb_utils.py too). A few behaviours are deliberately NOT
matched; each has a test below that pins both sides down:
  - a default model whose request gets no response (execute returns None or
    [None], or sends a response without FINAL through its sender): the
    official backend leaves the client waiting forever; rustpy answers (an
    error, or FINAL after the response that was sent).
  - a numpy.bytes_ element of an object array in an output tensor: the
    official backend sends str() of it ("b'abc'"), rustpy its bytes ("abc").
    (pb_utils.serialize_byte_tensor itself matches upstream; see helpers.)
    Not pinned by a test.

Also noted, not tested here because they bring the official server down
(boost::interprocess::lock_exception in 2.51) or crash its stub: a metric
operation the server refuses (counter.set(), a negative increment, ...), a
failing pb_utils.load_model(), and Tensor.from_dlpack() of a numpy array.

Run:  .rustpy-deps/venv/bin/python -m pytest tests/e2e/test_differential.py
(needs target/release/libtriton_rustpy.so and ci/install.sh's tritonserver).
"""
import re
import time

import numpy as np
import pytest

from pb_models.harness import (CASES, Case, Normaliser, model_names, no_answer, render_repository,
                               i32, run_case, run_unary, s, wait_for_models)
from tritonharness import TritonServer, TritonStartError, reference_mode

SUFFIXES = {"_python": "python", "_rustpy": "rustpy"}

# The reference mode (RUSTPY_E2E_REFERENCE) stands in for rustpy's own batched
# API only; these models use the official API.
pytestmark = pytest.mark.skipif(reference_mode(), reason="compares against libtriton_rustpy.so itself")


def start_server(repo, startup, name, server_class=TritonServer, attempts=2):
    """Starts a server loading `startup` (explicit model control, for
    pb_utils.load_model); retries once when the official backend aborted it
    (see the module docstring)."""
    for attempt in range(attempts):
        server = server_class(repo, model_control_mode="explicit", load_models=startup,
                              exit_on_error=False, wait_models=[], exit_timeout=3, name=name)
        try:
            server.start()
        except TritonStartError as e:
            if "lock_exception" in str(e) and attempt + 1 < attempts:
                continue
            pytest.fail(f"could not start tritonserver: {e}", pytrace=False)
        return server, wait_for_models(server, startup)
    raise AssertionError("unreachable")


class Deployment:
    """One server with every pb_model as <name><suffix> for each suffix."""

    def __init__(self, server, not_ready, repo, suffixes):
        self.server = server
        self.not_ready = not_ready
        names = {m + suffix: m for m in model_names() for suffix in suffixes}
        self.norm = Normaliser(names, {str(repo): "<repo>"})
        # case id -> what the official backend answered (see test_cases_are_meaningful)
        self.official = {}

    def check_alive(self):
        if not self.server.running:
            pytest.fail("tritonserver is not running any more\n" + self.server.log_tail(40),
                        pytrace=False)

    def run(self, case: Case, model: str) -> dict:
        if model in self.not_ready:
            pytest.fail(f"model {model} did not load: {self.not_ready[model]}", pytrace=False)
        self.check_alive()
        return run_case(self.server, case, model, self.norm)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    repo = tmp_path_factory.mktemp("pb_differential") / "repo"
    startup = render_repository(repo, SUFFIXES)
    server, not_ready = start_server(repo, startup, "differential")
    yield Deployment(server, not_ready, repo, SUFFIXES)
    server.stop()


def _case_params(cases):
    params = []
    for case in cases:
        marks = []
        if case.rustpy_xfail:
            marks.append(pytest.mark.xfail(strict=False, reason=case.rustpy_xfail))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def assert_same(python: dict, rustpy: dict, case: Case):
    if python != rustpy:
        pytest.fail(f"{case.id}: the official backend and rustpy differ\n"
                    + describe_difference(python, rustpy), pytrace=False)


def describe_difference(a, b, path="") -> str:
    lines = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                lines.append(f"{path}/{k}: only rustpy: {b[k]!r:.400}")
            elif k not in b:
                lines.append(f"{path}/{k}: only python: {a[k]!r:.400}")
            else:
                lines.append(describe_difference(a[k], b[k], f"{path}/{k}"))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            lines.append(describe_difference(x, y, f"{path}[{i}]"))
    elif a != b:
        lines.append(f"{path}:\n    python: {a!r:.600}\n    rustpy: {b!r:.600}")
    return "\n".join(line for line in lines if line)


def newer_upstream(case: Case, rustpy: dict) -> dict:
    """rustpy's answer as the official *2.51* backend would give it where
    rustpy follows a newer python_backend on purpose; each difference is
    asserted here, so it is pinned, not hidden:
    - a BLS response's error keeps the callee's code (r25.04; 2.51 reports
      every BLS error as INTERNAL, 1): `bls-error_target` calls a model that
      answers NOT_FOUND (2)."""
    if case.id == "bls-error_target":
        info = rustpy["outputs"]["INFO"]["data"][0]
        assert info["response"]["code"] == 2, info
        info["response"]["code"] = 1
    return rustpy


# ------------------------------------------------------------- all cases
@pytest.mark.parametrize("case", _case_params(CASES))
def test_same_answer(deployment, case):
    python = deployment.run(case, case.model + "_python")
    deployment.official[case.id] = python
    rustpy = deployment.run(case, case.model + "_rustpy")
    # Both sides timing out would compare equal: each must have answered.
    assert no_answer(python) is None, ("python", no_answer(python), python)
    assert no_answer(rustpy) is None, ("rustpy", no_answer(rustpy), rustpy)
    assert_same(python, newer_upstream(case, rustpy), case)


def test_models_loaded(deployment):
    assert deployment.not_ready == {}, deployment.not_ready


MUST_SUCCEED = ("tensor_api-", "identity-", "helpers-", "init_args-", "request_api-", "auto_complete-",
                "metrics-", "async_execute-http", "async_execute-grpc", "errors-ok-", "errors-no_outputs-",
                "errors-sender_caught-", "errors-sender_final-", "errors-sender_and_return-", "bls-",
                "model_control-")


def test_cases_are_meaningful(deployment):
    """A guard against a differential test that passes because both sides
    fail the same way: the cases that must succeed did, on the official
    backend (checked on the answers test_same_answer recorded)."""
    checked = {cid: r for cid, r in deployment.official.items() if cid.startswith(MUST_SUCCEED)}
    if not checked:
        pytest.skip("no case ran in this session")
    failed = {cid: r for cid, r in checked.items() if "outputs" not in r}
    assert failed == {}
    streams = {cid: r for cid, r in deployment.official.items() if cid.startswith("decoupled-inline-3")}
    for r in streams.values():
        assert [item.get("final") for item in r["stream"]] == [False, False, False, True], r


# ------------------------------------------------ deliberate divergences
def _grpc_case(id, mode):
    return Case(id, "errors", {"MODE": s(mode)}, "grpc")


@pytest.mark.parametrize("mode", ["none", "none_item"])
def test_no_response_is_an_error_not_a_hang(deployment, mode):
    """execute() returns None, or a list holding None, for a request it never
    answered. The official backend leaves that request hanging (the client
    times out); rustpy fails it."""
    case = _grpc_case(f"errors-{mode}", mode)
    python = run_unary(deployment.server, case, "errors_python", deployment.norm, timeout=3)
    assert python["error"]["status"] == "StatusCode.DEADLINE_EXCEEDED", python
    rustpy = run_unary(deployment.server, case, "errors_rustpy", deployment.norm, timeout=60)
    assert rustpy["error"]["status"] == "StatusCode.INTERNAL", rustpy
    assert rustpy["error"]["message"].startswith(
        "Failed to process the request(s) for model 'errors_0_0', message: "), rustpy
    assert "did not return or send a response" in rustpy["error"]["message"], rustpy


def test_response_without_final_flag_completes(deployment):
    """A default model sends its response through the sender without FINAL
    and returns None: the official backend never completes the request;
    rustpy completes it after that response."""
    case = _grpc_case("errors-sender_no_final", "sender_no_final")
    python = run_unary(deployment.server, case, "errors_python", deployment.norm, timeout=3)
    assert python["error"]["status"] == "StatusCode.DEADLINE_EXCEEDED", python
    rustpy = run_unary(deployment.server, case, "errors_rustpy", deployment.norm, timeout=60)
    assert rustpy == {"outputs": {"OUT": {"datatype": "INT32", "shape": [1], "numpy_dtype": "int32",
                                          "data": [8]}}}, rustpy


# ------------------------------------------------------- beyond responses
def test_auto_completed_config(deployment):
    """The configs Triton serves after auto_complete_config() (what the
    ModelConfig helper raised is compared by the auto_complete cases)."""
    deployment.check_alive()
    norm = deployment.norm
    python = norm.data(deployment.server.model_config("auto_complete_python"))
    rustpy = norm.data(deployment.server.model_config("auto_complete_rustpy"))
    python = Normaliser.model_config(python)
    rustpy = Normaliser.model_config(rustpy)
    assert python["max_batch_size"] == 8
    assert [i["name"] for i in python["input"]] == ["IN", "OPT"]
    assert [o["name"] for o in python["output"]] == ["OUT", "INFO"]
    assert_same(python, rustpy, Case("auto_complete-config", "auto_complete", {}))


_LOG_LINE = re.compile(r'^([IWE])\d{4} [\d:.]+ +\d+ ([^\]]+)\] "(pb_models [^"]*)"$')


def _logged(server, suffix):
    """(level letter, message) of the pb_models helpers' Logger lines."""
    out = []
    for line in server.log_text().splitlines():
        m = _LOG_LINE.match(line)
        if m and m.group(3).endswith(" helpers" + suffix):
            out.append((m.group(1), m.group(2), m.group(3)[: -len(suffix)]))
    return out


def test_logger(deployment):
    """Logger.log/log_info/log_warn/log_error/log_verbose reach Triton's log at
    the same levels with the same text (verbose ones only with
    --log-verbose), with the same source location (the caller's
    `model.py:<line>`)."""
    case = Case("helpers-log", "helpers", {"IN": np.array([1.0], dtype=np.float32)}, "http")
    for suffix in SUFFIXES:
        deployment.run(case, "helpers" + suffix)
    deadline = time.monotonic() + 90
    while True:
        python, rustpy = _logged(deployment.server, "_python"), _logged(deployment.server, "_rustpy")
        if (len(python) >= 8 and len(rustpy) >= 8) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    messages = [(lvl, msg) for lvl, _, msg in python]
    assert ("W", "pb_models log_warn helpers") in messages
    assert ("E", "pb_models log error helpers") in messages
    assert ("I", "pb_models helpers initialize helpers") in messages
    assert not any("verbose" in m for _, m in messages)
    assert all(loc.startswith("model.py:") for _, loc, _ in python), python
    assert sorted(set(python)) == sorted(set(rustpy))


def _metric_lines(server, family):
    import urllib.request
    with urllib.request.urlopen(server.metrics_url, timeout=60) as r:
        text = r.read().decode()
    return sorted(line for line in text.splitlines() if line.startswith(family))


def test_custom_metrics_exported(deployment):
    """The metrics model's families appear on Triton's metrics endpoint with
    the same samples for both deployments."""
    case = Case("metrics-export", "metrics", {"IN": np.array([3.0])}, "http")
    for suffix in SUFFIXES:
        deployment.run(case, "metrics" + suffix)
    for family in ("pbtest_requests_total", "pbtest_last_value", "pbtest_values"):
        python = _metric_lines(deployment.server, family + "_python")
        rustpy = _metric_lines(deployment.server, family + "_rustpy")
        assert python, f"{family}_python is not exported"
        # The family names carry the model's suffix (they must be unique).
        python = [deployment.norm.text(line.replace(family + "_python", family)) for line in python]
        rustpy = [deployment.norm.text(line.replace(family + "_rustpy", family)) for line in rustpy]
        assert python == rustpy


# ------------------------------------------------- async execute concurrency
def test_async_executes_of_one_instance_run_concurrently(deployment):
    """Four requests on one stream to a decoupled `async def execute` model
    that awaits a decoupled BLS call each (async_fanout -> async_peers): on
    both backends the four callee coroutines run at once on one instance's
    event loop (each waits for the others, at most 10 s), and an exception
    raised in the async execute reaches the server log with type and message."""
    from e2e_client import stream

    for suffix in SUFFIXES:
        model = "async_fanout" + suffix
        got = stream(deployment.server, model,
                     [(str(t), {"TAG": np.array([t], np.int32)}) for t in range(1, 5)], timeout=60)
        peaks = {}
        for rid, answers in got.items():
            for result, _final in answers:
                assert not isinstance(result, Exception), (model, rid, result)
                if result.as_numpy("PEAK") is not None:
                    peaks[rid] = int(result.as_numpy("PEAK")[0])
        assert peaks == {"1": 4, "2": 4, "3": 4, "4": 4}, (model, peaks)

        stream(deployment.server, model, [("neg", {"TAG": np.array([-1], np.int32)})], timeout=60)
        assert deployment.server.wait_for_log("ValueError: negative tag in " + model), model
# ------------------------------------------- BLS outside execute (issue 17)
BLS_PHASE = "TritonModelException: BLS is only supported during the 'execute' function."


def test_bls_refused_in_initialize_allowed_in_execute(deployment):
    """BLS (exec, decoupled exec, async_exec) raises in initialize; in execute
    and from a thread execute starts it works; model control helpers work in
    initialize. Same answer on both backends (test_same_answer compares the
    whole INFO); here what that answer is."""
    case = Case("bls_phases-check", "bls_phases", {"IN": np.array([1.0, 2.0], np.float32)}, "http")
    for suffix in SUFFIXES:
        got = deployment.run(case, "bls_phases" + suffix)
        info = got["outputs"]["INFO"]["data"][0]
        init = dict(info["initialize"])
        # Allowed (it may still fail while the server is starting: "Server not ready").
        assert BLS_PHASE not in init.pop("is_model_ready"), info
        assert init == {"exec": BLS_PHASE, "decoupled_exec": BLS_PHASE, "async_exec": BLS_PHASE}, info
        assert info["execute"] is False and info["thread"] == "ok: False", info


def test_bls_in_initialize_fails_the_load(deployment):
    """Uncaught, the refusal fails the model's load, with the message."""
    for suffix in SUFFIXES:
        status, body = deployment.server.load_model("bls_init_fails" + suffix)
        assert status == 400, (suffix, status, body)
        message = body.get("error", "") if isinstance(body, dict) else str(body)
        assert "BLS is only supported during the 'execute' function." in message, (suffix, body)
    deployment.check_alive()


def test_bls_refused_in_finalize(deployment):
    """finalize's BLS raises (the model logs what it got when unloaded)."""
    for suffix in SUFFIXES:
        name = "bls_phases" + suffix
        assert deployment.server.unload_model(name)[0] == 200
        assert deployment.server.wait_for_log(f"bls_phases finalize {name}: {BLS_PHASE}"), \
            deployment.server.log_tail()


def test_sys_exit_in_initialize_fails_the_load(deployment):
    """sys.exit() in initialize fails that model's load on both backends; the
    server (and every other model) keeps serving. rustpy reports the
    SystemExit and its message; the official backend, whose stub process
    exits, reports it in its own words."""
    for suffix in SUFFIXES:
        status, body = deployment.server.load_model("init_exits" + suffix)
        assert status == 400, (suffix, status, body)
        deployment.check_alive()
        assert deployment.server.is_live()
    message = body.get("error", "") if isinstance(body, dict) else str(body)
    assert "SystemExit: init_exits: exiting from initialize" in message, message
    got = deployment.run(Case("identity-after-exit", "identity", {"IN": np.array([5.0], np.float32)}, "http"),
                         "identity_rustpy")
    assert "outputs" in got, got


# ------------------------- response sender of a default model (issue 17)
def _sender_case(mode, protocol="grpc", x=7.0):
    return Case(f"sender_default-{mode}", "sender_default",
                {"MODE": np.array([[mode.encode()]], dtype=np.object_),
                 "IN": np.array([[x]], np.float32)}, protocol)


def test_sender_default_several_requests_in_one_call(deployment):
    """Three requests of one execute call, one answered by the returned list,
    one through its sender before execute returns, one from a thread after
    execute returned None: each gets its own answer, on both backends."""
    from concurrent.futures import ThreadPoolExecutor

    modes = ["on_return", "pre_return", "post_return"]
    for suffix in SUFFIXES:
        model = "sender_default" + suffix
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda i: deployment.run(_sender_case(modes[i], x=float(i)), model),
                                range(3)))
        for i, (mode, answer) in enumerate(zip(modes, got)):
            assert answer.get("outputs", {}).get("INFO", {}).get("data") == [{"how": mode}], (suffix, answer)
            assert answer["outputs"]["OUT"]["data"] == np.array([i], np.float32).view(np.uint32).tolist()


def test_sender_default_send_after_returned_response_raises(deployment):
    """on_and_post_return: the returned response answers; the thread's later
    send raises in the thread, with the official message."""
    for suffix in SUFFIXES:
        model = "sender_default" + suffix
        deployment.run(_sender_case("on_and_post_return"), model)
        deadline = time.monotonic() + 90
        while True:
            errors = deployment.run(_sender_case("thread_errors"), model)["outputs"]["INFO"]["data"][0]
            if errors or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert errors and set(errors) == {
            "TritonModelException: Unable to send response. Non-decoupled model cannot send more "
            "than one response."}, (suffix, errors)


def test_sender_default_taken_and_dropped_fails(deployment):
    """A default model that takes the sender and drops it unanswered: the
    official backend leaves the request hanging; rustpy fails it once the
    sender is gone."""
    case = _sender_case("taken_unused")
    python = run_unary(deployment.server, case, "sender_default_python", deployment.norm, timeout=3)
    assert python["error"]["status"] == "StatusCode.DEADLINE_EXCEEDED", python
    rustpy = run_unary(deployment.server, case, "sender_default_rustpy", deployment.norm, timeout=60)
    assert rustpy["error"]["status"] == "StatusCode.INTERNAL", rustpy
    assert "model 'sender_default': the request's response sender was dropped before it sent the " \
           "FINAL flag" in rustpy["error"]["message"], rustpy


def test_racing_final_responses_send_exactly_one(deployment):
    """Eight threads of a decoupled model send a final response at the same
    moment: the client gets exactly one response, with the FINAL flag, and
    seven threads are told the sender is closed (the rules and the send are
    one step under the sender's lock, in both backends)."""
    closed = "TritonModelException: Unable to send response. Response sender has been closed."
    for suffix in SUFFIXES:
        model = "decoupled" + suffix
        race = deployment.run(Case("race", "decoupled", {"MODE": s("race_final"), "N": i32(8)},
                                   "stream"), model)
        assert [item.get("final") for item in race["stream"]] == [True], (suffix, race)
        report = deployment.run(Case("report", "decoupled", {"MODE": s("report"), "N": i32(0)},
                                     "stream"), model)
        seen = report["stream"][0]["outputs"]["INFO"]["data"][0]["reports"]
        assert {"race_final": sorted(["ok"] + [closed] * 7)} in seen, (suffix, seen)
