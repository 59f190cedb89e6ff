"""Zero-edit migration: rustpy installed *as* the Python backend.

The backend directory holds only `python/libtriton_python.so`, a symlink to
target/release/libtriton_rustpy.so: no stub executable, no
triton_python_backend_utils.py, no `rustpy/` backend. The model repository is
tests/e2e/pb_models rendered unmodified (`backend: "python"`, plain names).
Every case of the differential suite is sent to this server and to a server
running the same repository on Triton's official Python backend, and the
answers must be identical (same normalisations as test_differential.py,
minus the model-name one: names are the same here).

Run:  .rustpy-deps/venv/bin/python -m pytest tests/e2e/test_migration.py
"""
import os

import pytest

from pb_models.harness import (CASES, CONTROLLED_MODELS, Case, Normaliser, model_names, no_answer,
                               render_repository, run_case)
from test_differential import _case_params, assert_same, newer_upstream, start_server
from tritonharness import TritonServer, reference_mode, rustpy_backend_lib

pytestmark = pytest.mark.skipif(reference_mode(), reason="needs libtriton_rustpy.so itself")


class MigratedServer(TritonServer):
    """A server whose `python` backend is libtriton_rustpy.so."""

    def _make_backend_dir(self) -> None:
        lib = self.backend_lib
        if not lib.is_file():
            raise FileNotFoundError(f"rustpy backend library not found at {lib}")
        python = self.backend_dir / "python"
        python.mkdir(parents=True)
        os.symlink(lib.resolve(), python / "libtriton_python.so")


class Pair:
    def __init__(self, official, migrated, not_ready, repos):
        self.official, self.migrated = official, migrated
        self.not_ready = not_ready
        names = {m: m for m in model_names()}
        self.norm = Normaliser(names, {str(r): "<repo>" for r in repos})

    def run(self, server, case: Case) -> dict:
        if not server.running:
            pytest.fail(f"tritonserver {server.name} is not running any more\n" + server.log_tail(40),
                        pytrace=False)
        missing = self.not_ready.get(server.name, {})
        if case.model in missing:
            pytest.fail(f"{case.model} did not load on {server.name}: {missing[case.model]}", pytrace=False)
        return run_case(server, case, case.model, self.norm)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("pb_migration")
    official_repo, migrated_repo = base / "official" / "repo", base / "migrated" / "repo"
    startup = render_repository(official_repo, {"": "python"})
    render_repository(migrated_repo, {"": "python"})
    official, official_missing = start_server(official_repo, startup, "official")
    try:
        migrated, migrated_missing = start_server(migrated_repo, startup, "migrated",
                                                  server_class=MigratedServer)
    except BaseException:
        official.stop()
        raise
    yield Pair(official, migrated, {"official": official_missing, "migrated": migrated_missing},
               [official_repo, migrated_repo])
    migrated.stop()
    official.stop()


def test_backend_directory_has_no_stub(pair):
    python = pair.migrated.backend_dir / "python"
    assert sorted(p.name for p in python.iterdir()) == ["libtriton_python.so"]
    assert (python / "libtriton_python.so").resolve() == rustpy_backend_lib().resolve()
    assert "rustpy: backend 'python' ready" in pair.migrated.log_text()


def test_all_models_load(pair):
    assert pair.not_ready == {"official": {}, "migrated": {}}
    for name in model_names():
        if name in CONTROLLED_MODELS:  # loaded (or failing to load) by their tests
            continue
        assert pair.migrated.model_config(name)["backend"] == "python"


@pytest.mark.parametrize("case", _case_params(CASES))
def test_same_answer(pair, case):
    official = pair.run(pair.official, case)
    migrated = pair.run(pair.migrated, case)
    # Both sides timing out would compare equal: each must have answered.
    assert no_answer(official) is None, ("official", no_answer(official), official)
    assert no_answer(migrated) is None, ("migrated", no_answer(migrated), migrated)
    # Where rustpy follows a newer python_backend on purpose (test_differential).
    assert_same(official, newer_upstream(case, migrated), case)


def test_auto_completed_config(pair):
    official = pair.norm.data(pair.official.model_config("auto_complete"))
    migrated = pair.norm.data(pair.migrated.model_config("auto_complete"))
    # The backend is "python" on both; only the instance group name carries
    # nothing to normalise here, so the configs must be equal as served.
    assert official["backend"] == migrated["backend"] == "<backend>"
    assert_same(official, migrated, Case("auto_complete-config", "auto_complete", {}))
