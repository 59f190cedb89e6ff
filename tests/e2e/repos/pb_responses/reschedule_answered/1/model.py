import os

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        markers = os.environ.get("RUSTPY_TEST_MARKERS")
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if markers:  # one line per execution of a request: a test sees re-executions
                with open(os.path.join(markers, "reschedule_answered.log"), "a") as f:
                    f.write("%d\n" % int(x[0]))
            request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
            # Wrong: a rescheduled request must get None here.
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x)]))
        return responses
