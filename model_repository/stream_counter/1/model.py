"""stream_counter: streaming with a generator.

Because predict() is a generator, rustpy sends every yielded dict as its own
response as soon as it is produced, and the FINAL flag after the generator
returns. COUNT = n streams OUT = 0, 1, ..., n-1 (COUNT = 0 streams nothing but
the final flag). Use gRPC streaming (or HTTP generate_stream) to call it.
"""
import numpy as np


class Model:
    def predict(self, inputs):
        count = int(inputs["COUNT"][0])
        for i in range(count):
            yield {"OUT": np.array([i], dtype=np.int32)}
