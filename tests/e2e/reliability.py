"""Shared helpers of the reliability suites (test_lifecycle, test_isolation,
test_soak, test_faults, test_bad_input): repository paths, a module-scoped
server starter, raw HTTP requests (JSON and the binary tensor extension) and
the server process's memory figures."""
from __future__ import annotations

import json
import os
import shutil
import struct
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tritonharness import E2E_DIR, TritonServer, TritonStartError

RELIABILITY = E2E_DIR / "repos" / "reliability"


def long_run() -> bool:
    """RUSTPY_LONG=1 turns on the long variants (1000 cycles, minutes of soak)."""
    return os.environ.get("RUSTPY_LONG", "") not in ("", "0", "false")


def start_server(*repos, **kw) -> TritonServer:
    kw.setdefault("name", "reliability")
    s = TritonServer(list(repos), **kw)
    try:
        return s.start()
    except TritonStartError as e:
        s.stop()
        pytest.fail(f"could not start tritonserver: {e}", pytrace=False)


def assert_setting_refused(repo: Path, model: str, setting: str, why: str) -> None:
    """A server given `--backend-config=rustpy,<setting>` fails `model`'s load
    with `why` in the answer or the log."""
    s = start_server(repo, name="bad-setting", model_control_mode="explicit", wait_models=[],
                     extra_args=[f"--backend-config=rustpy,{setting}"])
    try:
        status, body = s.load_model(model)
        assert status != 200
        assert why in str(body) + s.log_text()
    finally:
        s.stop()


def copy_models(dst: Path, *model_dirs: Path) -> Path:
    """Copies model directories into repository `dst` (created)."""
    dst.mkdir(parents=True, exist_ok=True)
    for m in model_dirs:
        shutil.copytree(m, dst / m.name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


# --------------------------------------------------------------- raw HTTP
def http_infer_raw(server, model: str, header: dict, binary: bytes = b"",
                   timeout: float = 60.0):
    """POSTs an inference request built by hand. With `binary`, the body is the
    JSON header followed by the raw tensor bytes (the binary tensor extension,
    Inference-Header-Content-Length). Returns (status, parsed body)."""
    body = json.dumps(header).encode()
    headers = {"Content-Type": "application/json"}
    if binary:
        headers = {"Content-Type": "application/octet-stream",
                   "Inference-Header-Content-Length": str(len(body))}
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/infer",
                                 data=body + binary, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def bytes_elems(*elems: bytes) -> bytes:
    """Triton's BYTES wire encoding: u32 little-endian length + data, per element."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elems)


# ----------------------------------------------------------------- memory
def proc_status(pid: int) -> dict:
    """/proc/<pid>/status as {key: value string}."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def rss_kib(pid: int) -> int:
    return int(proc_status(pid)["VmRSS"].split()[0])


def thread_count(pid: int) -> int:
    return int(proc_status(pid)["Threads"])
