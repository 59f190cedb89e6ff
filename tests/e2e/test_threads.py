"""rustpy.threads (issue 24): the BLAS/OpenMP pools of the process that runs a
model are sized with threadpoolctl before (and after) its initialize. Each
model here reports threadpoolctl.threadpool_info() from execute, over HTTP:

  one_inproc    rustpy.threads 1, in the server process
  one_process   rustpy.threads 1, in its worker
  auto_two      no setting, process mode, 2 instances: the default gives each
                worker cores / 2 (at least 1)
  plain_process no setting, 1 instance, process mode: the pools as a fresh
                interpreter sizes them (the control)

threadpoolctl comes from ci/install.sh's serving-site directory
(--backend-config=rustpy,site-packages=DIR). A model that asks for a limit
without threadpoolctl fails its load with a message naming the parameter.
"""
import json
import re
import subprocess

import numpy as np
import pytest

from e2e_client import infer
from reliability import start_server
from tritonharness import clean_env, deps_dir

SERVING_SITE = deps_dir() / "serving-site"

MODEL_PY = '''
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from threadpoolctl import threadpool_info


class TritonPythonModel:
    def execute(self, requests):
        np.ones((64, 64)) @ np.ones((64, 64))  # the BLAS pool in use
        pools = [{"api": p["internal_api"], "threads": p["num_threads"]} for p in threadpool_info()]
        info = json.dumps({"pid": os.getpid(), "pools": pools}).encode()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("INFO", np.array([info], dtype=object))])
                for _ in requests]
'''


def write_model(repo, name, params, count=1):
    d = repo / name
    (d / "1").mkdir(parents=True)
    (d / "1" / "model.py").write_text(MODEL_PY)
    ps = "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in params.items())
    (d / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "rustpy"\nmax_batch_size: 0\n'
        'input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "INFO" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        f'instance_group [ {{ kind: KIND_CPU count: {count} }} ]\n{ps}')


def pools(server, model):
    r = infer(server, "http", model, {"X": np.array([1], np.int32)})
    info = json.loads(r.as_numpy("INFO")[0])
    blas = {p["api"]: p["threads"] for p in info["pools"]}
    assert "openblas" in blas, info  # ci/install.sh's libopenblas0-pthread
    return info["pid"], blas


def fresh_blas_threads():
    """What a fresh serving interpreter's OpenBLAS pool has, nothing limited."""
    code = ("import numpy, threadpoolctl; "
            "print([p['num_threads'] for p in threadpoolctl.threadpool_info() if p['internal_api'] == 'openblas'][0])")
    env = clean_env({"PYTHONPATH": str(SERVING_SITE)})
    return int(subprocess.run(["/usr/bin/python3.11", "-c", code], env=env, check=True,
                              capture_output=True, text=True, timeout=60).stdout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    assert (SERVING_SITE / "threadpoolctl.py").is_file(), "run ci/install.sh (serving-site)"
    repo = tmp_path_factory.mktemp("threads") / "repo"
    write_model(repo, "one_inproc", {"rustpy.threads": "1"})
    write_model(repo, "one_process", {"rustpy.threads": "1", "rustpy.isolation": "process"})
    write_model(repo, "auto_two", {"rustpy.isolation": "process"}, count=2)
    write_model(repo, "plain_process", {"rustpy.isolation": "process"})
    s = start_server(repo, name="threads",
                     extra_args=[f"--backend-config=rustpy,site-packages={SERVING_SITE}"])
    yield s
    s.stop()


def test_threads_1_limits_the_server_process_pools(server):
    pid, blas = pools(server, "one_inproc")
    assert pid == server.proc.pid
    assert blas["openblas"] == 1
    assert "model 'one_inproc': rustpy.threads 1: thread pools openblas 1" in server.log_text()


def test_threads_1_limits_the_worker_pools(server):
    pid, blas = pools(server, "one_process")
    assert pid != server.proc.pid
    assert blas["openblas"] == 1


def test_the_default_shares_the_cores_among_instances(server):
    # The log line says what the default decided from (cores of the server's
    # process: its affinity and quota), each worker reports what it has.
    m = re.search(r"model 'auto_two': rustpy\.threads (\d+) \(2 instances on (\d+) cores\)",
                  server.log_text())
    assert m, server.log_tail()
    limit, cores = int(m.group(1)), int(m.group(2))
    assert limit == max(1, cores // 2)
    seen = {}
    for _ in range(40):
        pid, blas = pools(server, "auto_two")
        seen[pid] = blas["openblas"]
    assert all(v == limit for v in seen.values()), seen


def test_without_a_setting_one_instance_keeps_the_libraries_sizing(server):
    _, blas = pools(server, "plain_process")
    assert blas["openblas"] == fresh_blas_threads()


def test_asking_for_threads_without_threadpoolctl_fails_the_load(tmp_path):
    probe = subprocess.run(["/usr/bin/python3.11", "-c", "import threadpoolctl"], env=clean_env(),
                           capture_output=True, timeout=60)
    assert probe.returncode != 0, "threadpoolctl is importable without serving-site: nothing to test"
    repo = tmp_path / "repo"
    write_model(repo, "asks", {"rustpy.threads": "2"})
    # Asked for and impossible: the load fails, naming the parameter. The
    # default (several instances, nothing asked) is skipped with a warning.
    write_model(repo, "auto_many", {}, count=2)
    for m in ("asks", "auto_many"):  # the model itself does not import it
        (repo / m / "1" / "model.py").write_text(
            MODEL_PY.replace("from threadpoolctl import threadpool_info", "threadpool_info = list"))
    s = start_server(repo, name="threads-missing", exit_on_error=False, wait_models=["auto_many"])
    try:
        assert not s.model_ready("asks")
        log = s.log_text()
        assert "parameter 'rustpy.threads' is 2, but threadpoolctl is not installed" in log, s.log_tail()
        # Once for the model, not per instance or per call.
        assert log.count("'auto_many': several instances share the cores; install threadpoolctl") == 1, log
        assert s.model_ready("auto_many")
    finally:
        s.stop()
