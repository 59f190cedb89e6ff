"""Process-isolated BLS caller (tests/e2e/test_process_bls.py).

MODE 0: one BLS call to `bls_target` with IN; OUT = its OUT, N = how long
        `exec` took, microseconds (a figure for docs/benchmarks.md).
MODE 1: 8 threads at once, thread k sends IN ^ k (k = 1..8); OUT = their
        answers concatenated in k order, N = how many calls overlapped.
MODE 2: the same with 8 `async_exec` calls gathered on an event loop
        (k = 9..16); N = how many of them were awaited at once (8 when
        async_exec returns a pending awaitable, 1 if it ran the call before
        returning).
MODE 3: a decoupled BLS stream from `bls_stream_target` (N = 40 responses);
        OUT = the responses' OUT concatenated in order, N = responses seen.
MODE 4: the answer of a BLS call made by a thread that `initialize`
        started (IN of 1 MiB: arange % 251); N = 1 if `exec` called in
        `initialize` itself raised the phase error (as upstream).
MODE 5: a BLS call with IN to a model that is not loaded; OUT = the error
        message (UTF-8), N = 1 if the response carried an error.
MODE 6: three calls in a row: the first answer is kept, the second
        dropped, the third made (reusing the second's buffer); OUT = the
        third's answer (to IN ^ 0x0F), N = 1 if the kept answer did not
        change, was writable and shares no memory with the third.
"""
import asyncio
import os
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

THREADS = 8


def call(x):
    req = pb_utils.InferenceRequest(model_name="bls_target", requested_output_names=["OUT"],
                                    inputs=[pb_utils.Tensor("IN", x)])
    return req


def answer(resp):
    if resp.has_error():
        raise pb_utils.TritonModelException(resp.error().message())
    return pb_utils.get_output_tensor_by_name(resp, "OUT").as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        self.init_phase_error = 0
        try:
            call(np.zeros(8, np.uint8)).exec()
        except pb_utils.TritonModelException as e:
            self.init_phase_error = int("only supported during the 'execute'" in str(e))
        self.init_result = {}

        def from_init_thread():
            x = (np.arange(1 << 20) % 251).astype(np.uint8)
            try:
                self.init_result["out"] = answer(call(x).exec())
            except Exception as e:  # noqa: BLE001 - reported by MODE 4
                self.init_result["error"] = str(e)

        self.init_thread = threading.Thread(target=from_init_thread)
        self.init_thread.start()

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            mode = int(pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0])
            n = 0
            if mode == 0:
                started = time.perf_counter()
                out = answer(call(x).exec())
                n = int((time.perf_counter() - started) * 1e6)
            elif mode == 1:
                out, n = self.threads(x)
            elif mode == 2:
                out, n = asyncio.run(self.gathered(x))
            elif mode == 3:
                out, n = self.stream(x)
            elif mode == 4:
                self.init_thread.join(timeout=120)
                if "error" in self.init_result:
                    raise pb_utils.TritonModelException(self.init_result["error"])
                out, n = self.init_result["out"], self.init_phase_error
            elif mode == 5:
                req = pb_utils.InferenceRequest(model_name="no_such_model", requested_output_names=["OUT"],
                                                inputs=[pb_utils.Tensor("IN", x)])
                resp = req.exec()
                n = int(resp.has_error())
                out = np.frombuffer(resp.error().message().encode() if n else b"", np.uint8)
            elif mode == 6:
                first = answer(call(x).exec())
                kept = first.copy()
                second = answer(call(np.bitwise_xor(x, np.uint8(0xFF))).exec())
                del second
                out = answer(call(np.bitwise_xor(x, np.uint8(0x0F))).exec())
                n = int(first.flags.writeable and np.array_equal(first, kept)
                        and not np.shares_memory(first, out))
                first[:] = 0  # the caller's own memory
            else:
                raise pb_utils.TritonModelException(f"unknown MODE {mode}")
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUT", np.ascontiguousarray(out, dtype=np.uint8)),
                pb_utils.Tensor("N", np.array([n], dtype=np.int32)),
                pb_utils.Tensor("PID", np.array([os.getpid()], dtype=np.int64)),
            ]))
        return responses

    def threads(self, x):
        results = [None] * THREADS
        barrier = threading.Barrier(THREADS)
        lock = threading.Lock()
        state = {"in_flight": 0, "max": 0}

        def run(k):
            data = np.bitwise_xor(x, np.uint8(k + 1))
            barrier.wait(timeout=60)
            with lock:
                state["in_flight"] += 1
                state["max"] = max(state["max"], state["in_flight"])
            try:
                results[k] = answer(call(data).exec())
            except Exception as e:  # noqa: BLE001 - reported below
                results[k] = e
            with lock:
                state["in_flight"] -= 1

        workers = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=120)
        for r in results:
            if not isinstance(r, np.ndarray):
                raise pb_utils.TritonModelException(f"a BLS call from a thread failed: {r!r}")
        return np.concatenate(results), state["max"]

    async def gathered(self, x):
        state = {"awaiting": 0, "max": 0}

        async def one(k):
            pending = call(np.bitwise_xor(x, np.uint8(THREADS + k + 1))).async_exec()
            state["awaiting"] += 1
            state["max"] = max(state["max"], state["awaiting"])
            try:
                return await pending
            finally:
                state["awaiting"] -= 1

        answers = await asyncio.gather(*(one(k) for k in range(THREADS)))
        return np.concatenate([answer(r) for r in answers]), state["max"]

    def stream(self, x):
        req = pb_utils.InferenceRequest(
            model_name="bls_stream_target", requested_output_names=["OUT", "I"],
            inputs=[pb_utils.Tensor("IN", x), pb_utils.Tensor("N", np.array([40], np.int32))])
        parts = []
        for resp in req.exec(decoupled=True):
            if resp.has_error():
                raise pb_utils.TritonModelException(resp.error().message())
            out = pb_utils.get_output_tensor_by_name(resp, "OUT")
            if out is None:
                continue  # the final, empty response
            i = int(pb_utils.get_output_tensor_by_name(resp, "I").as_numpy()[0])
            if i != len(parts):
                raise pb_utils.TritonModelException(f"response {i} came as number {len(parts)}")
            parts.append(out.as_numpy().copy())
        return np.concatenate(parts), len(parts)
