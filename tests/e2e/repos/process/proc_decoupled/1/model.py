"""Decoupled, answered from a thread per request after execute returned.

COUNT responses OUT = 0, 1, ...; with WAIT = 1 the thread sends the first
response, then waits (up to 60 s) for the file `<RUSTPY_TEST_MARKERS>/release`
before the rest. Before each response it checks request.is_cancelled(); when
cancelled it logs "proc_decoupled: <id> cancelled after <n>" and closes the
stream. One instance: a request that waits must not keep the next ones out."""
import os
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.logger = pb_utils.Logger

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._answer, args=(request,), daemon=True).start()
        return None

    def _answer(self, request):
        sender = request.get_response_sender()
        count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy()[0])
        wait = int(pb_utils.get_input_tensor_by_name(request, "WAIT").as_numpy()[0])
        release = os.path.join(os.environ.get("RUSTPY_TEST_MARKERS", "/nonexistent"), "release")
        for i in range(count):
            if request.is_cancelled():
                self.logger.log_info(f"proc_decoupled: {request.request_id()} cancelled after {i}")
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            out = pb_utils.Tensor("OUT", np.array([i], np.int32))
            sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
            if i == 0 and wait:
                deadline = time.monotonic() + 60
                while not os.path.exists(release) and time.monotonic() < deadline:
                    time.sleep(0.02)
            elif wait:
                time.sleep(0.02)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
