"""Streams COUNT responses, 20 ms apart, and stops early when the request is
cancelled (rustpy closes the generator at its next yield, or predict sees
requests[0].cancelled); either way it logs
"proc_stream_cancel: <id> ended after <n>"."""
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class Model:
    def predict(self, inputs, requests):
        count, sent = int(inputs["COUNT"][0]), 0
        try:
            while sent < count and not requests[0].cancelled:
                yield {"OUT": np.array([sent], dtype=np.int32)}
                sent += 1
                time.sleep(0.02)
        finally:
            pb_utils.Logger.log_info(f"proc_stream_cancel: {requests[0].id} ended after {sent}")
