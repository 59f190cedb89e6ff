"""Time of one BLS round trip with a large tensor (default 32 MiB each way),
measured inside the calling model around `exec()`: the caller in process
mode, the same file in-process, and the same file on Triton's official
Python backend, all calling the in-process rustpy model `bls_target`
(OUT = IN ^ 0x5A). Models: tests/e2e/repos/process_bls.

    .rustpy-deps/venv/bin/python bench/bls_roundtrip.py [--lib PATH ...] [--mib 32] [--repeat 10]

Each --lib (a libtriton_rustpy.so, the rustpy-worker beside it) gets its own
server run; the variants are interleaved within a run. Prints the median,
min and max in ms and the load average around the run.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from e2e_client import infer  # noqa: E402
from tritonharness import TritonServer  # noqa: E402

SRC = ROOT / "tests" / "e2e" / "repos" / "process_bls"
VARIANTS = {
    "process": "bls_caller",
    "in_process": "bls_caller_inproc",
    "official": "bls_caller_python",
}


def make_repo(dst: Path) -> None:
    shutil.copytree(SRC / "bls_target", dst / "bls_target")
    shutil.copytree(SRC / "bls_caller", dst / "bls_caller")
    config = (SRC / "bls_caller" / "config.pbtxt").read_text()
    for name, backend, isolation in (("bls_caller_inproc", "rustpy", False),
                                     ("bls_caller_python", "python", False)):
        shutil.copytree(SRC / "bls_caller", dst / name)
        text = config.replace('name: "bls_caller"', f'name: "{name}"')
        text = text.replace('backend: "rustpy"', f'backend: "{backend}"')
        if not isolation:
            text = "\n".join(l for l in text.splitlines() if "rustpy.isolation" not in l) + "\n"
        (dst / name / "config.pbtxt").write_text(text)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def run(lib: str | None, mib: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        make_repo(repo)
        s = TritonServer([repo], backend_lib=lib, model_control_mode="explicit",
                         wait_models=[], name="bls-bench")
        s.start()
        try:
            for m in ["bls_target", *VARIANTS.values()]:
                status, body = s.load_model(m)
                assert status == 200, (m, body)
            x = np.random.default_rng(0).integers(0, 256, mib << 20, dtype=np.uint8)
            want = x ^ np.uint8(0x5A)
            times = {v: [] for v in VARIANTS}
            before = loadavg()
            for i in range(repeat + 2):
                for v, model in VARIANTS.items():
                    r = infer(s, "http", model, {"IN": x, "MODE": np.array([0], np.int32)})
                    assert np.array_equal(r.as_numpy("OUT"), want), v
                    if i >= 2:  # two warm-up rounds
                        times[v].append(int(r.as_numpy("N")[0]) / 1000)
            after = loadavg()
        finally:
            s.stop()
    return {"times": times, "load": (before, after)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", action="append", default=[])
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args()
    for lib in a.lib or [None]:
        res = run(lib, a.mib, a.repeat)
        print(f"{lib or 'default backend'}: {a.mib} MiB BLS round trip, ms "
              f"(median [min-max] of {a.repeat}); load {res['load'][0]} -> {res['load'][1]}")
        for v, t in res["times"].items():
            print(f"  {v:11s} {statistics.median(t):8.1f}  [{min(t):.1f}-{max(t):.1f}]")


if __name__ == "__main__":
    main()
