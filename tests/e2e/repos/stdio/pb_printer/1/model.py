"""The official API, printing as upstream's QA models do: their test greps
the server log for "Finalize invoked" / "Finalize complete..."."""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        print("pb_printer: initialize", args["model_instance_name"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            print("pb_printer: execute", int(x[0]))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return responses

    def finalize(self):
        print("Finalize invoked")
        print("Finalize complete...")
