"""rustpy's implementation of `triton_python_backend_utils` (pb_utils).

Models written for Triton's official Python backend import this module by
that name; rustpy registers it in sys.modules before any model is loaded, so
they run unchanged in-process. Tensors are plain numpy arrays here: there is
no shared memory to copy through.
"""

import asyncio
import json
import struct
import threading

import numpy as np

import _rustpy_native as _native

# --- constants (values are Triton's) -------------------------------------
TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_GPU = 2

_TYPE_CODES = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6,
    "INT16": 7, "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12,
    "BYTES": 13, "STRING": 13, "BF16": 14,
}
_CODE_TO_NUMPY = {
    1: np.bool_, 2: np.uint8, 3: np.uint16, 4: np.uint32, 5: np.uint64,
    6: np.int8, 7: np.int16, 8: np.int32, 9: np.int64, 10: np.float16,
    11: np.float32, 12: np.float64, 13: np.object_,
}
TRITON_STRING_TO_NUMPY = {
    "TYPE_" + name: _CODE_TO_NUMPY[code]
    for name, code in _TYPE_CODES.items()
    if code in _CODE_TO_NUMPY and name != "BYTES"
}


def triton_to_numpy_type(data_type):
    return _CODE_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type):
    dt = np.dtype(data_type)
    if dt == np.object_ or dt.type == np.bytes_:
        return 13
    for code, np_type in _CODE_TO_NUMPY.items():
        if code != 13 and dt == np.dtype(np_type):
            return code
    return None


def triton_string_to_numpy(triton_type_string):
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor):
    """Encodes a bytes/object array as Triton's length-prefixed BYTES."""
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        return None
    parts = []
    for item in input_tensor.ravel(order="C"):
        if isinstance(item, bytes):
            data = item
        else:
            data = str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor):
    """Decodes length-prefixed BYTES into a 1-D object array of bytes."""
    buf = bytes(encoded_tensor)
    items, offset = [], 0
    while offset < len(buf):
        (length,) = struct.unpack_from("<I", buf, offset)
        offset += 4
        items.append(buf[offset:offset + length])
        offset += length
    return np.array(items, dtype=np.object_)


# --- errors ------------------------------------------------------------------
class TritonError(Exception):
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message, code=INTERNAL):
        if message is None or code is None:
            raise TypeError("TritonError(message, code): neither may be None")
        super().__init__(message)
        self._message = str(message)
        self._code = int(code)

    def code(self):
        return self._code

    def message(self):
        return self._message

    def __str__(self):
        return self._message


class TritonModelException(Exception):
    pass


# --- tensors -------------------------------------------------------------------
class Tensor:
    """A named tensor backed by a numpy array (always on the CPU)."""

    __slots__ = ("_name", "_array", "_dtype_code")

    def __init__(self, name, array, _dtype_code=None):
        if not isinstance(name, str):
            raise TypeError("Tensor name must be a str")
        if not isinstance(array, np.ndarray):
            raise TritonModelException(
                "Tensor '%s': expected a numpy.ndarray, got %s" % (name, type(array).__name__))
        if array.dtype.kind in "US":
            array = array.astype(np.object_)
        if not array.flags["C_CONTIGUOUS"]:
            array = np.ascontiguousarray(array)
        code = _dtype_code if _dtype_code is not None else numpy_to_triton_type(array.dtype)
        if code is None:
            raise TritonModelException(
                "Tensor '%s': numpy dtype %s has no Triton data type" % (name, array.dtype))
        self._name = name
        self._array = array
        self._dtype_code = code

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array

    def triton_dtype(self):
        return self._dtype_code

    def shape(self):
        return list(self._array.shape)

    def is_cpu(self):
        return True

    def to_dlpack(self):
        if self._array.dtype == np.object_:
            raise TritonModelException("DLPack does not support BYTES tensors")
        return self._array.__dlpack__()

    def __dlpack__(self, stream=None):
        return self.to_dlpack()

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    @staticmethod
    def from_dlpack(name, dlpack_object):
        return Tensor(name, np.from_dlpack(dlpack_object))

    def __repr__(self):
        return "Tensor(name=%r, shape=%r, dtype=%s)" % (self._name, self.shape(), self._array.dtype)


# --- responses -------------------------------------------------------------------
class InferenceResponse:
    def __init__(self, output_tensors=None, error=None, parameters=None):
        if output_tensors is None:
            output_tensors = []
        if error is not None and not isinstance(error, TritonError):
            raise TypeError("InferenceResponse error must be a TritonError")
        if isinstance(parameters, dict):
            parameters = json.dumps(parameters)
        self._outputs = list(output_tensors)
        self._error = error
        self._parameters = parameters if parameters is not None else "{}"

    def output_tensors(self):
        return self._outputs

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error

    def parameters(self):
        return self._parameters


class InferenceResponseSender:
    """Sends the responses of one request; usable from any thread."""

    def __init__(self, native):
        self._native = native

    def send(self, response=None, flags=0):
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException(
                "Expected an 'InferenceResponse' object, found type '%s'." % type(response).__name__)
        _send(self._native, response, flags)

    def is_cancelled(self):
        return self._native.is_cancelled()


def _send(native, response, flags):
    if response is None:
        native.send(None, None, flags)
    elif response.has_error():
        err = response.error()
        native.send(None, (err.code(), err.message()), flags)
    else:
        outputs = [(t.name(), t.as_numpy(), t.triton_dtype()) for t in response.output_tensors()]
        native.send(outputs, None, flags)


# --- requests ------------------------------------------------------------------------
class PreferredMemory:
    def __init__(self, preferred_memory_type, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceRequest:
    """A request received by execute(), or (built by user code) a BLS request."""

    def __init__(self, request_id="", correlation_id=0, inputs=None, requested_output_names=None,
                 model_name=None, model_version=-1, flags=0, timeout=0, preferred_memory=None,
                 trace=None, parameters=None, _native=None):
        if not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        if isinstance(parameters, dict):
            for key, value in parameters.items():
                if not isinstance(key, str):
                    raise TritonModelException(
                        "Expect parameters keys to have type str, found type %s" % type(key))
                if not isinstance(value, (bool, int, str)):
                    raise TritonModelException(
                        "Expect parameters values to have type bool/int/str, found type %s" % type(value))
            parameters = json.dumps(parameters)
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._inputs = list(inputs or [])
        self._requested = list(requested_output_names or [])
        self._model_name = model_name
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._parameters = parameters if parameters is not None else "{}"
        self._native = _native
        self._sender = None
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL

    def inputs(self):
        return self._inputs

    def request_id(self):
        return self._request_id

    def correlation_id(self):
        return self._correlation_id

    def flags(self):
        return self._flags

    def set_flags(self, flags):
        self._flags = flags

    def timeout(self):
        return self._timeout

    def parameters(self):
        return self._parameters

    def requested_output_names(self):
        return self._requested

    def get_response_sender(self):
        if self._native is None:
            raise TritonModelException("only requests given to execute() have a response sender")
        if self._sender is None:
            self._sender = InferenceResponseSender(self._native)
        return self._sender

    def is_cancelled(self):
        return self._native is not None and self._native.is_cancelled()

    def set_release_flags(self, flags):
        """RESCHEDULE hands the request back to Triton's (iterative) sequence
        batcher after execute instead of completing it; no response is due."""
        if flags not in (TRITONSERVER_REQUEST_RELEASE_ALL, TRITONSERVER_REQUEST_RELEASE_RESCHEDULE):
            raise TritonModelException("unknown release flags %r" % (flags,))
        self._release_flags = flags

    def trace(self):
        return None

    def exec(self, decoupled=False):
        """Runs this request on another model in the same server (BLS)."""
        if not self._model_name:
            raise TritonModelException("BLS request needs a model_name")
        params = json.loads(self._parameters) if isinstance(self._parameters, str) else {}
        inputs = [(t.name(), t.as_numpy(), t.triton_dtype()) for t in self._inputs]
        stream = _native.bls_infer(
            self._model_name, int(self._model_version), self._request_id, self._correlation_id,
            int(self._flags), int(self._timeout), params, inputs, list(self._requested))
        if decoupled:
            return ResponseIterator(stream)
        result = None
        while True:
            item = stream.next_response()
            if item is None:
                break
            response = _response_from_native(item)
            if item[0] or item[1] is not None or result is None:
                result = response
            if item[3]:
                break
        return result if result is not None else InferenceResponse()

    def async_exec(self, decoupled=False):
        """Like exec(), as an awaitable (runs in the loop's default executor)."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, self.exec, decoupled)


def _response_from_native(item):
    outputs, error, params, _final = item
    tensors = [Tensor(name, array, code) for name, array, code in outputs]
    err = TritonError(error[1], error[0]) if error is not None else None
    return InferenceResponse(tensors, err, json.dumps(params) if params else None)


class ResponseIterator:
    """The responses of a decoupled BLS request; the last one may be empty."""

    def __init__(self, stream):
        self._stream = stream
        self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._stream.next_response()
        if item is None:
            self._done = True
            raise StopIteration
        if item[3]:
            self._done = True
        return _response_from_native(item)


# --- logging -------------------------------------------------------------------------
class Logger:
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3

    @staticmethod
    def log(message, level=0):
        _native.log(int(level), str(message))

    @staticmethod
    def log_info(message):
        _native.log(0, str(message))

    @staticmethod
    def log_warn(message):
        _native.log(1, str(message))

    @staticmethod
    def log_error(message):
        _native.log(2, str(message))

    @staticmethod
    def log_verbose(message):
        _native.log(3, str(message))


# --- metrics (exported on Triton's metrics endpoint) -----------------------------
class Metric:
    def __init__(self, native):
        self._native = native

    def increment(self, value):
        self._native.increment(float(value))

    def set(self, value):
        self._native.set(float(value))

    def observe(self, value):
        self._native.observe(float(value))

    def value(self):
        return self._native.value()


class MetricFamily:
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2

    def __init__(self, name, description, kind):
        if kind not in (0, 1, 2):
            raise TritonModelException("unknown metric kind %r" % (kind,))
        self.name = name
        self.description = description
        self.kind = kind
        self._native = _native.NativeMetricFamily(name, description, int(kind))

    def Metric(self, labels=None, buckets=None):
        if self.kind == MetricFamily.HISTOGRAM and buckets is None:
            raise TritonModelException("a HISTOGRAM metric needs buckets")
        pairs = [(str(k), str(v)) for k, v in (labels or {}).items()]
        return Metric(self._native.metric(pairs, list(buckets) if buckets is not None else None))


# --- model control (explicit model-control mode) ---------------------------------
def load_model(model_name, config="", files=None):
    file_items = []
    for path, content in (files or {}).items():
        if not path.startswith("file:"):
            raise TritonModelException("file keys must start with 'file:', got %r" % path)
        file_items.append((path, bytes(content)))
    _native.load_model(model_name, config or "", file_items)


def unload_model(model_name, unload_dependents=False):
    _native.unload_model(model_name, bool(unload_dependents))


def is_model_ready(model_name, model_version=""):
    version = int(model_version) if str(model_version).strip() else -1
    return _native.is_model_ready(model_name, version)


# --- config helpers -------------------------------------------------------------------
def get_input_tensor_by_name(inference_request, name):
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response, name):
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def _config_entry(model_config, section, name):
    for entry in model_config.get(section, []):
        if entry.get("name") == name:
            return entry
    return None


def get_input_config_by_name(model_config, name):
    return _config_entry(model_config, "input", name)


def get_output_config_by_name(model_config, name):
    return _config_entry(model_config, "output", name)


def using_decoupled_model_transaction_policy(model_config):
    policy = model_config.get("model_transaction_policy") or {}
    return bool(policy.get("decoupled", False))


_model_dir = None


def get_model_dir():
    """The directory of the model (set per model while its code runs)."""
    return _model_dir


class ModelConfig:
    """The helper auto_complete_config(config) receives and returns."""

    def __init__(self, model_config):
        if isinstance(model_config, str):
            model_config = json.loads(model_config)
        self._model_config = model_config

    def as_dict(self):
        return self._model_config

    def set_max_batch_size(self, max_batch_size):
        current = self._model_config.get("max_batch_size", 0)
        if current not in (0, max_batch_size) and current != "0":
            raise ValueError(
                "configuration specified max_batch_size %s, but auto-complete wants to set %s"
                % (current, max_batch_size))
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self):
        if self._model_config.get("sequence_batching"):
            raise ValueError("configuration has sequence_batching; cannot set dynamic_batching")
        self._model_config.setdefault("dynamic_batching", {})

    def _add(self, section, tensor, allowed):
        if not isinstance(tensor, dict):
            raise ValueError("%s must be a dict" % section)
        for key in tensor:
            if key not in allowed:
                raise ValueError("unknown key '%s' for %s '%s'" % (key, section, tensor.get("name")))
        for key in ("name", "data_type", "dims"):
            if key not in tensor:
                raise ValueError("%s '%s' is missing '%s'" % (section, tensor.get("name"), key))
        entries = self._model_config.setdefault(section, [])
        for entry in entries:
            if entry.get("name") == tensor["name"]:
                for key, value in tensor.items():
                    existing = entry.get(key)
                    if key == "dims" and existing is not None:
                        if [int(d) for d in existing] != [int(d) for d in value]:
                            raise ValueError(
                                "%s '%s' has dims %s in the config, auto-complete wants %s"
                                % (section, tensor["name"], existing, value))
                    elif existing not in (None, value):
                        raise ValueError(
                            "%s '%s' has %s %r in the config, auto-complete wants %r"
                            % (section, tensor["name"], key, existing, value))
                    entry[key] = value
                return
        entries.append(dict(tensor))

    def add_input(self, input):
        self._add("input", input, {"name", "data_type", "dims", "optional"})

    def add_output(self, output):
        self._add("output", output, {"name", "data_type", "dims"})

    def set_model_transaction_policy(self, transaction_policy_dict):
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError("unknown model_transaction_policy key '%s'" % key)
        self._model_config.setdefault("model_transaction_policy", {}).update(transaction_policy_dict)


# --- glue used by rustpy's execution engine -------------------------------------------
def _make_request(native, request_id, correlation_id, flags, timeout, parameters, requested, inputs):
    tensors = [Tensor(name, array) for name, array in inputs]
    return InferenceRequest(
        request_id=request_id, correlation_id=correlation_id, inputs=tensors,
        requested_output_names=requested, flags=flags, timeout=timeout,
        parameters=parameters, _native=native)


class _Loop:
    """One asyncio loop per model instance, on its own thread, for async execute."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="rustpy-asyncio")
        self.thread.start()

    def run(self, coro, wait):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result() if wait else future

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def _process_returned(model_name, decoupled, requests, returned):
    """Checks execute()'s return value; returns the responses to send, or raises."""
    if returned is None:
        return None
    if decoupled:
        raise TritonModelException(
            "Python model '%s' is using the decoupled mode and the execute function must return None."
            % model_name)
    if not isinstance(returned, list):
        raise TritonModelException(
            "Expected a list in the execute return, found type '%s'." % type(returned))
    if len(returned) != len(requests):
        raise TritonModelException(
            "Number of InferenceResponse objects do not match the number of InferenceRequest objects. "
            "InferenceRequest(s) size is:%d, and InferenceResponse(s) size is:%d"
            % (len(requests), len(returned)))
    for response in returned:
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException(
                "Expected an 'InferenceResponse' object in the execute function return list, found type '%s'."
                % type(response))
    return returned


def _send_returned(requests, responses):
    for request, response in zip(requests, responses):
        if response is not None:
            _send(request._native, response, TRITONSERVER_RESPONSE_COMPLETE_FINAL)
