"""The differential test (test_differential.py) with every rustpy model
process-isolated (`rustpy.isolation: "process"`, docs/isolation.md): the same
model.py files, the same cases, compared against the official backend.

Cases that process mode does not support yet are listed in PROCESS_XFAIL
(with the reason); everything else must give the official backend's answer.
"""
import pytest

from pb_models.harness import CASES, no_answer, render_repository
from test_differential import (SUFFIXES, Deployment, assert_same, newer_upstream, start_server)
from tritonharness import reference_mode

pytestmark = pytest.mark.skipif(reference_mode(), reason="compares against libtriton_rustpy.so itself")

ISOLATION = 'parameters { key: "rustpy.isolation" value { string_value: "process" } }\n'

# case id prefix -> why process mode differs (docs/isolation.md, "Not yet");
# empty: every case gives the official backend's answer in process mode too.
PROCESS_XFAIL = {}


@pytest.fixture(scope="module")
def process_deployment(tmp_path_factory):
    repo = tmp_path_factory.mktemp("pb_differential_process") / "repo"
    startup = render_repository(repo, SUFFIXES)
    # Both sides get the parameter (the official backend ignores it), so the
    # configs the models see stay identical.
    for cfg in repo.glob("*/config.pbtxt"):
        cfg.write_text(cfg.read_text() + ISOLATION)
    server, not_ready = start_server(repo, startup, "differential_process")
    yield Deployment(server, not_ready, repo, SUFFIXES)
    server.stop()


def _params():
    params = []
    for case in CASES:
        marks = []
        reason = case.rustpy_xfail or next(
            (why for prefix, why in PROCESS_XFAIL.items() if case.id.startswith(prefix)), None)
        if reason:
            marks.append(pytest.mark.xfail(strict=False, reason=reason))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_same_answer_in_process_mode(process_deployment, case):
    python = process_deployment.run(case, case.model + "_python")
    rustpy = process_deployment.run(case, case.model + "_rustpy")
    # Both sides timing out would compare equal: each must have answered.
    assert no_answer(python) is None, ("python", no_answer(python), python)
    assert no_answer(rustpy) is None, ("rustpy", no_answer(rustpy), rustpy)
    assert_same(python, newer_upstream(case, rustpy), case)
