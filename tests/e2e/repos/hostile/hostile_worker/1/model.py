"""User code that turns on its own worker (MODE names the attack; REPORT is
JSON of what it saw). The worker runs user code, so the model can reach the
control socket and the shared-memory files through /proc/self/fd, and write
frames (a u32 length, then JSON) to the socket as rustpy's own code does.

ok            nothing
unknown       a Finish for a request of a batch not sent yet
twice         a Finish for the request of the previous batch (already answered)
garbage       bytes that are no frame
oversize      a length field of 256 MiB + 1 (one byte over the frame cap)
ready_again   a second first answer (Ready) while a batch runs
dup2_devnull  /dev/null dup2'ed over every fd of the control socket
dup2_stdout   the control socket dup2'ed over stdout, then a print
fork          a child that keeps every fd and sleeps (REPORT: its pid)
fork_escape   the same, in a session of its own (out of the process group)
sigterm       SIGTERM, SIGINT and SIGHUP ignored, then SIGTERM sent to itself
finalize_sleep  finalize will sleep for an hour
grow          every shared region grown, shrunk, written past its end, 20
              times, then filled (REPORT: what each attempt did, the sizes)
bls_claim     the BLS input region grown to 256 TiB (sparse), then a BLS call
              claiming that much input there
big_output    a 20 MiB output (REPORT), more than the 16 MiB output region
big_bls       a BLS call with a 20 MiB input, more than the 16 MiB BLS region
              (REPORT: the error it got)
deaf          20000 server calls written straight to the socket (answered
              inline: is_model_ready), none of the replies read, then 40 s
              of sleep
half          half a frame, then silence for 40 s
flood_logs    20000 log frames (verbose: not printed)
flood_calls   40 BLS calls at once to `slow` (REPORT: how many were refused
              and the first refusal)
"""
import asyncio
import json
import os
import signal
import struct
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def fds_to(prefix):
    """This process's fds whose target starts with `prefix`, and the target."""
    found = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.append((int(fd), target))
    return found


def control_socket():
    return fds_to("socket:")[0][0]


def frame(msg) -> bytes:
    body = json.dumps(msg).encode()
    return struct.pack("<I", len(body)) + body


def send_raw(data: bytes):
    fd = control_socket()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class TritonPythonModel:
    def initialize(self, args):
        self.batches = 0
        self.sleep_in_finalize = False

    def execute(self, requests):
        self.batches += 1
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            report = {}
            getattr(self, "mode_" + mode)(report)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("PID", np.array([os.getpid()], np.int64)),
                pb_utils.Tensor("REPORT", np.array([json.dumps(report).encode()], np.object_)),
            ]))
        return responses

    def finalize(self):
        if self.sleep_in_finalize:
            time.sleep(3600)

    def mode_ok(self, report):
        pass

    def mode_unknown(self, report):
        send_raw(frame({"Finish": {"request": (self.batches + 5) << 24}}))
        time.sleep(2)

    def mode_twice(self, report):
        send_raw(frame({"Finish": {"request": (self.batches - 1) << 24}}))
        time.sleep(2)

    def mode_garbage(self, report):
        send_raw(b"\x05\x00\x00\x00hello")
        time.sleep(2)

    def mode_oversize(self, report):
        send_raw(struct.pack("<I", (256 << 20) + 1) + b'{"Log":')
        time.sleep(2)

    def mode_ready_again(self, report):
        send_raw(frame({"Ready": {"is_ready": False}}))
        time.sleep(2)

    def mode_dup2_devnull(self, report):
        null = os.open("/dev/null", os.O_RDWR)
        for fd, _ in fds_to("socket:"):
            os.dup2(null, fd)

    def mode_dup2_stdout(self, report):
        sys.stdout.flush()
        os.dup2(control_socket(), 1)
        print("hello from user code", flush=True)
        time.sleep(2)

    def _fork(self, report, escape):
        pid = os.fork()
        if pid == 0:
            if escape:
                os.setsid()
            time.sleep(3600)
            os._exit(0)
        report["child"] = pid

    def mode_fork(self, report):
        self._fork(report, False)

    def mode_fork_escape(self, report):
        self._fork(report, True)

    def mode_sigterm(self, report):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGTERM)
        report["alive"] = True

    def mode_finalize_sleep(self, report):
        self.sleep_in_finalize = True

    def mode_grow(self, report):
        regions = fds_to("/memfd:rustpy-")
        for fd, target in regions:
            name = target[len("/memfd:"):].split()[0]
            size = os.fstat(fd).st_size
            seen = report.setdefault(name, {"size": size})
            for _ in range(20):
                for what, attempt in (
                        ("grow", lambda: os.ftruncate(fd, size * 4)),
                        ("shrink", lambda: os.ftruncate(fd, 0)),
                        ("write_past_end", lambda: os.pwrite(fd, b"x" * 4096, size)),
                        ("fallocate_past_end", lambda: os.posix_fallocate(fd, size, 1 << 20))):
                    try:
                        attempt()
                        seen[what] = "done"
                    except OSError as e:
                        seen[what] = type(e).__name__
        # Filling what is there (at most 64 MiB of it, so that a region that
        # could grow does not fill the machine) is allowed: with a fixed
        # size, that is the most the region can ever hold.
        for fd, target in regions:
            name = target[len("/memfd:"):].split()[0]
            size = min(os.fstat(fd).st_size, 64 << 20)
            chunk = b"\x01" * (1 << 20)
            for at in range(0, size, len(chunk)):
                os.pwrite(fd, chunk[:size - at], at)
            report[name]["held"] = os.fstat(fd).st_blocks * 512
            report[name]["size_after"] = os.fstat(fd).st_size

    def mode_bls_claim(self, report):
        # 256 TiB: more than any process can allocate (so a backend that
        # believed it would fail its allocation at once, touching nothing).
        size = 1 << 48
        for fd, target in fds_to("/memfd:rustpy-bls-in"):
            try:
                os.ftruncate(fd, size)  # sparse: costs nothing
                report["grown"] = True
            except OSError as e:
                report["grown"] = type(e).__name__
        request = {"model_name": "slow", "model_version": -1, "request_id": "",
                   "correlation_id": "None", "flags": 0, "timeout_us": 0, "inputs": [],
                   "requested_outputs": [], "parameters": [],
                   "shared": {"start": 0, "tensors": [{"name": "X", "dtype": "UINT8",
                                                       "shape": [size], "offset": 0, "len": size}]}}
        send_raw(frame({"Call": {"call": 1 << 40, "op": {"Infer": {"stream": (1 << 40) + 1,
                                                                     "request": request}}}}))
        time.sleep(2)

    def mode_big_output(self, report):
        report["pad"] = "x" * (20 << 20)

    def mode_big_bls(self, report):
        r = pb_utils.InferenceRequest(
            model_name="slow", requested_output_names=["Y"],
            inputs=[pb_utils.Tensor("X", np.zeros(5 << 20, np.int32))])
        try:
            got = r.exec()
            report["error"] = got.error().message() if got.has_error() else None
        except Exception as e:  # noqa: BLE001 - what the call raised is the report
            report["error"] = f"{type(e).__name__}: {e}"

    def mode_deaf(self, report):
        # Nobody reads the socket while user code runs without a server
        # call of its own: the replies pile up until the backend's writes
        # block.
        calls = b"".join(
            frame({"Call": {"call": (1 << 41) + k,
                            "op": {"IsModelReady": {"name": "slow", "version": -1}}}})
            for k in range(20000))
        try:
            send_raw(calls)
        except OSError:
            pass  # killed meanwhile: the socket is shut down
        time.sleep(40)

    def mode_half(self, report):
        send_raw(struct.pack("<I", 1000) + b'{"Log":{"level":0')
        time.sleep(40)

    def mode_flood_logs(self, report):
        one = frame({"Log": {"level": 3, "file": "model.py", "line": 1, "message": "x" * 100}})
        for _ in range(200):
            send_raw(one * 100)
        report["sent"] = 20000

    def mode_flood_calls(self, report):
        async def one(k):
            r = pb_utils.InferenceRequest(
                model_name="slow", requested_output_names=["Y"],
                inputs=[pb_utils.Tensor("X", np.array([k], np.int32))])
            return await r.async_exec()

        async def all_of():
            return await asyncio.gather(*[one(k) for k in range(40)], return_exceptions=True)

        results = asyncio.run(all_of())
        refused = []
        answered = 0
        for r in results:
            if isinstance(r, Exception):
                refused.append(str(r))
            elif r.has_error():
                refused.append(r.error().message())
            else:
                answered += 1
        report["answered"] = answered
        report["refused"] = len(refused)
        report["first_refusal"] = refused[0] if refused else ""
