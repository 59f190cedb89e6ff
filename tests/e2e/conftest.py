"""pytest fixtures for rustpy's end-to-end tests against a real tritonserver.

    server          session: model_repository/ (every example model READY)
    errors_server   session: tests/e2e/repos/errors, --exit-on-error=false
    triton_factory  function: triton_factory(repos, **TritonServer kwargs) -> started server
    protocol        parametrizes a test over "http" and "grpc"

When a test fails, the tail of the log of every server it used is attached to
the failure report. Every test (with its fixtures) gets RUSTPY_E2E_TEST_TIMEOUT
seconds (default 180) before it is failed, so a hung server cannot hang CI.

With RUSTPY_CHECK_SKIPS=1 (ci/test.sh sets it for the whole suite) the run
fails when it skipped a test that allowed_skips.txt does not list, or more
tests than it lists (docs/reliability.md, "How we test"). xfail is no skip.
"""
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tritonharness import (E2E_DIR, ERRORS_REPOSITORY, MODEL_REPOSITORY,  # noqa: E402
                           TritonServer, TritonStartError)

EXAMPLE_MODELS = ["add_sub", "string_upper", "no_batch", "stream_counter",
                  "params_echo", "dtypes"]
# Models of the errors repository that load (the others must fail to load).
LOADABLE_ERROR_MODELS = ["raises", "bad_output"]


def _start(server: TritonServer) -> TritonServer:
    try:
        return server.start()
    except TritonStartError as e:
        pytest.fail(f"could not start tritonserver: {e}", pytrace=False)


@pytest.fixture(scope="session")
def server():
    s = _start(TritonServer(MODEL_REPOSITORY, name="examples"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def errors_server():
    s = _start(TritonServer(ERRORS_REPOSITORY, exit_on_error=False,
                            wait_models=LOADABLE_ERROR_MODELS, name="errors"))
    yield s
    s.stop()


class ServerFactory:
    def __init__(self):
        self.servers = []

    def __call__(self, repos, start=True, **kw) -> TritonServer:
        kw.setdefault("name", f"custom{len(self.servers)}")
        s = TritonServer(repos, **kw)
        self.servers.append(s)
        return _start(s) if start else s

    def stop_all(self):
        for s in self.servers:
            s.stop()


@pytest.fixture
def triton_factory():
    f = ServerFactory()
    yield f
    f.stop_all()


@pytest.fixture(params=["http", "grpc"])
def protocol(request):
    return request.param


def _servers_of(item):
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, TritonServer):
            yield value
        elif isinstance(value, ServerFactory):
            yield from value.servers


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("call", "setup"):
        for s in _servers_of(item):
            if s.tmpdir is not None:
                report.sections.append((f"tritonserver log ({s.name})", s.log_tail(60)))


TEST_TIMEOUT = int(os.environ.get("RUSTPY_E2E_TEST_TIMEOUT", "180"))


class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout(f"test exceeded RUSTPY_E2E_TEST_TIMEOUT={TEST_TIMEOUT}s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if TEST_TIMEOUT <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ skips
ALLOWED_SKIPS = E2E_DIR / "allowed_skips.txt"
_skipped = []  # (nodeid, reason) of every test skipped in this session


def allowed_skips() -> dict:
    """{test id: why} from allowed_skips.txt (`<test id>  <why>` per line, # comments)."""
    out = {}
    for line in ALLOWED_SKIPS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            nodeid, _, why = line.partition(" ")
            out[nodeid] = why.strip()
    return out


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("RUSTPY_CHECK_SKIPS", "") in ("", "0"):
        return
    allowed = allowed_skips()
    root = E2E_DIR.parent.parent

    def from_root(nodeid):  # the same id whatever directory pytest ran in
        path, sep, rest = nodeid.partition("::")
        return str((session.config.rootpath / path).resolve().relative_to(root)) + sep + rest
    unexpected = [(from_root(n), r) for n, r in _skipped if from_root(n) not in allowed]
    if not unexpected and len(_skipped) <= len(allowed):
        return
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    tr.write_sep("=", "skip check failed", red=True)
    tr.write_line(f"{len(_skipped)} test(s) skipped; {len(allowed)} allowed by "
                  f"{ALLOWED_SKIPS.relative_to(root)}:")
    for nodeid, reason in unexpected:
        tr.write_line(f"  not allowed: {nodeid}: {reason}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
