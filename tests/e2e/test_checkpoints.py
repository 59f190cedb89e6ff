"""Checkpoints (issue 13): every source kind fetched, cached and served end to end.

Real servers on loopback, started here (checkpoint_services.py): a fake Hugging Face Hub
(HF_ENDPOINT), moto's S3 server, a static HTTP server for archives, and a bare git
repository with git-lfs objects over file://. The models read their weights from
ctx.checkpoint_dir (batched API) or args["checkpoint_dir"] (pb_utils API).
"""
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from checkpoint_services import FakeHub, MotoS3, StaticFiles, make_lfs_repo
from tritonharness import clean_env, rustpy_backend_lib

HF_TOKEN = "hf_secret_token_4711"
AWS_SECRET = "aws-secret-key-0815"

BATCHED_MODEL = '''
import os
import numpy as np

class Model:
    def initialize(self, ctx):
        self.dir = ctx.checkpoint_dir
        with open(os.path.join(ctx.checkpoint_dir, "weights.bin"), "rb") as f:
            self.weights = f.read()

    def predict(self, inputs):
        return {"WEIGHTS": np.array([self.weights], dtype=object),
                "DIR": np.array([self.dir.encode()], dtype=object)}
'''

PB_UTILS_MODEL = '''
import os
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.dir = args["checkpoint_dir"]
        with open(os.path.join(self.dir, "weights.bin"), "rb") as f:
            self.weights = f.read()

    def execute(self, requests):
        return [pb_utils.InferenceResponse([
            pb_utils.Tensor("WEIGHTS", np.array([self.weights], dtype=object)),
            pb_utils.Tensor("DIR", np.array([self.dir.encode()], dtype=object))])
            for _ in requests]
'''


def cli() -> str:
    # The CLI is built beside the backend library (same target dir).
    exe = os.environ.get("RUSTPY_CLI") or str(rustpy_backend_lib().parent / "rustpy")
    assert Path(exe).is_file(), f"{exe} missing: cargo build --release -p rustpy-cli"
    return exe


def write_model(repo: Path, name: str, params: dict, count: int = 1, pb_utils=False):
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    p = "\n".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}'
                  for k, v in params.items())
    (d / "config.pbtxt").write_text(f'''name: "{name}"
backend: "rustpy"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "WEIGHTS" data_type: TYPE_STRING dims: [ 1 ] }},
         {{ name: "DIR" data_type: TYPE_STRING dims: [ 1 ] }} ]
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
{p}
''')
    (d / "1" / "model.py").write_text(PB_UTILS_MODEL if pb_utils else BATCHED_MODEL)


def tgz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class World:
    """The services plus one repository with a model per source kind."""

    def __init__(self, root: Path):
        self.root = root
        self.hub = FakeHub({
            "acme/tiny": {"revision": "v1", "files": {
                "onnx/weights.bin": b"HF-WEIGHTS", "onnx/config.json": b"{}",
                "README.md": b"readme"}},
            "acme/gated": {"revision": "main", "token": HF_TOKEN, "files": {
                "weights.bin": b"GATED-WEIGHTS"}},
        })
        files = root / "files"
        files.mkdir()
        self.archive = tgz({"weights.bin": b"ARCHIVE-WEIGHTS", "vocab.txt": b"a\nb\n"})
        (files / "w.tar.gz").write_bytes(self.archive)
        (files / "corrupt.tar.gz").write_bytes(self.archive + b"tampered")
        self.static = StaticFiles(files)
        self.s3 = MotoS3(root)
        self.s3.put("weights")
        self.s3.put("weights/models/v1/weights.bin", b"S3-WEIGHTS")
        self.s3.put("weights/models/v1/sub/extra.txt", b"extra")
        self.git_url, self.commit = make_lfs_repo(root / "git", {
            "weights.bin": b"GIT-LFS-WEIGHTS", "config.json": b"{}"})
        local = root / "local-weights"
        local.mkdir()
        (local / "weights.bin").write_bytes(b"LOCAL-WEIGHTS")

        self.repo = root / "repo"
        self.sha = hashlib.sha256(self.archive).hexdigest()
        self.models = {
            "ck_hf": ({"rustpy.checkpoint": "hf://acme/tiny@v1/onnx",
                       "rustpy.checkpoint.include": "*.bin,*.json"}, b"HF-WEIGHTS"),
            "ck_git": ({"rustpy.checkpoint": f"git+{self.git_url}@{self.commit}"},
                       b"GIT-LFS-WEIGHTS"),
            "ck_s3": ({"rustpy.checkpoint": "s3://weights/models/v1",
                       "rustpy.checkpoint.endpoint": self.s3.url}, b"S3-WEIGHTS"),
            "ck_https": ({"rustpy.checkpoint": f"{self.static.url}/w.tar.gz",
                          "rustpy.checkpoint.sha256": self.sha}, b"ARCHIVE-WEIGHTS"),
            "ck_local": ({"rustpy.checkpoint": f"file://{local}"}, b"LOCAL-WEIGHTS"),
        }
        for name, (params, _) in self.models.items():
            write_model(self.repo, name, params, count=2 if name == "ck_hf" else 1)
        # Same source as ck_hf, official API: fetched once for both.
        write_model(self.repo, "ck_hf_pbutils", self.models["ck_hf"][0], pb_utils=True)

    def env(self, cache: Path, **extra) -> dict:
        env = {"RUSTPY_CACHE": str(cache), "HF_ENDPOINT": self.hub.url,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
               "AWS_REGION": "us-east-1"}
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def stop(self):
        self.hub.stop()
        self.static.stop()
        self.s3.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("checkpoints"))
    yield w
    w.stop()


def run_cli(args, env, check=None):
    full = clean_env(env)
    full["PATH"] = os.environ.get("PATH", full["PATH"])
    r = subprocess.run([cli(), *args], env=full, capture_output=True, text=True, timeout=300)
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def fetch_json(world, repo, env, check=0):
    r = run_cli(["fetch", str(repo), "--json", "-q"], env, check=check)
    return {o["model"]: o for o in json.loads(r.stdout)}, r


def cache_entries(cache: Path):
    d = cache / "checkpoints"
    return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name != ".tmp") \
        if d.is_dir() else []


def test_fetch_every_kind_then_cache_hit(world, tmp_path):
    cache = tmp_path / "cache"
    env = world.env(cache)
    out, _ = fetch_json(world, world.repo, env)
    assert set(out) == set(world.models) | {"ck_hf_pbutils"}
    for name, (_, weights) in world.models.items():
        o = out[name]
        assert "error" not in o, o
        assert (Path(o["dir"]) / "weights.bin").read_bytes() == weights, name
        if name != "ck_local":
            assert Path(o["dir"]).parent == cache / "checkpoints", o
    # include patterns and subpath: README.md is outside onnx/, nothing else leaked
    assert sorted(os.listdir(out["ck_hf"]["dir"])) == [
        ".rustpy-checkpoint.json", "config.json", "weights.bin"]
    assert out["ck_hf"]["dir"] == out["ck_hf_pbutils"]["dir"]
    assert not (Path(out["ck_git"]["dir"]) / ".git").exists()
    assert (Path(out["ck_s3"]["dir"]) / "sub" / "extra.txt").read_bytes() == b"extra"
    # the pinned archive was downloaded once; the hub served each file once
    assert world.static.count("/w.tar.gz") >= 1
    hub_before, static_before = world.hub.count(), world.static.count()

    again, _ = fetch_json(world, world.repo, env)
    for name in world.models:
        assert again[name]["cache_hit"] is True, again[name]
        assert again[name]["dir"] == out[name]["dir"]
        assert again[name]["digest"] == out[name]["digest"]
    assert world.hub.count() == hub_before, "cache hit must not contact the hub"
    assert world.static.count() == static_before, "cache hit must not download again"


def test_served_end_to_end_from_a_cold_cache(world, tmp_path, triton_factory):
    cache = tmp_path / "cache"
    hub_resolves = world.hub.count("/resolve/")
    server = triton_factory(world.repo, env=world.env(cache), name="checkpoints")
    client = server.http_client()
    import tritonclient.http as httpclient
    for name in list(world.models) + ["ck_hf_pbutils"]:
        expect = world.models.get(name, world.models["ck_hf"])[1]
        inp = httpclient.InferInput("IN", [1], "FP32")
        inp.set_data_from_numpy(np.zeros([1], np.float32))
        res = client.infer(name, [inp])
        assert res.as_numpy("WEIGHTS")[0] == expect, name
        d = res.as_numpy("DIR")[0].decode()
        if name != "ck_local":
            assert d.startswith(str(cache / "checkpoints")), (name, d)
    # ck_hf (2 instances) and ck_hf_pbutils share one source: one download of its 2 files
    assert world.hub.count("/resolve/") - hub_resolves == 2 * 2  # range probe + body per file
    assert len([p for p in cache_entries(cache)]) == 4  # hf, git, s3, https (local: in place)


def test_rustpy_run_fetches_through_the_same_cache(world, tmp_path):
    cache = tmp_path / "cache"
    r = run_cli(["run", str(world.repo / "ck_git"), "--json", "-q"], world.env(cache), check=0)
    outputs = {o["name"]: o["data"] for o in json.loads(r.stdout)["responses"][0][0]["outputs"]}
    assert outputs["WEIGHTS"] == ["GIT-LFS-WEIGHTS"]
    assert outputs["DIR"][0].startswith(str(cache / "checkpoints"))
    again, _ = fetch_json(world, world.repo / "ck_git", world.env(cache))
    assert again["ck_git"]["cache_hit"] is True and again["ck_git"]["dir"] == outputs["DIR"][0]


def test_fetch_draws_a_progress_bar_on_a_terminal_only(world, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "m", world.models["ck_https"][0])
    env = clean_env(world.env(tmp_path / "cache"))
    typescript = tmp_path / "typescript"
    # `script` gives rustpy a pseudo-terminal, as a person's shell would.
    subprocess.run(["script", "-qec", f"{cli()} fetch {repo}", str(typescript)], env=env,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, timeout=120)
    shown = typescript.read_text(errors="replace")
    assert "w.tar.gz [" in shown and "B/" in shown, shown
    r = run_cli(["fetch", str(repo)], world.env(tmp_path / "cache2"), check=0)
    assert "w.tar.gz [" not in r.stderr  # not a terminal: no bar


def blocked_on_a_lock(pid: int) -> bool:
    """Whether process `pid` waits for a file lock (a `->` line of /proc/locks)."""
    with open("/proc/locks") as f:
        return any("->" in line and line.split("->", 1)[1].split()[3] == str(pid) for line in f)


def test_two_fetches_racing_download_once(world, tmp_path):
    """Two `rustpy fetch` of one source at once: the first downloads, the
    second waits on the cache entry's lock and then finds it cached. The race
    is made, not hoped for: the server holds the download until the second
    fetch is seen blocked on the lock (a second download arriving instead
    fails the test)."""
    cache = tmp_path / "cache"
    repo = tmp_path / "repo"
    write_model(repo, "slow", {"rustpy.checkpoint": f"{world.static.url}/w.tar.gz",
                               "rustpy.checkpoint.sha256": world.sha})
    env = clean_env(world.env(cache))
    env["PATH"] = os.environ.get("PATH", env["PATH"])

    def start():
        return subprocess.Popen([cli(), "fetch", str(repo), "--json", "-q"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for(cond, what):
        deadline = time.monotonic() + 90
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    before = world.static.count("/w.tar.gz")
    world.static.gate = threading.Event()
    procs = []
    try:
        procs.append(start())
        wait_for(lambda: world.static.count("/w.tar.gz") == before + 1,
                 "the first fetch never asked for the archive")
        procs.append(start())
        wait_for(lambda: blocked_on_a_lock(procs[1].pid)
                 or world.static.count("/w.tar.gz") > before + 1 or procs[1].poll() is not None,
                 "the second fetch neither waited on the lock nor downloaded")
        assert blocked_on_a_lock(procs[1].pid), \
            ("the second fetch did not wait for the first",
             world.static.count("/w.tar.gz") - before, procs[1].poll())
        world.static.gate.set()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        world.static.gate.set()
        world.static.gate = None
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [{o["model"]: o for o in json.loads(out)}["slow"] for out, _ in outs]
    assert all("error" not in r for r in results), results
    assert results[0]["dir"] == results[1]["dir"]
    assert [r["cache_hit"] for r in results] == [False, True], results
    assert world.static.count("/w.tar.gz") - before == 1
    assert not list((cache / "checkpoints" / ".tmp").iterdir())


def test_corrupted_download_fails_clearly_and_caches_nothing(world, tmp_path, triton_factory):
    cache = tmp_path / "cache"
    repo = tmp_path / "repo"
    write_model(repo, "corrupt", {"rustpy.checkpoint": f"{world.static.url}/corrupt.tar.gz",
                                  "rustpy.checkpoint.sha256": world.sha})
    write_model(repo, "good", world.models["ck_local"][0])
    out, r = fetch_json(world, repo, world.env(cache), check=1)
    assert "sha256 mismatch" in out["corrupt"]["error"], out
    assert world.sha in out["corrupt"]["error"]
    assert cache_entries(cache) == []
    assert not list((cache / "checkpoints" / ".tmp").iterdir())

    server = triton_factory(repo, env=world.env(cache), exit_on_error=False,
                            wait_models=["good"], name="corrupt")
    assert server.model_ready("good")
    assert not server.model_ready("corrupt")
    log = server.log_text()
    assert "model 'corrupt'" in log and "sha256 mismatch" in log, server.log_tail()
    assert cache_entries(cache) == []


def test_missing_credentials_are_named_and_secrets_never_shown(world, tmp_path):
    cache = tmp_path / "cache"
    repo = tmp_path / "repo"
    write_model(repo, "s3", world.models["ck_s3"][0])
    write_model(repo, "gated", {"rustpy.checkpoint": "hf://acme/gated"})
    env = world.env(cache, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    out, r = fetch_json(world, repo, env, check=1)
    assert "missing S3 credentials" in out["s3"]["error"], out
    assert "AWS_ACCESS_KEY_ID" in out["s3"]["error"]
    assert "401" in out["gated"]["error"] and "HF_TOKEN" in out["gated"]["error"], out

    env = world.env(cache, HF_TOKEN=HF_TOKEN)
    out, r = fetch_json(world, repo, env, check=0)
    assert (Path(out["gated"]["dir"]) / "weights.bin").read_bytes() == b"GATED-WEIGHTS"
    assert HF_TOKEN not in r.stdout + r.stderr
    assert AWS_SECRET not in r.stdout + r.stderr

    # a wrong token: refused, and its value is not echoed
    env = world.env(tmp_path / "cache2", HF_TOKEN="hf_wrong_token_1234")
    out, r = fetch_json(world, repo, env, check=1)
    assert "HF_TOKEN was refused" in out["gated"]["error"]
    assert "hf_wrong_token_1234" not in r.stdout + r.stderr


def test_offline_uses_the_cache_only(world, tmp_path, triton_factory):
    cache = tmp_path / "cache"
    repo = tmp_path / "repo"
    write_model(repo, "ck_s3", world.models["ck_s3"][0])
    out, _ = fetch_json(world, repo, world.env(cache, RUSTPY_OFFLINE="1"), check=1)
    assert "offline" in out["ck_s3"]["error"] and "rustpy fetch" in out["ck_s3"]["error"]
    assert cache_entries(cache) == []
    r = run_cli(["fetch", str(repo), "--offline", "-q"], world.env(cache), check=1)
    assert "not in the cache" in r.stderr

    fetch_json(world, repo, world.env(cache))  # prefetch, as an image build would
    server = triton_factory(repo, env=world.env(cache, RUSTPY_OFFLINE="1",
                                                AWS_ACCESS_KEY_ID=None), name="offline")
    import tritonclient.http as httpclient
    inp = httpclient.InferInput("IN", [1], "FP32")
    inp.set_data_from_numpy(np.zeros([1], np.float32))
    assert server.http_client().infer("ck_s3", [inp]).as_numpy("WEIGHTS")[0] == b"S3-WEIGHTS"


def test_pinned_tree_hash_is_verified(world, tmp_path):
    cache = tmp_path / "cache"
    repo = tmp_path / "repo"
    write_model(repo, "pinned", dict(world.models["ck_git"][0],
                                     **{"rustpy.checkpoint.sha256": "0" * 64}))
    out, _ = fetch_json(world, repo, world.env(cache), check=1)
    assert "sha256 mismatch" in out["pinned"]["error"] and "nothing was cached" in \
        out["pinned"]["error"]
    assert cache_entries(cache) == []


def test_check_validates_sources(world, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "bad_git", {"rustpy.checkpoint": "git+file:///srv/w.git@main"})
    write_model(repo, "bad_scheme", {"rustpy.checkpoint": "ftp://h/w.tgz"})
    write_model(repo, "unpinned", {"rustpy.checkpoint": "https://h/w.tgz"})
    write_model(repo, "fine", world.models["ck_s3"][0])
    write_model(repo, "authed", {"rustpy.checkpoint": "https://u:tok@h/w.tgz",
                                 "rustpy.checkpoint.sha256": "a" * 64})
    r = run_cli(["check", str(repo), "--json"], {}, check=1)
    diags = json.loads(r.stdout)["diagnostics"]
    warn = [d for d in diags if d["code"] == "checkpoint.credentials-in-source"]
    assert [Path(d["file"]).parent.name for d in warn] == ["authed"], diags
    assert warn[0]["severity"] == "warning" and "tok" not in warn[0]["message"]
    bad = {Path(d["file"]).parent.name: d for d in diags if d["code"] == "checkpoint.invalid"}
    assert set(bad) == {"bad_git", "bad_scheme", "unpinned"}, diags
    assert "full commit hash" in bad["bad_git"]["message"]
    assert "unknown source scheme" in bad["bad_scheme"]["message"]
    assert "rustpy.checkpoint.sha256" in bad["unpinned"]["message"]


def test_init_writes_a_validated_checkpoint(world, tmp_path):
    repo = tmp_path / "repo"
    src = f"{world.static.url}/w.tar.gz"
    run_cli(["init", "m", "--task", "passthrough", "--dir", str(repo), "-q",
             "--checkpoint", src, "--checkpoint-sha256", world.sha], {}, check=0)
    cfg = (repo / "m" / "config.pbtxt").read_text()
    assert src in cfg and world.sha in cfg
    out, _ = fetch_json(world, repo, world.env(tmp_path / "cache"))
    assert (Path(out["m"]["dir"]) / "weights.bin").read_bytes() == b"ARCHIVE-WEIGHTS"
    r = run_cli(["init", "n", "--task", "passthrough", "--dir", str(repo), "-q",
                 "--checkpoint", src], {}, check=2)
    assert "rustpy.checkpoint.sha256" in r.stderr and not (repo / "n").exists()


def test_zip_records_sources_and_can_bundle_the_files(world, tmp_path, triton_factory):
    cache = tmp_path / "cache"
    env = world.env(cache)
    repo = tmp_path / "repo"
    write_model(repo, "ck_https", world.models["ck_https"][0])
    # user-info in a URL is a credential: used for the download, never recorded
    authed = world.static.url.replace("http://", "http://user:url-secret-99@") + "/w.tar.gz"
    write_model(repo, "ck_authed", {"rustpy.checkpoint": authed,
                                    "rustpy.checkpoint.sha256": world.sha})
    write_model(repo, "ck_git", world.models["ck_git"][0])
    out = tmp_path / "plain.zip"
    run_cli(["zip", str(repo), "-o", str(out), "--force", "-q"], env, check=0)
    manifest = json.loads(zipfile.ZipFile(out).read("rustpy-manifest.json"))
    cks = {c["model"]: c for c in manifest["checkpoints"]}
    assert cks["ck_https"]["source"].endswith("/w.tar.gz")
    assert cks["ck_https"]["sha256"] == world.sha
    assert cks["ck_git"]["source"] == f"git+{world.git_url}@{world.commit}"
    assert not any(c["included"] for c in cks.values())
    assert cks["ck_authed"]["source"].startswith("http://***@127.0.0.1")

    bundled = tmp_path / "bundled.zip"
    run_cli(["zip", str(repo), "-o", str(bundled), "--with-checkpoints", "--force", "-q"],
            env, check=0)
    z = zipfile.ZipFile(bundled)
    assert z.read("ck_git/.rustpy-checkpoint/weights.bin") == b"GIT-LFS-WEIGHTS"
    cks = {c["model"]: c for c in json.loads(z.read("rustpy-manifest.json"))["checkpoints"]}
    assert cks["ck_git"]["included"] and cks["ck_git"]["digest"]
    manifest_text = z.read("rustpy-manifest.json").decode()
    assert "url-secret-99" not in manifest_text and "***@" in manifest_text
    run_cli(["zip", "--verify", str(bundled), "-q"], env, check=0)
    unpacked = tmp_path / "unpacked"
    run_cli(["unzip", str(bundled), "-o", str(unpacked), "-q"], env, check=0)
    # Served offline from an empty cache: the bundled files are used.
    server = triton_factory(unpacked, env=world.env(tmp_path / "empty", RUSTPY_OFFLINE="1"),
                            name="bundled")
    import tritonclient.http as httpclient
    inp = httpclient.InferInput("IN", [1], "FP32")
    inp.set_data_from_numpy(np.zeros([1], np.float32))
    res = server.http_client().infer("ck_git", [inp])
    assert res.as_numpy("WEIGHTS")[0] == b"GIT-LFS-WEIGHTS"
    assert res.as_numpy("DIR")[0].decode() == str(unpacked / "ck_git" / ".rustpy-checkpoint")
