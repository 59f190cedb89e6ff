import json
import os
import queue
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

SEEN = {}


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        SEEN["auto_complete_config"] = pb_utils.get_model_dir()
        return config

    def initialize(self, args):
        self.name = args["model_name"]
        self.markers = os.environ["RUSTPY_TEST_MARKERS"]
        SEEN["initialize"] = pb_utils.get_model_dir()
        self.asks, self.answers = queue.Queue(), queue.Queue()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while self.asks.get() is not None:
            self.answers.put(pb_utils.get_model_dir())

    def execute(self, requests):
        seen = dict(SEEN, execute_entry=pb_utils.get_model_dir())
        # Wait (bounded) until both copies of this model are inside execute.
        open(os.path.join(self.markers, self.name + ".in"), "w").close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sum(n.endswith(".in") for n in os.listdir(self.markers)) >= 2:
                break
            time.sleep(0.02)
        seen["execute_after_other_entered"] = pb_utils.get_model_dir()
        self.asks.put(True)
        seen["own_thread"] = self.answers.get(timeout=20)
        out = pb_utils.Tensor("OUT", np.array([json.dumps(seen).encode()], dtype=object))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
