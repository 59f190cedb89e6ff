"""textcls as users write it for Triton's Python backend: a Hugging Face
tokenizer and an onnxruntime session (textcls_build.py), one request at a
time: tokenize its text, one session.run, one response.

BYTES TEXT [1] -> FP32 PROBS [4] (class probabilities).
"""
import triton_python_backend_utils as pb_utils

from textcls_build import build, run


class TritonPythonModel:
    def initialize(self, args):
        self.tokenizer, self.session = build()

    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)[0]
            probs = run(self.session, [self.tokenizer.encode(text.decode())])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("PROBS", probs)]))
        return responses
