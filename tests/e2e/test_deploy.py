"""The deployment kit (deploy/, docs/deploy.md), checked without a container runtime
or a cluster:

- every Kubernetes manifest validates against the Kubernetes schemas (kubernetes-validate,
  strict: unknown fields are errors), the KServe resources against KServe's CRD schemas
  kept in tests/e2e/deploy/kserve/, and the Helm overlay against Triton's own chart
  (tests/e2e/deploy/triton-k8s-onprem/): its keys exist, and the chart's Deployment
  rendered with it by Helm itself (helm-python-sdk: Helm's Go SDK) validates; each
  validator is shown to reject a broken copy;
- both Dockerfiles pass hadolint and never hard-code the Python version; their build
  steps are scripts (deploy/docker/scripts/) that CI runs here too: the toolchain step,
  `cargo build --locked` for the image's Python, and the install layout, which then
  serves models (rustpy, and rustpy as the `python` backend) from a tritonserver; the
  Rust pin is at least what the workspace and every locked crate need;
- the container entrypoint runs against the real tritonserver: it fetches a `rustpy zip`
  archive over HTTP, verifies and extracts it, and execs tritonserver; on SIGTERM
  in-flight requests complete, every instance's finalize runs and the server exits 0;
  a tampered archive stops the container before the server starts.

The validators live in a separate venv that ci/install.sh creates ($RUSTPY_DEPS/deploy-venv).
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tritonharness import (PROJECT_ROOT, TritonServer, deps_dir, python_backend_dir, rustpy_backend_lib,
                           tritonserver_lib_dir)

DEPLOY = PROJECT_ROOT / "deploy"
VALIDATE = Path(__file__).resolve().parent / "deploy" / "validate.py"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
SCRIPTS = DEPLOY / "docker" / "scripts"
DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.cpu"]
VENV = deps_dir() / "deploy-venv" / "bin"


def venv_tool(name: str) -> Path:
    tool = VENV / name
    if not tool.exists():
        pytest.fail(f"{tool} missing: run ci/install.sh (it creates the deploy venv)",
                    pytrace=False)
    return tool


def validate(mode: str, *paths) -> tuple:
    out = subprocess.run([str(venv_tool("python")), str(VALIDATE), mode, *map(str, paths)],
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip(), out.stderr
    report = json.loads(out.stdout)
    assert (out.returncode == 0) == (not report["errors"]), out
    return report


def broken_copy(src: Path, dst: Path, old: str, new: str) -> Path:
    text = src.read_text()
    assert old in text, f"{old!r} not in {src}"
    dst.write_text(text.replace(old, new, 1))
    return dst


# ------------------------------------------------------------------ manifests

K8S_MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
KSERVE_RESOURCES = sorted((DEPLOY / "kserve").glob("*.yaml"))


def test_kubernetes_manifests_validate():
    assert {p.name for p in K8S_MANIFESTS} >= {
        "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"}
    assert validate("k8s", *K8S_MANIFESTS)["errors"] == []


def test_kubernetes_validation_rejects_a_misspelt_field(tmp_path):
    bad = broken_copy(DEPLOY / "kubernetes/deployment.yaml", tmp_path / "d.yaml",
                      "readinessProbe:", "readinesProbe:")
    errors = validate("k8s", bad)["errors"]
    assert any("readinesProbe" in e for e in errors), errors


def _yaml_docs(path):
    # The client venv has no PyYAML: ask the deploy venv for JSON.
    code = ("import json,sys,yaml; print(json.dumps([d for d in "
            "yaml.safe_load_all(open(sys.argv[1])) if d]))")
    out = subprocess.run([str(venv_tool("python")), "-c", code, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _exit_timeout(args) -> int:
    found = [int(a.split("=", 1)[1]) for a in args if a.startswith("--exit-timeout-secs=")]
    assert len(found) == 1, args
    return found[0]


def test_deployment_drains_before_sigkill_and_needs_no_shm():
    (dep,) = _yaml_docs(DEPLOY / "kubernetes/deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    # SIGKILL comes terminationGracePeriodSeconds after SIGTERM: the drain must fit.
    assert _exit_timeout(server["args"]) < pod["terminationGracePeriodSeconds"]
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert not any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
    assert not any(m["mountPath"] == "/dev/shm" for m in server["volumeMounts"])
    # The init container verifies and extracts the archive the server then reads.
    (init,) = pod["initContainers"]
    assert init["args"] == ["unpack"]
    env = {e["name"]: e for e in init["env"]}
    assert "secretKeyRef" in env["RUSTPY_MODEL_ARCHIVE"]["valueFrom"]
    assert f"--model-repository={env['RUSTPY_MODEL_DIR']['value']}" in server["args"]


def test_kserve_resources_validate():
    kinds = sorted(d["kind"] for p in KSERVE_RESOURCES for d in _yaml_docs(p))
    assert kinds == ["ClusterServingRuntime", "InferenceService", "InferenceService"]
    assert validate("kserve", *KSERVE_RESOURCES)["errors"] == []


def test_kserve_validation_rejects_a_misspelt_field(tmp_path):
    bad = broken_copy(DEPLOY / "kserve/inferenceservice.yaml", tmp_path / "i.yaml",
                      "storageUri:", "storageURI:")
    errors = validate("kserve", bad)["errors"]
    assert any("storageURI" in e for e in errors), errors
    bad = broken_copy(DEPLOY / "kserve/clusterservingruntime.yaml", tmp_path / "r.yaml",
                      "protocolVersions:", "protocolVersion:")
    assert validate("kserve", bad)["errors"]


def test_kserve_runtime_speaks_v2_over_rest_and_grpc():
    (rt,) = _yaml_docs(DEPLOY / "kserve/clusterservingruntime.yaml")
    assert rt["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    (c,) = rt["spec"]["containers"]
    assert c["args"][0] == "tritonserver"
    assert {"--http-port=8080", "--grpc-port=9000"} <= set(c["args"])
    assert "--model-repository=$(RUSTPY_MODEL_DIR)" in c["args"]


def test_helm_overlay_renders_a_valid_deployment_of_the_chart():
    report = validate("helm", DEPLOY / "helm/values-rustpy.yaml")
    assert report["errors"] == []
    assert report["renderer"] == "helm v4.2.3 (helm-python-sdk 0.2.2)", report["renderer"]
    pod = report["rendered"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"].endswith("rustpy-triton:26.10")
    assert server["args"][0] == "tritonserver"
    # The chart leaves Kubernetes' default 30 s grace period.
    assert "terminationGracePeriodSeconds" not in pod
    assert _exit_timeout(server["args"]) < 30
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert not any(m["mountPath"] == "/dev/shm" for m in server["volumeMounts"])


def test_helm_overlay_check_rejects_a_value_the_chart_does_not_have(tmp_path):
    bad = broken_copy(DEPLOY / "helm/values-rustpy.yaml", tmp_path / "v.yaml",
                      "serverArgs:", "serverArguments:")
    errors = validate("helm", bad)["errors"]
    assert any("serverArguments" in e for e in errors), errors


def test_helm_overlay_check_rejects_what_helm_cannot_render(tmp_path):
    """serverArgs as one string instead of a list: the chart's `range` fails
    in Helm (a stand-in that iterated over the string's characters would
    render a Deployment with one argument per character, and pass)."""
    bad = broken_copy(DEPLOY / "helm/values-rustpy.yaml", tmp_path / "v.yaml",
                      "serverArgs:\n  - --model-repository=/models/repo",
                      "serverArgs: --model-repository=/models/repo\nunused:")
    report = validate("helm", bad)
    assert report["rendered"] is None
    assert any("helm could not render the chart" in e
               and "range can't iterate over --model-repository=/models/repo" in e
               for e in report["errors"]), report["errors"]


def test_helm_rendered_deployment_is_validated(tmp_path):
    """A value Helm renders but Kubernetes refuses (replicas must be an integer)."""
    text = (DEPLOY / "helm/values-rustpy.yaml").read_text() + "autoscaling:\n  minReplicas: three\n"
    bad = tmp_path / "v.yaml"
    bad.write_text(text)
    report = validate("helm", bad)
    assert report["rendered"]["spec"]["replicas"] == "three"
    assert any("(rendered deployment.yaml): Deployment: spec.replicas" in e
               for e in report["errors"]), report["errors"]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfile_passes_hadolint_and_reads_python_from_the_image(name):
    path = DEPLOY / "docker" / name
    out = subprocess.run([str(venv_tool("hadolint")), "--no-color", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = path.read_text()
    assert not re.search(r"python3\.\d+|PYVER=\d|python=\d", text), \
        "the Python version must be read from the image at build time"
    # The build script links the image's python3 unless PYO3_PYTHON says otherwise.
    assert "deploy/docker/scripts/build.sh /out" in text
    build = (SCRIPTS / "build.sh").read_text()
    assert 'PYO3_PYTHON="${PYO3_PYTHON:-$(command -v python3)}"' in build
    assert not re.search(r"python3\.\d+", build)
    assert 'ENTRYPOINT ["/usr/local/bin/rustpy-entrypoint"]' in text


def _requirements_step(dockerfile: Path) -> str:
    """The shell command of the Dockerfile's `requirements` stage."""
    text = dockerfile.read_text().replace("\\\n", " ")
    stage = text.split(" AS requirements\n", 1)[1].split("\nFROM ", 1)[0]
    (run,) = [line[4:] for line in stage.splitlines() if line.startswith("RUN ")]
    return run


def test_dockerfiles_merge_the_models_requirements(tmp_path):
    run = _requirements_step(DEPLOY / "docker/Dockerfile")
    assert run == _requirements_step(DEPLOY / "docker/Dockerfile.cpu")
    repo, out = tmp_path / "repo", tmp_path / "requirements.txt"
    for model, reqs in {"a": "numpy>=1.23\n# tokenizer\nregex==2024.1.1  \n",
                        "b": "regex==2024.1.1\n\npillow  # images\n", "c": None}.items():
        (repo / model / "1").mkdir(parents=True)
        if reqs is not None:
            (repo / model / "requirements.txt").write_text(reqs)
    (repo / "a" / "1" / "requirements.txt").write_text("not-merged\n")  # not a model's
    cmd = run.replace("/repo", str(repo)).replace("/requirements.txt", str(out))
    subprocess.run(["/bin/bash", "-o", "pipefail", "-c", cmd], check=True, timeout=60)
    assert out.read_text().splitlines() == ["numpy>=1.23", "pillow", "regex==2024.1.1"]
    # A repository without requirements gives an empty file, not a failed build.
    for f in repo.glob("*/requirements.txt"):
        f.unlink()
    subprocess.run(["/bin/bash", "-o", "pipefail", "-c", cmd], check=True, timeout=60)
    assert out.read_text() == ""


def test_hadolint_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && apt-get install curl\n")
    out = subprocess.run([str(venv_tool("hadolint")), "--no-color", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "DL3003" in out.stdout, out.stdout


def test_entrypoint_passes_shellcheck():
    out = subprocess.run([str(venv_tool("shellcheck")), "--shell=sh", str(ENTRYPOINT)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_build_scripts_pass_shellcheck():
    scripts = sorted(SCRIPTS.glob("*.sh"))
    assert {p.name for p in scripts} >= {"install-rust.sh", "build.sh", "install.sh", "pytriton-layout.sh"}
    out = subprocess.run([str(venv_tool("shellcheck")), "--shell=sh", "-x", *map(str, scripts)],
                         capture_output=True, text=True, timeout=120, cwd=SCRIPTS)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------- image builds

def _version(v: str) -> tuple:
    return tuple(int(x) for x in v.split("."))


def rust_pin_problems(dockerfile_text: str, required: str) -> list:
    """Why a Dockerfile's RUST_VERSION cannot build the workspace (empty: it can)."""
    pins = re.findall(r"^ARG RUST_VERSION=(\S+)$", dockerfile_text, re.M)
    if not pins:
        return ["no ARG RUST_VERSION=..."]
    return [f"RUST_VERSION {pin} < {required}" for pin in pins
            if not re.fullmatch(r"\d+\.\d+(\.\d+)?", pin) or _version(pin) < _version(required)]


def required_rust_version() -> str:
    """The workspace's rust-version, or the highest rust-version of any crate in
    Cargo.lock if that is higher (`cargo build --locked` needs both)."""
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked", "--offline"],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert meta.returncode == 0, meta.stderr[-2000:]
    versions = [p["rust_version"] for p in json.loads(meta.stdout)["packages"] if p.get("rust_version")]
    workspace = re.search(r'^rust-version = "([\d.]+)"', (PROJECT_ROOT / "Cargo.toml").read_text(), re.M)
    assert workspace and workspace.group(1) in versions
    return max(versions, key=_version)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_rust_pin_builds_the_workspace(dockerfile):
    assert rust_pin_problems(dockerfile.read_text(), required_rust_version()) == []


def test_a_rust_pin_below_the_workspace_rust_version_is_caught(tmp_path):
    required = required_rust_version()
    old = broken_copy(DOCKERFILES[0], tmp_path / "Dockerfile",
                      re.search(r"ARG RUST_VERSION=\S+", DOCKERFILES[0].read_text()).group(0),
                      "ARG RUST_VERSION=1.83.0")
    assert rust_pin_problems(old.read_text(), required) == [f"RUST_VERSION 1.83.0 < {required}"]
    # The toolchain script refuses it too, before any download.
    out = subprocess.run(["sh", str(SCRIPTS / "install-rust.sh"), "1.83.0"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "older than the workspace's rust-version" in out.stderr, out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_build_with_the_scripts_ci_runs(dockerfile):
    """Nothing of the build is written out in a Dockerfile, so nothing can drift
    from what the scripts (run below) do."""
    text = dockerfile.read_text()
    for step in ('deploy/docker/scripts/install-rust.sh "${RUST_VERSION}"',
                 "deploy/docker/scripts/build.sh /out",
                 "/tmp/rustpy-scripts/install.sh /tmp/rustpy-out /opt/tritonserver /usr/local/bin"):
        assert step in text, step
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "cargo build" not in code and "sh.rustup.rs" not in code and "ldd" not in code
    if dockerfile.name == "Dockerfile.cpu":
        assert '/tmp/rustpy-scripts/pytriton-layout.sh "${TS}" "${PYVER}"' in text
        assert "deploy/docker/scripts/pytriton-layout.sh" in (PROJECT_ROOT / "ci" / "install.sh").read_text()


def _image_like_triton(root: Path) -> Path:
    """opt/tritonserver as in an image: lib/ and an official python backend
    directory of its own (links to this machine's files), which install.sh may
    rewire with RUSTPY_AS_PYTHON=true."""
    triton = root / "opt" / "tritonserver"
    (triton / "backends" / "python").mkdir(parents=True)
    os.symlink(tritonserver_lib_dir(), triton / "lib", target_is_directory=True)
    for f in python_backend_dir().resolve().iterdir():
        os.symlink(f, triton / "backends" / "python" / f.name)
    return triton


def test_the_image_build_scripts_produce_an_install_that_serves(tmp_path):
    """What the Dockerfiles RUN, run here: the toolchain step, `cargo build
    --locked` for the serving Python, the install layout with rustpy also as the
    `python` backend; then a tritonserver on that layout serves a rustpy model
    and an unchanged `backend: "python"` model."""
    pin = re.search(r"^ARG RUST_VERSION=(\S+)$", DOCKERFILES[0].read_text(), re.M).group(1)
    python = re.search(r'^PYO3_PYTHON = "(.*)"', (PROJECT_ROOT / ".cargo" / "config.toml").read_text(), re.M).group(1)
    env = {**os.environ, "PYO3_PYTHON": python}
    step = subprocess.run(["sh", str(SCRIPTS / "install-rust.sh"), pin], capture_output=True, text=True,
                          timeout=120, env=env)
    assert step.returncode == 0, step.stderr
    out = tmp_path / "out"
    step = subprocess.run(["sh", str(SCRIPTS / "build.sh"), str(out)], capture_output=True, text=True,
                          timeout=3000, env=env, cwd=tmp_path)
    assert step.returncode == 0, step.stderr[-3000:]
    info = dict(line.split("=", 1) for line in (out / "BUILD_INFO").read_text().split())
    assert info["python_executable"] == python and info["rustc"]
    triton = _image_like_triton(tmp_path)
    step = subprocess.run(["sh", str(SCRIPTS / "install.sh"), str(out), str(triton), str(tmp_path / "bin")],
                          capture_output=True, text=True, timeout=300, env={**env, "RUSTPY_AS_PYTHON": "true"})
    assert step.returncode == 0, step.stderr
    rustpy_dir = triton / "backends" / "rustpy"
    assert sorted(p.name for p in rustpy_dir.iterdir()) == ["BUILD_INFO", "libtriton_rustpy.so", "rustpy-worker"]
    assert (triton / "backends" / "python" / "libtriton_python.so").resolve() == \
        (rustpy_dir / "libtriton_rustpy.so").resolve()
    assert (triton / "backends" / "python" / "libtriton_python.so.official").exists()
    version = subprocess.run([str(tmp_path / "bin" / "rustpy"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "rustpy" in version.stdout

    models = ["add_sub_rustpy", "add_sub_python", "add_sub_rustpy_process"]
    with TritonServer([PROJECT_ROOT / "bench" / "models"], backend_directory=triton / "backends",
                      model_control_mode="explicit", load_models=models, wait_models=models,
                      name="image-layout") as server:
        body = {"inputs": [{"name": n, "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                           for n in ("INPUT0", "INPUT1")]}
        for m in models:
            status, resp = server.request("POST", f"/v2/models/{m}/infer", body)
            assert status == 200, resp
            assert {o["name"]: o["data"] for o in resp["outputs"]}["OUTPUT0"] == [2, 4, 6, 8]
        log = server.log_text()
    # The python backend of this layout is rustpy.
    assert "rustpy: backend 'python' ready" in log, log[-3000:]


def test_every_file_the_guide_names_exists_and_every_deploy_file_is_checked():
    guide = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    # Our paths (Triton's chart is also called deploy/k8s-onprem, in its own repository).
    named = set(re.findall(
        r"(?<![\w/])((?:deploy/(?:docker|helm|kubernetes|kserve)|tests/e2e/deploy)"
        r"(?:/[\w.-]*\w)*)", guide))
    assert len(named) >= 10, named
    missing = [p for p in named if not (PROJECT_ROOT / p).exists()]
    assert missing == [], missing
    # Each file of deploy/ is validated by a test above.
    checked = {*K8S_MANIFESTS, *KSERVE_RESOURCES, DEPLOY / "helm/values-rustpy.yaml",
               DEPLOY / "docker/Dockerfile", DEPLOY / "docker/Dockerfile.cpu", ENTRYPOINT,
               *SCRIPTS.glob("*.sh")}
    present = {p for p in DEPLOY.rglob("*") if p.is_file()}
    assert present == checked, sorted(map(str, present ^ checked))
    assert "docs/deploy.md" in (PROJECT_ROOT / "README.md").read_text()


def test_readiness_is_false_while_a_model_is_not_ready(errors_server):
    """What the readiness probes rely on: with a model that failed to load
    (--exit-on-error=false), the server is live but not ready."""
    assert errors_server.is_live()
    assert not errors_server.is_ready()
    assert errors_server.get("/v2/health/ready")[0] == 400


# ----------------------------------------------------------------- entrypoint

SLEEPY_CONFIG = """name: "sleepy"
backend: "rustpy"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 3 } ]
parameters { key: "marks" value: { string_value: "%s" } }
"""

SLEEPY_MODEL = '''import os
import time


class Model:
    def initialize(self, ctx):
        self.marks = ctx.parameters["marks"]
        self.name = ctx.instance_name

    def predict(self, inputs):
        x = inputs["X"]
        open(os.path.join(self.marks, "started-%d" % int(x[0])), "w").close()
        time.sleep(4)
        return {"Y": x * 2}

    def finalize(self):
        open(os.path.join(self.marks, "finalized-" + self.name), "w").close()
'''


def rustpy_cli() -> Path:
    cli = rustpy_backend_lib().parent / "rustpy"
    if not cli.is_file():
        pytest.fail(f"{cli} not built (cargo build --release --workspace)", pytrace=False)
    return cli


def make_archive(tmp_path: Path) -> Path:
    marks = tmp_path / "marks"
    marks.mkdir()
    repo = tmp_path / "src_repo"
    (repo / "sleepy" / "1").mkdir(parents=True)
    (repo / "sleepy" / "config.pbtxt").write_text(SLEEPY_CONFIG % marks)
    (repo / "sleepy" / "1" / "model.py").write_text(SLEEPY_MODEL)
    archive = tmp_path / "www" / "repo.zip"
    archive.parent.mkdir()
    subprocess.run([str(rustpy_cli()), "-q", "zip", str(repo), "-o", str(archive)],
                   check=True, capture_output=True, timeout=120)
    return archive


class EntrypointServer(TritonServer):
    """tritonserver started the container's way: `rustpy-entrypoint tritonserver ARGS`,
    with the server binary and rustpy found through TRITONSERVER/RUSTPY."""

    def command(self) -> list:
        exe, *args = super().command()
        # The entrypoint supplies the exit timeout (RUSTPY_EXIT_TIMEOUT).
        args = [a for a in args if not a.startswith("--exit-timeout-secs=")]
        self.extra_env.update(TRITONSERVER=exe, RUSTPY=str(rustpy_cli()))
        return ["/bin/sh", str(ENTRYPOINT), "tritonserver", *args]


@pytest.fixture
def archive_url(tmp_path):
    archive = make_archive(tmp_path)
    handler = partial(SimpleHTTPRequestHandler, directory=str(archive.parent))
    handler.log_message = lambda *a, **k: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{archive.name}"
    httpd.shutdown()
    httpd.server_close()


def test_entrypoint_serves_a_verified_archive_and_drains_on_sigterm(tmp_path, archive_url):
    models = tmp_path / "models" / "repo"
    server = EntrypointServer(models, name="entrypoint", exit_timeout=60, env={
        "RUSTPY_MODEL_ARCHIVE": archive_url, "RUSTPY_MODEL_DIR": str(models),
        "RUSTPY_EXIT_TIMEOUT": "60"})  # the drain takes ~4 s; 60 for a loaded machine
    try:
        server.start()
        assert (models / "rustpy-manifest.json").is_file()
        assert (models / "sleepy" / "1" / "model.py").read_text() == SLEEPY_MODEL
        log = server.log_text()
        assert "verifying and extracting the model archive" in log
        assert archive_url not in log, "the archive URL (may be signed) was logged"
        assert re.search(r"\|\s*exit_timeout\s*\|\s*60\s*\|", log), server.log_tail()

        # The series the HPA's queue-time metric is derived from (docs/deploy.md).
        with urllib.request.urlopen(server.metrics_url, timeout=30) as r:
            metrics = r.read().decode()
        for name in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
            assert f'{name}{{model="sleepy"' in metrics, metrics[:2000]

        # Three requests in flight, one per instance, each 4 s of work.
        results = {}

        def infer(i):
            results[i] = server.post("/v2/models/sleepy/infer", {"inputs": [
                {"name": "X", "shape": [1], "datatype": "FP32", "data": [i]}]})
        threads = [threading.Thread(target=infer, args=(i,)) for i in (1, 2, 3)]
        for t in threads:
            t.start()
        marks = tmp_path / "marks"
        deadline = time.monotonic() + 60
        while len(list(marks.glob("started-*"))) < 3:
            assert time.monotonic() < deadline, "requests never started"
            time.sleep(0.05)

        # What the kubelet does: SIGTERM to the container's main process.
        os.kill(server.proc.pid, signal.SIGTERM)
        rc = server.proc.wait(timeout=120)
        for t in threads:
            t.join(timeout=60)
        assert rc == 0, server.log_tail()
        for i in (1, 2, 3):
            status, body = results[i]
            assert status == 200, (i, status, body)
            assert body["outputs"][0]["data"] == [2.0 * i]
        assert sorted(p.name for p in marks.glob("finalized-*")) == [
            f"finalized-sleepy_0_{k}" for k in range(3)]
    finally:
        server.stop()


def _tamper(archive: Path, out: Path) -> None:
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("model.py"):
                data = data.replace(b"x * 2", b"x * 3")
            dst.writestr(info, data)


def test_entrypoint_refuses_a_tampered_archive(tmp_path):
    archive = make_archive(tmp_path)
    tampered = tmp_path / "tampered.zip"
    _tamper(archive, tampered)
    models = tmp_path / "models" / "repo"
    env = {"PATH": "/usr/bin:/bin", "RUSTPY": str(rustpy_cli()),
           # Would fail loudly if it were started.
           "TRITONSERVER": "/nonexistent/tritonserver",
           "RUSTPY_MODEL_ARCHIVE": str(tampered), "RUSTPY_MODEL_DIR": str(models)}
    out = subprocess.run(["/bin/sh", str(ENTRYPOINT), "tritonserver", "--model-repository",
                          str(models)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out
    assert "model archive was rejected" in out.stderr, out.stderr
    assert "model.py" in out.stderr, out.stderr
    assert "nonexistent" not in out.stderr
    assert not models.exists()

    # `unpack` (the init container's command) does the same and nothing else; a
    # checksum file beside the archive (KServe layout) must match it.
    env["RUSTPY_MODEL_ARCHIVE"] = str(archive)
    sums = Path(f"{archive}.sha256")
    sums.write_text("0" * 64 + "  repo.zip\n")
    out = subprocess.run(["/bin/sh", str(ENTRYPOINT), "unpack"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "does not match repo.zip.sha256" in out.stderr, out
    assert not models.exists()
    sums.write_text(hashlib.sha256(archive.read_bytes()).hexdigest() + "  repo.zip\n")
    out = subprocess.run(["/bin/sh", str(ENTRYPOINT), "unpack"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out
    assert (models / "sleepy" / "config.pbtxt").is_file()
