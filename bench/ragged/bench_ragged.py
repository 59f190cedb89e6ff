"""Ragged-batching benchmark (issue 12): variable-length token ids (lengths
8..128, uniform) against three models in one tritonserver:

    tokens_ragged   rustpy, allow_ragged_batch + batch_input: any lengths share a call
    tokens_split    rustpy without ragged batching (split per shape, the old behaviour)
    tokens_python   Triton's official Python backend (ragged batches, execute loops)

    .rustpy-deps/venv/bin/python bench/ragged/bench_ragged.py [--duration S] [--concurrency N] [--repeat N]

Each point keeps N requests in flight over gRPC from --procs client processes
(async_infer, one client per 4 in-flight slots) for S seconds and counts completed requests; every
16th response is checked against a local computation. The batch sizes come
from /v2/models/<m>/stats. Prints a markdown table (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from tritonharness import TritonServer  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402

MODELS = Path(__file__).resolve().parent / "models"
VARIANTS = ["tokens_ragged", "tokens_split", "tokens_python"]
TABLE = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)


def run(server, model, concurrency, duration, seed):
    rng = np.random.default_rng(seed)
    pool = [rng.integers(0, 5000, size=(1, int(n)), dtype=np.int32)
            for n in rng.integers(8, 129, size=512)]
    lock = threading.Condition()
    state = {"done": 0, "errors": 0, "inflight": 0, "bad": 0}
    stop_at = time.monotonic() + duration
    clients = [server.grpc_client() for _ in range(max(1, concurrency // 4))]

    def send(k, i):
        tokens = pool[i % len(pool)]
        inp = grpcclient.InferInput("TOKENS", list(tokens.shape), "INT32")
        inp.set_data_from_numpy(tokens)

        def done(result, error):
            with lock:
                if error is not None:
                    state["errors"] += 1
                else:
                    state["done"] += 1
                    if i % 16 == 0:
                        want = TABLE[tokens % 1000].mean(axis=1)
                        if not np.allclose(result.as_numpy("EMB"), want, atol=1e-4):
                            state["bad"] += 1
                state["inflight"] -= 1
                lock.notify()
            if time.monotonic() < stop_at:
                with lock:
                    state["inflight"] += 1
                send(k, i + concurrency)

        clients[k % len(clients)].async_infer(model, [inp], callback=done)

    t0 = time.monotonic()
    with lock:
        state["inflight"] = concurrency
    for k in range(concurrency):
        send(k, k)
    with lock:
        while state["inflight"] > 0:
            lock.wait(1)
    elapsed = time.monotonic() - t0
    for c in clients:
        c.close()
    return state["done"] / elapsed, state


def _proc(args):
    url, model, concurrency, duration, seed, q = args
    server = _Remote(url)
    q.put(run(server, model, concurrency, duration, seed))


class _Remote:
    def __init__(self, url):
        self.url = url

    def grpc_client(self):
        return grpcclient.InferenceServerClient(self.url)


def run_procs(server, model, concurrency, duration, seed, procs):
    """`procs` client processes share the in-flight requests (a Python client
    alone cannot keep up with the fastest variant)."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=_proc, args=((server.grpc_url, model, concurrency // procs, duration,
                                           seed * 100 + k, q),)) for k in range(procs)]
    for p in ps:
        p.start()
    got = [q.get(timeout=duration + 120) for _ in ps]
    for p in ps:
        p.join()
    state = {key: sum(g[1][key] for g in got) for key in ("done", "errors", "bad")}
    return sum(g[0] for g in got), state


def batch_ns(st1, st0):
    """Total compute ns of the executions between two /stats snapshots."""
    def total(st):
        return sum(b[k]["ns"] for b in st.get("batch_stats", [])
                   for k in ("compute_input", "compute_infer", "compute_output"))
    return total(st1) - total(st0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    args = ap.parse_args()
    server = TritonServer([MODELS], wait_models=VARIANTS, name="bench_ragged")
    server.start()
    try:
        results = {v: [] for v in VARIANTS}
        for v in VARIANTS:  # warm-up
            run_procs(server, v, args.concurrency, 2, 99, args.procs)
        for r in range(args.repeat):
            for v in VARIANTS:  # interleaved
                st0 = server.model_stats(v)
                rps, state = run_procs(server, v, args.concurrency, args.duration, r, args.procs)
                st1 = server.model_stats(v)
                inf = st1["inference_count"] - st0["inference_count"]
                exe = st1["execution_count"] - st0["execution_count"]
                # Server-side execution time per request (input + model +
                # output of every execution, from batch_stats), whatever the
                # client's speed.
                state["us_per_req"] = batch_ns(st1, st0) / max(inf, 1) / 1000
                results[v].append((rps, inf / max(exe, 1), state))
                print(f"[bench_ragged] run {r} {v}: {rps:.0f} req/s, {inf / max(exe, 1):.1f} req/call, "
                      f"{state['us_per_req']:.0f} us/req server-side, errors {state['errors']}, wrong {state['bad']}", file=sys.stderr, flush=True)
        base = statistics.median(x[0] for x in results["tokens_split"])
        print(f"| model | req/s (median of {args.repeat}) | min..max | requests per call "
              f"| server compute µs/request | vs split (req/s) |")
        print("|---|---:|---:|---:|---:|---:|")
        for v in VARIANTS:
            rps = [x[0] for x in results[v]]
            per_call = statistics.median(x[1] for x in results[v])
            errs = sum(x[2]["errors"] + x[2]["bad"] for x in results[v])
            assert errs == 0, f"{v}: {errs} failed or wrong responses"
            us = statistics.median(x[2]["us_per_req"] for x in results[v])
            print(f"| {v} | {statistics.median(rps):.0f} | {min(rps):.0f}..{max(rps):.0f} | "
                  f"{per_call:.1f} | {us:.0f} | {statistics.median(rps) / base:.2f}x |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
