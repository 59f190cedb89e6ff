"""Real servers on loopback for the checkpoint tests (nothing reaches the internet).

    FakeHub        the Hugging Face Hub endpoints hf-hub uses (HF_ENDPOINT points at it):
                   GET /api/models/ORG/NAME/revision/REV  -> {"sha", "siblings": [{"rfilename"}]}
                   GET /ORG/NAME/resolve/REV/PATH (Range) -> 206 + Content-Range, ETag, X-Repo-Commit
                   A repo may require a bearer token (401 otherwise).
    StaticFiles    plain HTTP file server (archives); with `gate` (a threading.Event)
                   set to an unset event, each response waits until the test sets it.
    MotoS3         moto's S3 server (`moto_server` from $RUSTPY_DEPS/s3-venv), filled
                   with plain PUTs (moto checks no signature).
    make_lfs_repo  a bare git repository whose *.bin files are git-lfs objects, over file://.
Each server counts the requests it served, so a test can tell a cache hit from a download.
"""
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from tritonharness import deps_dir, free_port


class _Server:
    def __init__(self, handler_cls):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.owner = self
        self.hits = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def record(self, path):
        with self.lock:
            self.hits.append(path)

    def count(self, needle="") -> int:
        with self.lock:
            return sum(1 for h in self.hits if needle in h)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _HubHandler(_Quiet):
    def do_GET(self):
        hub = self.server.owner
        hub.record(self.path)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/?]+)(\?.*)?", self.path)
        if m:
            repo = hub.find(m.group(1), m.group(2))
            if repo is None:
                return self.send(404, b'{"error":"Repository not found"}')
            if not hub.authorized(repo, self.headers):
                return self.send(401, b'{"error":"Invalid credentials"}')
            body = json.dumps({"sha": repo["sha"], "siblings": [
                {"rfilename": f} for f in sorted(repo["files"])]}).encode()
            return self.send(200, body, [("Content-Type", "application/json")])
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path)
        if m:
            repo = hub.find(m.group(1), m.group(2))
            if repo is None or m.group(3) not in repo["files"]:
                return self.send(404, b"Entry not found")
            if not hub.authorized(repo, self.headers):
                return self.send(401, b"Invalid credentials")
            data = repo["files"][m.group(3)]
            etag = hashlib.sha256(data).hexdigest()
            headers = [("ETag", '"%s"' % etag), ("X-Repo-Commit", repo["sha"])]
            rng = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
            if rng:
                a, b = int(rng.group(1)), min(int(rng.group(2)), len(data) - 1)
                headers.append(("Content-Range", "bytes %d-%d/%d" % (a, b, len(data))))
                return self.send(206, data[a:b + 1], headers)
            return self.send(200, data, headers)
        self.send(404, b"not found")


class FakeHub(_Server):
    """repos: {"org/name": {"revision": str, "files": {path: bytes}, "token": str|None}}"""

    def __init__(self, repos):
        self.repos = {}
        for name, r in repos.items():
            sha = hashlib.sha1(json.dumps(sorted(r["files"])).encode() + name.encode()).hexdigest()
            self.repos[name] = dict(r, sha=sha)
        super().__init__(_HubHandler)

    def find(self, name, revision):
        r = self.repos.get(name)
        if r is None or revision not in (r["revision"], r["sha"]):
            return None
        return r

    def authorized(self, repo, headers):
        token = repo.get("token")
        return token is None or headers.get("Authorization") == "Bearer " + token


class _StaticHandler(_Quiet):
    def do_GET(self):
        owner = self.server.owner
        owner.record(self.path)
        path = owner.root / self.path.lstrip("/")
        if not path.is_file():
            return self.send(404, b"not found")
        gate = owner.gate
        if gate is not None and not gate.wait(timeout=120):
            return self.send(503, b"the test never opened the gate")
        self.send(200, path.read_bytes(), [("Content-Type", "application/octet-stream")])


class StaticFiles(_Server):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.gate = None
        super().__init__(_StaticHandler)


class MotoS3:
    """moto's S3-compatible server as a subprocess on a free loopback port."""

    def __init__(self, workdir: Path):
        exe = deps_dir() / "s3-venv" / "bin" / "moto_server"
        if not exe.is_file():
            raise RuntimeError(f"{exe} missing: run ci/install.sh (installs moto[server])")
        self.port = free_port()
        self.log = open(Path(workdir) / "moto.log", "wb")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start: "
                                       + (Path(workdir) / "moto.log").read_text()[-2000:])
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def put(self, path: str, data: bytes = b""):
        # moto keeps the body only of a request that looks signed (it checks no signature).
        req = urllib.request.Request(f"{self.url}/{path}", data=data, method="PUT", headers={
            "Content-Type": "application/octet-stream",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/"
                             "aws4_request, SignedHeaders=host, Signature=0"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200, r.status

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _git(*args, cwd=None):
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def make_lfs_repo(root: Path, files: dict) -> tuple:
    """A bare repo at root/bare.git with `files` committed, *.bin through git-lfs.

    Returns (file:// URL, commit)."""
    work, bare = Path(root) / "work", Path(root) / "bare.git"
    _git("init", "-q", "-b", "main", str(work))
    _git("lfs", "install", "--local", cwd=work)
    _git("lfs", "track", "*.bin", cwd=work)
    for name, data in files.items():
        p = work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "weights", cwd=work)
    commit = _git("rev-parse", "HEAD", cwd=work)
    _git("init", "-q", "--bare", str(bare))
    _git("push", "-q", f"file://{bare}", "HEAD:main", cwd=work)
    assert list((bare / "lfs" / "objects").rglob("*")), "git-lfs did not store the objects"
    return f"file://{bare}", commit
