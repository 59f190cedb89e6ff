"""Reference implementation of rustpy's batched Python API (docs/python-api.md)
on top of the official Python backend's pb_utils. Test-only.

With RUSTPY_E2E_REFERENCE=1 the e2e harness copies each repository, switches
`backend: "rustpy"` models to `backend: "python"`, moves the user's model.py to
<version>/user/model.py and puts this file in its place. That runs the same e2e
suite against the official backend, which checks the tests and the example
models themselves independently of the rustpy backend.
"""
import inspect
import json
import os
import traceback
import types

import numpy as np
import triton_python_backend_utils as pb_utils

NUMPY_TYPES = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32, "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


class PredictError(Exception):
    pass


class RequestInfo:
    def __init__(self, request, batch_size):
        self.id = request.request_id()
        self.correlation_id = request.correlation_id()
        self.parameters = json.loads(request.parameters() or "{}")
        self.requested_outputs = list(request.requested_output_names())
        self.batch_size = batch_size


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.config = json.loads(args["model_config"])
        self.max_batch_size = self.config.get("max_batch_size", 0)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(self.config)
        self.outputs = {o["name"]: o["data_type"] for o in self.config.get("output", [])}
        model_dir = args["model_repository"]
        path = os.path.join(model_dir, args["model_version"], "user", "model.py")
        try:
            with open(path) as f:
                source = f.read()
            module = types.ModuleType("model")
            module.__file__ = path
            exec(compile(source, path, "exec"), module.__dict__)
            self.model = module.Model()
            ctx = types.SimpleNamespace(
                model_name=self.name, model_version=int(args["model_version"]),
                instance_name=args["model_instance_name"],
                instance_kind=args["model_instance_kind"] or "CPU",
                device_id=int(args["model_instance_device_id"]), model_dir=model_dir,
                config=self.config,
                parameters={k: v.get("string_value", "")
                            for k, v in self.config.get("parameters", {}).items()})
            if hasattr(self.model, "initialize"):
                self.model.initialize(ctx)
        except Exception as e:
            raise RuntimeError(f"model '{self.name}': failed to load {path}: "
                               f"{''.join(traceback.format_exception_only(type(e), e)).strip()}")
        self.split = bool(getattr(self.model, "split_by_parameters", False))
        self.wants_requests = len(inspect.signature(self.model.predict).parameters) >= 2

    # ----------------------------------------------------------------- execute
    def execute(self, requests):
        infos = []
        for r in requests:
            first = r.inputs()[0].as_numpy() if r.inputs() else np.empty((1,))
            infos.append(RequestInfo(r, first.shape[0] if self.max_batch_size > 0 else 1))

        groups = {}
        for i, info in enumerate(infos):
            key = json.dumps(info.parameters, sort_keys=True) if self.split else ""
            if self.max_batch_size == 0:
                key = i
            groups.setdefault(key, []).append(i)

        responses = [None] * len(requests)
        for idxs in groups.values():
            reqs = [requests[i] for i in idxs]
            group_infos = [infos[i] for i in idxs]
            for i, resp in zip(idxs, self._run(reqs, group_infos)):
                responses[i] = resp
        return None if self.decoupled else responses

    def _run(self, reqs, infos):
        names = [t.name() for t in reqs[0].inputs()]
        arrays = {n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in reqs]
                  for n in names}
        inputs = {n: (np.concatenate(a) if self.max_batch_size > 0 else a[0])
                  for n, a in arrays.items()}
        total = sum(i.batch_size for i in infos)
        try:
            result = (self.model.predict(inputs, infos) if self.wants_requests
                      else self.model.predict(inputs))
            if inspect.isgenerator(result):
                if not self.decoupled:
                    raise PredictError("predict() is a generator but the model is not "
                                       "decoupled")
                senders = [r.get_response_sender() for r in reqs]
                for item in result:
                    for s, resp in zip(senders, self._split(item, infos, total)):
                        s.send(resp)
                for s in senders:
                    s.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return [None] * len(reqs)
            out = self._split(result, infos, total)
        except Exception as e:
            if isinstance(e, PredictError):
                msg = f"model '{self.name}': {e}"
            else:
                tb = traceback.format_exception(type(e), e, e.__traceback__)
                msg = (f"model '{self.name}': predict() raised {type(e).__name__}: {e}\n"
                       + "".join(tb[-3:]))
            out = [pb_utils.InferenceResponse(error=pb_utils.TritonError(msg))
                   for _ in reqs]
        if self.decoupled:
            for r, resp in zip(reqs, out):
                r.get_response_sender().send(
                    resp, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return out

    def _split(self, result, infos, total):
        if not isinstance(result, dict):
            raise PredictError(f"predict() must return a dict of numpy arrays, "
                               f"got {type(result).__name__}")
        checked = {}
        for name, value in result.items():
            if name not in self.outputs:
                raise PredictError(f"predict() returned unknown output '{name}' "
                                   f"(the config declares {sorted(self.outputs)})")
            want = self.outputs[name]
            if not isinstance(value, np.ndarray):
                raise PredictError(f"output '{name}' must be a numpy array, "
                                   f"got {type(value).__name__}")
            if want == "TYPE_STRING":
                value = np.array([v.encode() if isinstance(v, str) else bytes(v)
                                  for v in value.reshape(-1)],
                                 dtype=np.object_).reshape(value.shape)
            elif value.dtype != NUMPY_TYPES[want]:
                raise PredictError(f"output '{name}' has dtype {value.dtype}, but the "
                                   f"config declares {want}")
            if self.max_batch_size > 0 and (value.ndim == 0 or value.shape[0] != total):
                raise PredictError(f"output '{name}' has shape {list(value.shape)}: "
                                   f"dim 0 must be the batch size {total}")
            checked[name] = value
        responses, row = [], 0
        for info in infos:
            wanted = info.requested_outputs or list(self.outputs)
            tensors = []
            for name in wanted:
                if name not in checked:
                    raise PredictError(f"predict() did not return output '{name}'")
                v = checked[name]
                if self.max_batch_size > 0:
                    v = v[row:row + info.batch_size]
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(v)))
            row += info.batch_size
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
