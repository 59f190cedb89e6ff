"""The benchmark's drivers and bookkeeping (bench/bench.py, crates/rustpy-bench).

- rustpy-inproc hosts the real tritonserver library in its own process
  (TRITONSERVER_ServerNew on bench/models) and keeps N requests in flight
  through TRITONSERVER_ServerInferAsync: every response is checked, the batch
  sizes come from the model statistics, and a wrong answer is caught.
- Every variant of the mlp and embed workloads (official backend per request
  and hand-batched, rustpy compat, rustpy batched) computes the function the
  driver checks against (a reference computed in Rust).
- rustpy-loadgen runs the new workloads over HTTP too.
- The textcls workload (issue 24: Hugging Face tokenizers + onnxruntime, from
  ci/install.sh's serving-site): every variant (official backend per request,
  rustpy compat, batched, process mode) answers a probability distribution.
- The ragged workload (issue 12: INT32 token ids of lengths 8..128): all
  three variants (official backend, rustpy ragged, rustpy split per shape)
  compute the reference in-process and over HTTP/gRPC, and the repository
  check allows only the ragged lines to differ between them.
- bench.py records which BLAS numpy runs, and `--compare` flags a ratio that
  fell by more than the runs' noise (and only then).

No assertion here is about speed: only behaviour (closed loop kept full,
responses right, regressions detected from given numbers).
"""
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tritonharness import (PROJECT_ROOT, clean_env, make_triton_install, rustpy_backend_lib,
                           tritonserver_root)

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
import bench  # noqa: E402
import perf_analyzer  # noqa: E402

BIN = rustpy_backend_lib().parent
INPROC = BIN / "rustpy-inproc"
LOADGEN = BIN / "rustpy-loadgen"
MODELS = PROJECT_ROOT / "bench" / "models"
MLP = ["mlp_python", "mlp_python_batched", "mlp_rustpy_compat", "mlp_rustpy"]
EMBED = ["embed_python", "embed_rustpy_compat", "embed_rustpy"]
ADD_SUB = ["add_sub_python", "add_sub_rustpy", "add_sub_native"]
RAGGED = ["ragged_python", "ragged_rustpy", "ragged_rustpy_split"]
TEXTCLS = ["textcls_python", "textcls_rustpy_compat", "textcls_rustpy", "textcls_rustpy_process"]


class Inproc:
    """One rustpy-inproc process serving run specs over stdin/stdout."""

    def __init__(self, models):
        for exe in (INPROC, LOADGEN):
            if not exe.is_file():
                pytest.fail(f"{exe} missing: cargo build --release --workspace", pytrace=False)
        lib = bench.tritonserver_library()
        assert lib is not None, "libtritonserver not found next to the installed tritonserver"
        self.tmp = Path(tempfile.mkdtemp(prefix="rustpy-test-inproc-"))
        bdir = make_triton_install(self.tmp / "triton") / "backends"
        self.log = self.tmp / "server.log"
        self.shm = f"rustpy_test_inproc_{os.getpid()}_"
        self.proc = subprocess.Popen(
            [str(INPROC), "--lib", str(lib), "--repo", str(MODELS), "--backend-dir", str(bdir),
             "--load", ",".join(models), "--log-file", str(self.log),
             "--backend-config", f"python,shm-region-prefix-name={self.shm}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=clean_env(bench.server_env()), cwd=self.tmp, start_new_session=True)
        self.ready = self.read(300)["ready"]

    def read(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else ""
        if not line:
            self.proc.kill()
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            pytest.fail(f"rustpy-inproc gave no answer within {timeout}s "
                        f"(exit {self.proc.poll()}): {self.proc.stderr.read()[-2000:]}\n{log}")
        return json.loads(line)

    def run(self, **spec):
        spec.setdefault("warmup", 0.2)
        spec.setdefault("duration", 1.0)
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        return self.read(spec["duration"] + spec["warmup"] + 120)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for f in Path("/dev/shm").glob(self.shm + "*"):
                f.unlink(missing_ok=True)
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.proc.returncode


@pytest.fixture(scope="module")
def inproc():
    d = Inproc(ADD_SUB + MLP + EMBED + RAGGED + TEXTCLS)
    yield d
    assert d.close() == 0


def until_answered(run, durations=(0.5, 2, 8, 30)):
    """Runs `run(duration)` with longer windows until some response came back
    (answered, failing validation or an error): on a loaded machine a short window can
    end before the first answer, which says nothing about the model."""
    for d in durations:
        r = run(d)
        if "error" in r or r.get("completed", 0) + r.get("validation_errors", 0) + r.get("errors", 0) > 0:
            break
    return r


def batches(r):
    a, b = r["stats_after"], r["stats_before"]
    return a["inference_count"] - b["inference_count"], a["execution_count"] - b["execution_count"]


def test_inproc_loads_the_models_in_process(inproc):
    assert inproc.ready == {m: True for m in ADD_SUB + MLP + EMBED + RAGGED + TEXTCLS}
    # The rustpy mlp variants run with one BLAS thread (rustpy.threads, threadpoolctl
    # from ci/install.sh's serving-site).
    log = inproc.log.read_text(errors="replace")
    for m in ("mlp_rustpy", "mlp_rustpy_compat"):
        assert f"model '{m}': rustpy.threads 1: thread pools openblas 1" in log, log[-3000:]


@pytest.mark.parametrize("model", ["add_sub_python", "add_sub_rustpy"])
def test_inproc_keeps_n_in_flight_and_checks_every_response(inproc, model):
    r = until_answered(lambda d: inproc.run(model=model, workload="add_sub", concurrency=8,
                                            duration=max(d, 1.0)))
    assert r["completed"] > 0, r
    assert r["errors"] == 0 and r["validation_errors"] == 0, r["first_error"]
    # Little's law over the measured window: the loop kept (about) 8 in flight.
    assert r["in_flight_avg"] > 4, r
    inferences, executions = batches(r)
    # Statistics come from the server itself and cover at least what we counted.
    assert inferences >= r["completed"] + r["warmup_completed"]
    assert 0 < executions <= inferences
    assert r["latency_us"]["p50"] > 0


def test_inproc_catches_wrong_answers(inproc):
    # add_sub_rustpy computes a+b, a-b; expecting the echo must fail every response.
    r = until_answered(lambda d: inproc.run(model="add_sub_rustpy", workload="add_sub", concurrency=2,
                                            expect="echo", duration=d))
    assert r["completed"] == 0
    assert r["validation_errors"] > 0
    assert "OUTPUT0" in r["first_error"]


def test_inproc_reports_errors_from_the_server(inproc):
    r = inproc.run(model="no_such_model", workload="add_sub", concurrency=1, duration=0.3)
    assert "error" in r or r.get("errors", 0) > 0, r


@pytest.mark.parametrize("model", MLP + EMBED + RAGGED + TEXTCLS)
def test_every_variant_computes_the_reference(inproc, model):
    workload = model.split("_", 1)[0]
    r = until_answered(lambda d: inproc.run(model=model, workload=workload, concurrency=4, duration=d))
    assert r["completed"] > 0, r
    assert r["validation_errors"] == 0 and r["errors"] == 0, r["first_error"]


@pytest.fixture(scope="module")
def net_server():
    from conftest import _start
    from tritonharness import TritonServer
    models = ["mlp_rustpy", "embed_python", "add_sub_rustpy", "ragged_rustpy"]
    s = _start(TritonServer([MODELS], wait_models=models, name="bench-net", load_models=models,
                            model_control_mode="explicit", env=bench.server_env()))
    yield s
    s.stop()


def loadgen(server, protocol, model, workload, *extra):
    url = server.grpc_url if protocol == "grpc" else server.http_url

    last = {}

    def run(duration):
        p = subprocess.run([str(LOADGEN), "--protocol", protocol, "--url", url, "--model", model,
                            "--workload", workload, "-c", "2", "-d", str(duration), "-w", "0.1", *extra],
                           capture_output=True, text=True, timeout=duration + 120)
        last.update(rc=p.returncode, err=p.stderr)
        return json.loads(p.stdout)

    r = until_answered(run)
    return last["rc"], r, last["err"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_loadgen_runs_mlp_and_embed(net_server, protocol):
    for model, workload in (("mlp_rustpy", "mlp"), ("embed_python", "embed"), ("add_sub_rustpy", "add_sub"),
                            ("ragged_rustpy", "ragged")):
        rc, r, err = loadgen(net_server, protocol, model, workload)
        assert rc == 0 and r["completed"] > 0, (err, r)
        assert r["validation_errors"] == 0 and r["errors"] == 0, r["first_error"]
        assert r["protocol"] == protocol


def test_loadgen_grpc_catches_wrong_answers_and_server_errors(net_server):
    rc, r, _ = loadgen(net_server, "grpc", "add_sub_rustpy", "add_sub", "--expect", "echo")
    assert rc == 1 and r["validation_errors"] > 0 and "OUTPUT0" in r["first_error"]
    rc, r, _ = loadgen(net_server, "grpc", "no_such_model", "add_sub")
    assert rc == 1 and r["errors"] > 0 and "no_such_model" in r["first_error"]


def test_blas_is_recorded():
    info = bench.blas_info()
    assert "error" not in info, info
    assert info["blas_libraries"], info  # the BLAS shared objects numpy mapped
    assert info["matmul_512x1024_us_per_row_batch1"] > 0
    assert isinstance(info["env"], dict)


def _results(points):
    """A minimal results.json: {key: (median, min, max)} of throughput."""
    return {"created": "t", "machine": {"git_commit": "x"},
            "points": {k: {"throughput_rps": {"median": m, "min": lo, "max": hi}}
                       for k, (m, lo, hi) in points.items()}}


def test_compare_flags_a_ratio_that_fell_beyond_the_noise():
    py, rp = "inproc:add_sub/-/c32/python", "inproc:add_sub/-/c32/rustpy"
    old = _results({py: (1000, 990, 1010), rp: (5000, 4950, 5050)})
    fell = _results({py: (1000, 990, 1010), rp: (4000, 3960, 4040)})      # 5.0x -> 4.0x, ±1%
    text, flagged = bench.compare(old, fell)
    assert flagged == [rp] and "REGRESSED" in text
    # The same drop inside a noisy run (±25% spreads) is not flagged.
    noisy = _results({py: (1000, 800, 1300), rp: (4000, 3000, 5000)})
    assert bench.compare(old, noisy)[1] == []
    # Both backends slower by the same factor: the ratio holds, nothing flagged.
    slower = _results({py: (500, 495, 505), rp: (2500, 2475, 2525)})
    assert bench.compare(old, slower)[1] == []


def test_compare_cli_exit_status(tmp_path):
    py, rp = "http:mlp/-/c32/python", "http:mlp/-/c32/rustpy"
    (tmp_path / "old.json").write_text(json.dumps(_results({py: (100, 99, 101), rp: (400, 396, 404)})))
    (tmp_path / "new.json").write_text(json.dumps(_results({py: (100, 99, 101), rp: (200, 198, 202)})))
    (tmp_path / "same.json").write_text(json.dumps(_results({py: (100, 99, 101), rp: (400, 396, 404)})))
    cmd = [sys.executable, str(PROJECT_ROOT / "bench" / "bench.py"), "--compare", str(tmp_path / "old.json")]
    bad = subprocess.run(cmd + ["--against", str(tmp_path / "new.json")], capture_output=True, text=True)
    assert bad.returncode == 3 and "REGRESSED" in bad.stdout, bad.stdout + bad.stderr
    ok = subprocess.run(cmd + ["--against", str(tmp_path / "same.json")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_load_unload_cycles_step_counts_workers_and_rss(tmp_path):
    """ci/bench's cycles step (issue 11) against the real server: a few
    cycles of the process-isolated add_sub models, every unload leaves no
    worker, and the report states it."""
    r = bench.load_unload_cycles(tmp_path, 3)
    assert "error" not in r, r
    assert r["cycles"] == 3 and r["max_leftover_workers"] == 0, r
    assert r["rss_start_mib"] > 0 and r["rss_end_mib"] > 0, r
    text = bench.render_cycles(r)
    assert "worker processes left after an unload: **0** (target 0: meets)" in text, text
    assert (tmp_path / "tritonserver-cycles.log").is_file()


def test_textcls_rows_give_the_targets_and_the_framework_bound():
    """textcls: batched / official with the 1.3× target, process / in-process
    with the 0.9 target, and the classifier-alone profile turned into the
    ceiling the per-string work leaves (official µs per request / batch-16 work)."""
    pts = {}
    for c, tps in ((1, (1000, 1000, 1100, 900)), (16, (4000, 4400, 6000, 5000))):
        for v, tp in zip(("python", "rustpy_compat", "rustpy", "rustpy_process"), tps):
            pts[f"grpc:textcls/-/c{c}/{v}"] = {"throughput_rps": {"median": tp, "min": tp, "max": tp}}
    prof = {"batch1_us": {"tokenize": 50, "arrays": 3, "session_run": 27, "total": 80},
            "batch16_us_per_row": {"tokenize": 40, "arrays": 5, "session_run": 5, "total": 50},
            "loadavg": 1.0}
    results = {"settings": {"variants": bench.VARIANTS, "workloads": ["textcls"]}, "points": pts,
               "machine": {"textcls_profile": prof}}
    lines = bench.target_lines(results, "grpc", "textcls",
                               lambda w, size, c, v: pts.get(bench.key_of("grpc", w, size, c, v)))
    text = "\n".join(lines)
    assert "rustpy batched API / python throughput: c=1: 1.10×, c=16: 1.50× (target ≥ 1.3× at c=16" in text, text
    assert "in-process (batched API) throughput at c=16: **0.83×** (target ≥ 0.9: misses)" in text, text
    # 1 / 4000 req/s = 250 µs per official request; 250 / 50 µs of batch-16 work alone.
    assert "python 250 µs" in text and "tokenizing 80%" in text and ": 5.00×" in text, text


def test_pycpu_rows_compare_count_2_with_count_1():
    """The count 2 / count 1 line is computed from the two pycpu workloads of
    the same run, per variant, with the ≥ 1.7× target on process mode."""
    pts = {}
    for w, tps in (("pycpu_count1", (50, 52, 30)), ("pycpu_count2", (100, 60, 55))):
        for v, tp in zip(("rustpy_compat_process", "python", "rustpy_compat"), tps):
            pts[f"grpc:{w}/-/c4/{v}"] = {"throughput_rps": {"median": tp, "min": tp, "max": tp}}
    results = {"settings": {"variants": bench.VARIANTS, "workloads": ["pycpu_count1", "pycpu_count2"]},
               "points": pts}
    lines = bench.target_lines(results, "grpc", "pycpu_count2",
                               lambda w, size, c, v: pts.get(bench.key_of("grpc", w, size, c, v)))
    text = "\n".join(lines)
    assert "process-isolated: count 2 / count 1 throughput c=4: 2.00× (target ≥ 1.7×: meets)" in text, text
    assert "python (official backend): count 2 / count 1 throughput c=4: 1.15×" in text, text
    assert "rustpy compat (same file): count 2 / count 1 throughput c=4: 1.83×" in text, text


def test_repository_check_lets_only_the_ragged_lines_differ(tmp_path, monkeypatch):
    assert bench.check_repository(["ragged"], bench.VARIANTS) == []
    for m in RAGGED:
        shutil.copytree(MODELS / m, tmp_path / m)
    monkeypatch.setattr(bench, "MODELS", tmp_path)
    assert bench.check_repository(["ragged"], bench.VARIANTS) == []
    # Any other difference (here a queue delay for the split variant only) is flagged.
    cfg = tmp_path / "ragged_rustpy_split" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("dynamic_batching { }",
                                           "dynamic_batching { max_queue_delay_microseconds: 100 }"))
    problems = bench.check_repository(["ragged"], bench.VARIANTS)
    assert len(problems) == 1 and "ragged_rustpy_split" in problems[0], problems


# ------------------------------------------------------------- perf_analyzer
PA_STDOUT = """*** Measurement Settings ***
Request concurrency: 4
  Client: 
    Request count: 64569
    Throughput: 8921.93 infer/sec
  Server: 
    Inference count: 64571
    Execution count: 20473
    Successful request count: 64571
    Avg request latency: 398 usec (overhead 3 usec + queue 291 usec + compute input 21 usec)
"""
PA_CSV = ("Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
          "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
          "p50 latency,p90 latency,p95 latency,p99 latency\n"
          "4,8921.93,4,1015,291,21,15,67,1,179,271,2555,7693\n")


def test_perf_analyzer_report_is_parsed_from_its_csv_and_its_counts():
    r = perf_analyzer.parse_report(PA_STDOUT, PA_CSV)
    assert r["throughput_rps"] == pytest.approx(8921.93)
    assert r["latency_us"] == {"p50": 179, "p90": 271, "p95": 2555, "p99": 7693}
    assert r["server_us"] == {"queue": 291, "compute_input": 21, "compute_infer": 15, "compute_output": 67}
    assert (r["client_requests"], r["inferences"], r["executions"], r["successes"]) == (64569, 64571, 20473, 64571)
    with pytest.raises(ValueError):
        perf_analyzer.parse_report(PA_STDOUT, PA_CSV.splitlines()[0])


def test_perf_analyzer_inputs_cover_every_workload():
    for w in bench.WORKLOADS:
        data = perf_analyzer.INPUTS[w](1 << 20 if w == "identity" else None)["data"]
        assert data and all(isinstance(entry, dict) and entry for entry in data)
    # The ragged pool is rustpy-bench's: lengths 8..128, ids below the vocabulary.
    lengths = [len(perf_analyzer.ragged_tokens(s)) for s in range(512)]
    assert min(lengths) >= 8 and max(lengths) <= 128 and len(set(lengths)) > 50
    assert all(0 <= t < 1024 for s in range(64) for t in perf_analyzer.ragged_tokens(s))


def test_bench_prints_perf_analyzer_figures_for_both_backends(tmp_path):
    """ci/bench's perf_analyzer driver (C API mode): rustpy and the official
    backend side by side in bench's table, batch sizes from the server's
    counts, the load recorded with every point."""
    rc = bench.main(["--drivers", "pa_capi", "--workloads", "add_sub", "--variants", "python,rustpy",
                     "--duration", "0.6", "--warmup", "0", "--repeat", "1", "--cycles", "0",
                     "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert rc == 0, results["availability"]
    assert {k: v["status"] for k, v in results["availability"].items()} == \
        {"pa_capi:add_sub_python": "ok", "pa_capi:add_sub_rustpy": "ok"}
    for c in (1, 8, 32):
        for v in ("python", "rustpy"):
            p = results["points"][bench.key_of("pa_capi", "add_sub", None, c, v)]
            assert p["throughput_rps"]["median"] > 0 and p["errors"] == 0
            assert p["avg_batch"] and p["avg_batch"] >= 1 and p["loadavg_max"] is not None
            assert set(p["server_us"]) == {"queue", "compute_input", "compute_infer", "compute_output"}
    table = (tmp_path / "table.md").read_text()
    assert "## pa_capi: perf_analyzer C API mode" in table
    assert "| 32 | python (official backend) |" in table and "| 32 | rustpy batched API |" in table
    assert "rustpy batched API / python throughput at c=32" in table


class _StatsTimeoutServer:
    """A server whose statistics endpoint does not answer (request() reports
    a timeout as status 0)."""

    def get(self, path, timeout=60.0):
        assert path == "/v2/models/add_sub_rustpy/stats"
        return 0, None


class _FakeDriver:
    """Every point answers at once, but add_sub_rustpy at c=8, whose
    statistics read times out (issue 25: bench.py stopped at that timeout
    and lost the whole run)."""
    name = "http"

    def __init__(self, args, out_dir, protocol):
        pass

    def start(self, models):
        return {m: None for m in models}

    def version(self):
        return None

    def run(self, model, workload, size, conc, expect, duration, warmup, label):
        if model == "add_sub_rustpy" and conc == 8:
            bench.model_stats(_StatsTimeoutServer(), model)
        lg = {"throughput_rps": 100.0, "in_bytes_per_s": 0.0, "completed": 10, "errors": 0,
              "validation_errors": 0, "first_error": None,
              "latency_us": {"p50": 1000.0, "p90": 1500.0, "p99": 2000.0}}
        return lg, {"inferences": 10, "executions": 5, "avg_batch": 2.0, "max_batch": 2,
                    "batch_hist": {"2": 5}}

    def stop(self):
        pass


def test_a_statistics_timeout_is_a_failed_point_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "NetworkDriver", _FakeDriver)
    monkeypatch.setattr(bench, "blas_info", lambda: {"env": {}})
    rc = bench.main(["--drivers", "http", "--workloads", "add_sub", "--variants", "python,rustpy",
                     "--duration", "0.1", "--warmup", "0", "--repeat", "2", "--cycles", "0",
                     "--out", str(tmp_path)])
    assert rc == 1  # a failed point fails the run, after the table is written
    results = json.loads((tmp_path / "results.json").read_text())
    failed = results["points"][bench.key_of("http", "add_sub", None, 8, "rustpy")]
    assert failed["failed_runs"] == 2 and failed["repeats"] == 2 and failed["throughput_rps"] is None
    assert "statistics of add_sub_rustpy: no answer within 60 s" in failed["first_failure"]
    # Every other point, before and after it, was measured.
    for c in (1, 8, 32):
        for v in ("python", "rustpy"):
            if (c, v) != (8, "rustpy"):
                p = results["points"][bench.key_of("http", "add_sub", None, c, v)]
                assert p["failed_runs"] == 0 and p["throughput_rps"]["median"] == 100.0, (c, v, p)
    table = (tmp_path / "table.md").read_text()
    assert "| 8 | rustpy batched API | **failed** |" in table
    assert "- `http:add_sub/-/c8/rustpy`: 2 of 2 failed — first: statistics of add_sub_rustpy" in table


_BURN = "import time\nwhile time.process_time() < 0.5: pass\n"


def test_foreign_cpu_counts_other_processes_and_not_the_benchs_own(tmp_path):
    """ForeignCpu (the noise measure beside the load average): CPU burnt by a
    process outside the bench's tree counts, CPU burnt by the bench's own
    children does not. CPU seconds, not wall time, so a loaded machine only
    makes the run longer."""
    f = bench.ForeignCpu()
    # Ours: a child, waited for.
    subprocess.run([sys.executable, "-c", _BURN], check=True)
    # Another's: a grandchild whose parent exits at once, so it is adopted
    # outside the bench's tree; it leaves a file when done.
    done = tmp_path / "done"
    detached = _BURN + f"open({str(done)!r}, 'w').close()\n"
    subprocess.run([sys.executable, "-c",
                    "import subprocess, sys\n"
                    f"subprocess.Popen([sys.executable, '-c', {detached!r}], start_new_session=True)\n"],
                   check=True)
    for _ in range(600):
        if done.exists():
            break
        time.sleep(0.1)
    assert done.exists()
    time.sleep(0.3)  # reaped by its new parent
    foreign, ours, wall = f.seconds()
    assert ours >= 0.45, (foreign, ours, wall)
    assert foreign >= 0.45, (foreign, ours, wall)


def test_headline_puts_every_driver_of_a_workload_side_by_side():
    def point(tp, p50, load, foreign):
        return {"throughput_rps": {"median": tp, "min": tp, "max": tp},
                "p50_us": {"median": p50, "min": p50, "max": p50},
                "loadavg_max": load, "foreign_cpus_max": foreign}

    points = {}
    for d, scale in (("pa_capi", 1.0), ("pa_grpc", 0.5)):
        points[bench.key_of(d, "add_sub", None, 16, "python")] = point(1000 * scale, 900, 5.5, 0.02)
        points[bench.key_of(d, "add_sub", None, 16, "rustpy")] = point(3000 * scale, 300, 5.9, 0.40)
        points[bench.key_of(d, "add_sub", None, 1, "python")] = point(500 * scale, 200, 1.0, 0.01)
        points[bench.key_of(d, "add_sub", None, 1, "rustpy")] = point(900 * scale, 80, 1.0, 0.01)
    saved = bench.WORKLOADS["add_sub"]
    try:
        bench.set_concurrency([1, 16])
        lines = bench.headline({"settings": {"workloads": ["add_sub"], "drivers": ["pa_capi", "pa_grpc"],
                                             "variants": ["python", "rustpy"]},
                                "points": points})
    finally:
        bench.WORKLOADS["add_sub"] = saved
    table = "\n".join(lines)
    assert "| variant | pa_capi c=16 | pa_capi p50 | pa_grpc c=16 | pa_grpc p50 | load (max) |" in table
    # Throughput × the official backend's in the same driver; p50 at c=1 in ms;
    # the load is not noise by itself when other processes were idle ...
    assert "| python (official backend) | 1,000 | 0.200 | 500 | 0.200 | 5.5, other 0.02 CPU |" in table
    # ... and is when they were busy.
    assert "| rustpy batched API | 3,000 (3.00×) | 0.080 | 1,500 (3.00×) | 0.080 | 5.9, other 0.40 CPU **noise** |" \
        in table
