"""rustpy's implementation of `triton_python_backend_utils` (pb_utils).

Models written for Triton's official Python backend import this module by
that name; rustpy registers it in sys.modules before any model is loaded, so
they run unchanged in-process. Tensors are plain numpy arrays here: there is
no shared memory to copy through.
"""

import asyncio
import enum
import json
import os
import sys
import struct
import threading

import numpy as np

import _rustpy_native as _native

# --- constants (values are Triton's; the ones rustpy's Rust side also reads
# come from _rustpy_native, defined once in constants.rs) ------------------
TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = _native.RESPONSE_COMPLETE_FINAL
TRITONSERVER_REQUEST_RELEASE_ALL = _native.REQUEST_RELEASE_ALL
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = _native.REQUEST_RELEASE_RESCHEDULE
# These two are the official stub's PreferredMemory.MemoryType values (kGPU,
# kCPU), not TRITONSERVER_MemoryType's.
TRITONSERVER_MEMORY_GPU = 0
TRITONSERVER_MEMORY_CPU = 1

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
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def triton_to_numpy_type(data_type):
    return _CODE_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type):
    """The official helper's comparisons, kept as they are: numpy scalar types
    and dtypes map to their code, Python's bool/int/float/bytes and sized
    bytes dtypes ("S3") give None."""
    for code, np_type in _CODE_TO_NUMPY.items():
        if code != 13 and data_type == np_type:
            return code
    if data_type == np.object_ or data_type == np.bytes_:
        return 13
    return None


def _dtype_code_of(dtype):
    """A Tensor's data type code for a numpy dtype, as the official stub picks
    it (object and any bytes dtype are BYTES); None if unsupported."""
    if dtype == np.object_ or dtype == np.bytes_ or dtype.type == np.bytes_:
        return 13
    for code, np_type in _CODE_TO_NUMPY.items():
        if code != 13 and dtype == np_type:
            return code
    return None


def triton_string_to_numpy(triton_type_string):
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor):
    """Encodes a bytes/object array as Triton's length-prefixed BYTES (C order).

    As upstream: elements of an object array that are exactly `bytes` go in
    raw, anything else as str(element) in UTF-8 (so a numpy.bytes_ element of
    an object array becomes "b'...'"); an "S" array's elements go in raw.
    Returns () for an empty array and None for a non-bytes dtype."""
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype == np.object_:
        parts = []
        for item in input_tensor.ravel(order="C"):
            data = item if type(item) == bytes else str(item).encode("utf-8")  # noqa: E721
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    if input_tensor.dtype.type == np.bytes_:
        parts = []
        for item in input_tensor.ravel(order="C"):
            data = bytes(item)
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    return None


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


# As upstream, BLS is refused while a model's initialize or finalize runs (model
# control and the other helpers stay allowed). rustpy marks the thread that runs
# them; BLS from threads that execute starts, or that outlive it, is allowed.
_BLS_PHASE_MESSAGE = "BLS is only supported during the 'execute' function."
_phase = threading.local()


def _set_phase(name):
    """rustpy: "initialize" / "finalize" while this thread runs them, else None."""
    _phase.name = name


def _bls_phase():
    return getattr(_phase, "name", None)


def _check_bls_phase():
    if _bls_phase():
        raise TritonModelException(_BLS_PHASE_MESSAGE)


class TritonModelException(Exception):
    pass


# --- tensors -------------------------------------------------------------------
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST = 1, 2, 3


class _Capsule:
    """Lets numpy consume a bare DLPack capsule (numpy only takes objects with
    __dlpack__/__dlpack_device__); the device is read from the DLTensor."""

    def __init__(self, capsule):
        import ctypes

        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype = ctypes.c_void_p
        get.argtypes = [ctypes.py_object, ctypes.c_char_p]
        ptr = get(capsule, b"dltensor")  # raises ValueError if already used
        # DLManagedTensor starts with DLTensor {void* data; DLDevice device;...}
        device = (ctypes.c_int32 * 2).from_address(ptr + ctypes.sizeof(ctypes.c_void_p))
        self._device = (int(device[0]), int(device[1]))
        self._capsule = capsule

    def __dlpack__(self, stream=None, **_kwargs):
        return self._capsule

    def __dlpack_device__(self):
        return self._device


class Tensor:
    """A named tensor backed by a numpy array (always on the CPU)."""

    __slots__ = ("_name", "_array", "_dtype_code")

    def __init__(self, name, array, _dtype_code=None):
        if not isinstance(name, str):
            raise TypeError("Tensor(): the name must be a str, got %s" % type(name).__name__)
        if not isinstance(array, np.ndarray):
            # The official constructor only takes a numpy.ndarray (a pybind11
            # overload mismatch, hence TypeError).
            raise TypeError(
                "Tensor(): incompatible constructor arguments; expected (str, numpy.ndarray), got (%s, %s)"
                % (type(name).__name__, type(array).__name__))
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        code = _dtype_code if _dtype_code is not None else _dtype_code_of(array.dtype)
        if code is None:
            raise TritonModelException("NumPy dtype is not supported.")
        if not array.flags["C_CONTIGUOUS"]:
            array = np.ascontiguousarray(array)
        self._name = name
        self._array = array
        self._dtype_code = code

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array

    def triton_dtype(self):
        # The official Tensor.triton_dtype() raises TypeError in 2.51 (its
        # return type has no Python conversion); rustpy returns the code.
        return self._dtype_code

    def shape(self):
        return list(self._array.shape)

    def is_cpu(self):
        return True

    def to_dlpack(self):
        if self._dtype_code == 13:
            raise TritonModelException("DLPack does not have support for string tensors.")
        return self._array.__dlpack__()

    def __dlpack__(self, stream=None):
        return self.to_dlpack()

    def __dlpack_device__(self):
        return (_DL_CPU, 0)

    @staticmethod
    def from_dlpack(name, dlpack_object):
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        if type(dlpack_object).__name__ == "PyCapsule":
            dlpack_object = _Capsule(dlpack_object)
        elif not (hasattr(dlpack_object, "__dlpack__") and hasattr(dlpack_object, "__dlpack_device__")):
            raise TritonModelException(
                # (sic: the official message has a C++ line continuation in it)
                "Provided tensor is not supported. Tensor must be a DLPack capsule "
                "        or have `__dlpack__` and `__dlpack_device__` attributes")
        device = tuple(int(v) for v in dlpack_object.__dlpack_device__())
        if device[0] == _DL_CUDA:
            raise TritonModelException(
                "DLPack capsule passed pointer to memory allocated on GPU device, "
                "          when GPU is not available")
        if device[0] not in (_DL_CPU, _DL_CUDA_HOST):
            raise TritonModelException(
                "DLDevice type %d is not support by Python backend." % device[0])
        array = np.from_dlpack(dlpack_object)
        if not array.flags["C_CONTIGUOUS"]:
            raise TritonModelException(
                "DLPack tensor is not contiguous. Only contiguous DLPack "
                "tensors that are stored in C-Order are supported.")
        return Tensor(name, array)

    def __repr__(self):
        return "Tensor(name=%r, shape=%r, dtype=%s)" % (self._name, self.shape(), self._array.dtype)



# --- argument checks of the official constructors --------------------------------
_OMITTED = object()  # an argument left out (allowed) as opposed to an explicit None (TypeError)


def _is_integer(value):
    return hasattr(type(value), "__index__") and not isinstance(value, bool)


def _list_argument(owner, name, value, element_type, element_error=TypeError):
    """A list argument as the official (pybind11) constructor takes it: left
    out means empty, None or a non-list is a TypeError, an element of the
    wrong type is `element_error`."""
    if value is _OMITTED:
        return []
    if not isinstance(value, (list, tuple)):
        raise TypeError("%s(): %s must be a list, got %s" % (owner, name, type(value).__name__))
    for item in value:
        if not isinstance(item, element_type):
            raise element_error("%s(): every element of %s must be a %s, got %s"
                                % (owner, name, element_type.__name__, type(item).__name__))
    return list(value)


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _check_parameter_items(parameters, int64=False):
    """Upstream's rule on a parameters dict: str keys, bool/int/str values;
    with `int64`, ints that fit Triton's 64-bit parameters (upstream would
    fail later, when sending)."""
    for key, value in parameters.items():
        if not isinstance(key, str):
            raise TritonModelException(
                "Expect parameters keys to have type str, found type %s" % type(key))
        if not isinstance(value, (bool, int, str)):
            raise TritonModelException(
                "Expect parameters values to have type bool/int/str, found type %s" % type(value))
        if int64 and isinstance(value, int) and not isinstance(value, bool) \
                and not _INT64[0] <= value <= _INT64[1]:
            raise TritonModelException(
                "Expect parameters int values to fit in 64 bits, got %d for '%s'" % (value, key))


def _parameters_json(parameters):
    """Request or response parameters as upstream takes them (r25.02): None
    or a dict of str keys to bool/int/str values; the JSON text that
    `parameters()` returns. Anything else is a TritonModelException with
    upstream's message."""
    if parameters is None:
        return "{}"
    if not isinstance(parameters, dict):
        raise TritonModelException("Expect dict, got %s" % type(parameters))
    _check_parameter_items(parameters, int64=True)
    return json.dumps(parameters)


# --- responses -------------------------------------------------------------------
class InferenceResponse:
    def __init__(self, output_tensors=_OMITTED, error=None, parameters=None):
        output_tensors = _list_argument("InferenceResponse", "output_tensors", output_tensors, Tensor,
                                        element_error=TritonModelException)
        if error is not None and not isinstance(error, TritonError):
            raise TypeError("InferenceResponse error must be a TritonError")
        self._parameters = _parameters_json(parameters)
        # The typed pairs that go to Triton with the response (the JSON text
        # is what parameters() returns).
        self._parameter_items = list(parameters.items()) if parameters else []
        self._outputs = output_tensors
        self._error = error

    def output_tensors(self):
        return self._outputs

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error

    def parameters(self):
        return self._parameters


class _BackendError(TritonModelException):
    """What the official backend reports from its C++ side (checks of what
    execute returned or sent): rustpy shows these without the exception's
    type name and traceback, as upstream does."""

    _rustpy_bare_message = True


class InferenceResponseSender:
    """Sends the responses of one request; usable from any thread.

    Keeps the official sender's rules: flags are 0 or FINAL, a response is
    required unless the flags are FINAL, a default (non-decoupled) model sends
    exactly one response (optionally followed by a bare FINAL), and nothing
    goes out after FINAL. Responses returned by execute() count as sent
    through this sender. The native sender checks the rules and whether the
    request is still open together with the send, under one lock."""

    def __init__(self, native):
        self._native = native

    def send(self, response=None, flags=0):
        if response is not None and not isinstance(response, InferenceResponse):
            raise TypeError(
                "send(): incompatible function arguments; expected an InferenceResponse, got %s"
                % type(response).__name__)
        if flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL and flags != 0:
            raise TritonModelException("Unable to send response. Unsupported flag provided.")
        if flags == 0 and response is None:
            raise TritonModelException(
                "Inference Response object must be provided when the response flags is set to zero.")
        try:
            _send(self._native.send, response, flags)
        except RuntimeError as e:
            raise TritonModelException(str(e)) from None

    def is_cancelled(self):
        return self._native.is_cancelled()


def _send(send, response, *flags):
    """Calls a native send (`send` or `send_returned`) with the response's
    outputs as (name, array, Triton type) and its parameters, or its error
    as (code, message)."""
    if response is None:
        send(None, None, *flags)
    elif response.has_error():
        err = response.error()
        send(None, (int(err.code()), err.message()), *flags)
    else:
        outputs = [(t.name(), t.as_numpy(), t.triton_dtype()) for t in response.output_tensors()]
        items = getattr(response, "_parameter_items", None)
        if items:
            send(outputs, None, *flags, parameters=items)
        else:
            send(outputs, None, *flags)


# --- requests ------------------------------------------------------------------------
class PreferredMemory:
    def __init__(self, preferred_memory_type, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceRequest:
    """A request received by execute(), or (built by user code) a BLS request."""

    def __init__(self, request_id="", correlation_id=0, inputs=_OMITTED, requested_output_names=_OMITTED,
                 model_name=None, model_version=-1, flags=0, timeout=0, preferred_memory=None,
                 trace=None, parameters=None, _native=None):
        if _native is None:
            # A BLS request built by user code: the official constructor's
            # argument types (pybind11 raises TypeError for a wrong type, the
            # C++ side TritonModelException for a None tensor).
            inputs = _list_argument("InferenceRequest", "inputs", inputs, Tensor,
                                    element_error=TritonModelException)
            requested_output_names = _list_argument(
                "InferenceRequest", "requested_output_names", requested_output_names, str)
            for name, value in (("request_id", request_id), ("model_name", model_name)):
                if not isinstance(value, (str, bytes)):
                    raise TypeError("InferenceRequest(): %s must be a str, got %s"
                                    % (name, type(value).__name__))
            for name, value in (("model_version", model_version), ("flags", flags), ("timeout", timeout)):
                if not _is_integer(value):
                    raise TypeError("InferenceRequest(): %s must be an int, got %s"
                                    % (name, type(value).__name__))
            if correlation_id is None:
                raise TypeError("InferenceRequest(): correlation_id must be int or str, got None")
        if not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        if isinstance(parameters, dict):
            _check_parameter_items(parameters)
            parameters = json.dumps(parameters)
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._inputs = list(inputs) if inputs is not _OMITTED and inputs is not None else []
        self._requested = (list(requested_output_names)
                           if requested_output_names is not _OMITTED and requested_output_names is not None
                           else [])
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
        # A new set per call, as upstream (a std::set converted by pybind11).
        return set(self._requested)

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
        _check_bls_phase()
        if not self._model_name:
            raise TritonModelException("BLS request needs a model_name")
        params = json.loads(self._parameters) if isinstance(self._parameters, str) else {}
        inputs = [(t.name(), t.as_numpy(), t.triton_dtype()) for t in self._inputs]
        try:
            if not decoupled and _native.is_model_decoupled(self._model_name, int(self._model_version)):
                raise RuntimeError(
                    "Model %s is using the decoupled. The current BLS request call doesn't support "
                    "models using the decoupled transaction policy. Please use 'decoupled=True' "
                    "argument to the 'exec' or 'async_exec' calls for decoupled models.'"
                    % self._model_name)
            stream = _native.bls_infer(
                self._model_name, int(self._model_version), self._request_id, self._correlation_id,
                int(self._flags), int(self._timeout), params, inputs, list(self._requested))
        except RuntimeError as e:
            # As upstream: a request that cannot start is answered with an
            # error response ("Model <name> - Error when running inference: ...").
            response = InferenceResponse(error=TritonError(
                "Model %s - Error when running inference: %s" % (self._model_name, self._bls_error(e))))
            return _FailedStart(response) if decoupled else response
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

    def _bls_error(self, error):
        try:
            ready = _native.is_model_ready(self._model_name, int(self._model_version))
        except Exception:  # noqa: BLE001 - the original error says more
            ready = True
        if not ready:
            return "Failed for execute the inference request. Model '%s' is not ready." % self._model_name
        return str(error)

    def async_exec(self, decoupled=False):
        """Like exec(), as an awaitable (runs in the loop's default executor).
        With decoupled=True it resolves once the first response is there (as
        upstream), so iterating it does not block the event loop on the
        model's first answer."""
        loop = asyncio.get_running_loop()
        if _bls_phase():
            # Decided here: the executor thread does not run initialize/finalize.
            failed = loop.create_future()
            failed.set_exception(TritonModelException(_BLS_PHASE_MESSAGE))
            return failed
        if decoupled:
            return loop.run_in_executor(None, self._exec_first_response)
        return loop.run_in_executor(None, self.exec, False)

    def _exec_first_response(self):
        responses = self.exec(decoupled=True)
        if isinstance(responses, ResponseIterator):
            responses._prefetch()
        return responses


def _response_from_native(item):
    """A BLS response: the callee's outputs, error and response parameters
    (as the JSON text `parameters()` returns, r25.02)."""
    outputs, error, params, _final = item
    tensors = [Tensor(name, array, code) for name, array, code in outputs]
    # The callee's error code is kept, as upstream does since r25.04 (2.51
    # reported every BLS error as INTERNAL); e.g. CANCELLED after cancel().
    err = TritonError(error[1], error[0]) if error is not None else None
    response = InferenceResponse(tensors, err)
    if params:
        response._parameters = json.dumps(params)
        response._parameter_items = list(params.items())
    return response


class ResponseIterator:
    """The responses of a decoupled BLS request; the last one may be empty."""

    def __init__(self, stream):
        self._stream = stream
        self._done = False
        self._first = None
        self._prefetched = False

    def _prefetch(self):
        if not self._prefetched and not self._done:
            self._first = self._stream.next_response()
            self._prefetched = True

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        if self._prefetched:
            item, self._first, self._prefetched = self._first, None, False
        else:
            item = self._stream.next_response()
        if item is None:
            self._done = True
            raise StopIteration
        if item[3]:
            self._done = True
        return _response_from_native(item)

    def cancel(self):
        """Cancels the BLS request (r25.04): the callee sees is_cancelled()
        and the stream ends, usually with a CANCELLED error response. Once
        the request completed this does nothing."""
        if self._stream is None:
            return
        try:
            self._stream.cancel()
        except RuntimeError as e:
            raise TritonModelException(str(e)) from None


class _FailedStart(ResponseIterator):
    """The one error response of a decoupled BLS request that could not start."""

    def __init__(self, response):
        super().__init__(None)
        self._response = response

    def __next__(self):
        if self._done:
            raise StopIteration
        self._done = True
        return self._response


# --- logging -------------------------------------------------------------------------
def _log(level, message):
    # The official Logger's argument types: a str message and a
    # Logger.LogLevel (a plain int is a TypeError there too).
    if not isinstance(message, str):
        raise TypeError("Logger: the message must be a str, got %s" % type(message).__name__)
    if not isinstance(level, _LogLevel):
        raise TypeError("Logger.log(): level must be a pb_utils.Logger.LogLevel (e.g. Logger.INFO), got %s"
                        % type(level).__name__)
    # Name the user's call site (two frames up: Logger.* then the caller),
    # as the official backend's log lines do.
    frame = sys._getframe(2)
    _native.log(int(level), str(message), os.path.basename(frame.f_code.co_filename), frame.f_lineno)


_LogLevel = enum.IntEnum("LogLevel", {"INFO": _native.LOG_INFO, "WARNING": _native.LOG_WARN,
                                      "ERROR": _native.LOG_ERROR, "VERBOSE": _native.LOG_VERBOSE})


class Logger:
    LogLevel = _LogLevel
    INFO = _LogLevel.INFO
    WARNING = _LogLevel.WARNING
    ERROR = _LogLevel.ERROR
    VERBOSE = _LogLevel.VERBOSE

    @staticmethod
    def log(message, level=_LogLevel.INFO):
        _log(level, message)

    @staticmethod
    def log_info(message):
        _log(Logger.INFO, message)

    @staticmethod
    def log_warn(message):
        _log(Logger.WARNING, message)

    @staticmethod
    def log_error(message):
        _log(Logger.ERROR, message)

    @staticmethod
    def log_verbose(message):
        _log(Logger.VERBOSE, message)


# --- metrics (exported on Triton's metrics endpoint) -----------------------------
def _stub_error(prefix, error):
    """An error from Triton reached through the official stub's IPC (model
    control, metrics): "<prefix>: Failed to process the request for model
    '<model>', message: <Triton's message>"."""
    return TritonModelException(
        "%s: Failed to process the request for model '%s', message: %s"
        % (prefix, sys.modules["_rustpy_runtime"].current_instance(), error))


class Metric:
    def __init__(self, native, family_alive=None):
        self._native = native
        # Shared with the family: emptied when the MetricFamily object is
        # deleted, after which upstream refuses every operation.
        self._family_alive = family_alive if family_alive is not None else [True]

    def _call(self, prefix, op, *args):
        if not self._family_alive:
            raise TritonModelException(
                "%s: Invalid metric operation as the corresponding 'MetricFamily' has been deleted. "
                "The 'MetricFamily' object should be deleted AFTER its corresponding 'Metric' "
                "objects have been deleted." % prefix)
        try:
            return op(*args)
        except RuntimeError as e:
            raise _stub_error(prefix, e) from None

    def increment(self, value):
        self._call("Failed to increment metric value", self._native.increment, float(value))

    def set(self, value):
        self._call("Failed to set metric value", self._native.set, float(value))

    def observe(self, value):
        self._call("Failed to observe metric value", self._native.observe, float(value))

    def value(self):
        return self._call("Failed to get metric value", self._native.value)


class MetricFamily:
    COUNTER = _native.METRIC_COUNTER
    GAUGE = _native.METRIC_GAUGE
    HISTOGRAM = _native.METRIC_HISTOGRAM

    def __init__(self, name, description, kind):
        if kind not in (MetricFamily.COUNTER, MetricFamily.GAUGE, MetricFamily.HISTOGRAM):
            raise TritonModelException("Unknown metric kind")
        self.name = name
        self.description = description
        self.kind = kind
        # As upstream, a family keeps its metrics (and so their samples on the
        # metrics endpoint) alive, whether or not the model keeps a reference.
        self._metrics = []
        self._alive = [True]
        try:
            self._native = _native.NativeMetricFamily(name, description, int(kind))
        except RuntimeError as e:
            raise _stub_error("Error when creating MetricFamily", e) from None

    def Metric(self, labels=None, buckets=None):
        if labels is not None and not isinstance(labels, dict):
            raise TritonModelException("Failed to create metric. Labels must be a dictionary.")
        if buckets is not None:
            if not isinstance(buckets, list):
                raise TritonModelException("Failed to create metric. Buckets must be a list.")
            if self.kind != MetricFamily.HISTOGRAM:
                raise TritonModelException("Failed to create metric. Unexpected buckets found.")
        elif self.kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("Failed to create metric. Missing required buckets.")
        pairs = [(str(k), str(v)) for k, v in (labels or {}).items()]
        try:
            native = self._native.metric(pairs, [float(b) for b in buckets] if buckets is not None else None)
        except RuntimeError as e:
            raise _stub_error("Error when creating Metric", e) from None
        self._metrics.append(native)
        return Metric(native, self._alive)

    def __del__(self):
        alive = getattr(self, "_alive", None)
        if alive:
            alive.clear()


# --- model control (explicit model-control mode) ---------------------------------
def load_model(model_name, config="", files=None):
    file_items = []
    if files is not None:
        if not isinstance(files, dict):
            raise TritonModelException(
                "failed to load model '%s', files should be a dictionary of file paths and file contents"
                % model_name)
        file_items = [(str(path), bytes(content)) for path, content in files.items()]
    try:
        _native.load_model(model_name, config or "", file_items)
    except RuntimeError as e:
        raise _stub_error("Failed to load model", e) from None


def unload_model(model_name, unload_dependents=False):
    try:
        _native.unload_model(model_name, bool(unload_dependents))
    except RuntimeError as e:
        raise _stub_error("Failed to unload model", e) from None


def _model_version(version_string):
    version = -1
    if version_string != "":
        try:
            version = int(version_string)
        except (TypeError, ValueError) as e:
            raise TritonModelException(
                "failed to get model version from specified version string '%s' (details: %s), "
                "version should be an integral value > 0" % (version_string, e)) from None
        if version < 0:
            raise TritonModelException(
                "failed to get model version from specified version string '%s', "
                "version should be an integral value > 0" % version_string)
    return version


def is_model_ready(model_name, model_version=""):
    version = _model_version(str(model_version))
    try:
        return _native.is_model_ready(model_name, version)
    except RuntimeError as e:
        raise _stub_error("Failed to check model readiness", e) from None


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
    if "model_transaction_policy" in model_config:
        return model_config["model_transaction_policy"]["decoupled"]
    return False


def _calling_model():
    """(name, model.py's directory) of the model whose code is running on
    this thread (found from the call stack, so right for every model, thread
    and entry point, auto_complete_config included)."""
    return sys.modules["_rustpy_runtime"].current_model()


def get_model_dir():
    """The directory the calling model's model.py was loaded from (the
    version directory, as upstream)."""
    return _calling_model()[1]


class ModelConfig:
    """The helper auto_complete_config(config) receives and returns (the
    official helper's rules and messages)."""

    def __init__(self, model_config):
        if isinstance(model_config, str):
            model_config = json.loads(model_config)
        self._model_config = model_config

    def as_dict(self):
        return self._model_config

    def _name(self):
        return str(self._model_config.get("name", ""))

    def set_max_batch_size(self, max_batch_size):
        current = self._model_config.get("max_batch_size", 0)
        if current > max_batch_size:
            raise ValueError(
                "configuration specified max_batch_size " + str(current)
                + ", but in auto-complete-config function for model '" + self._name()
                + "' specified max_batch_size " + str(max_batch_size))
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self):
        found = None
        if "sequence_batching" in self._model_config:
            found = "sequence_batching"
        elif "ensemble_scheduling" in self._model_config:
            found = "ensemble_scheduling"
        if found is not None:
            raise ValueError(
                "Configuration specified scheduling_choice as '" + found
                + "', but auto-complete-config function for model '" + self._name()
                + "' tries to set scheduling_choice as 'dynamic_batching'")
        if "dynamic_batching" not in self._model_config:
            self._model_config["dynamic_batching"] = {}

    def _check_tensor(self, kind, tensor, valid, valid_text):
        for key in tensor:
            if key not in valid:
                raise ValueError(
                    kind + " '" + tensor["name"] + "' in auto-complete-config function for model '"
                    + self._name() + "' contains property other than " + valid_text + ".")
        if "name" not in tensor:
            raise ValueError(
                kind + " in auto-complete-config function for model '" + self._name()
                + "' is missing 'name' property.")
        for key in ("data_type", "dims"):
            if key not in tensor:
                raise ValueError(
                    kind + " '" + tensor["name"] + "' in auto-complete-config function for model '"
                    + self._name() + "' is missing '" + key + "' property.")

    def _merge(self, section, tensor):
        name = self._name()
        for current in self._model_config.setdefault(section, []):
            if tensor["name"] != current["name"]:
                continue
            if current["data_type"] != "TYPE_INVALID" and current["data_type"] != tensor["data_type"]:
                raise ValueError(
                    "unable to load model '" + name + "', configuration expects datatype "
                    + current["data_type"] + " for " + section + " '" + tensor["name"]
                    + "', model provides " + tensor["data_type"])
            if current["dims"] and current["dims"] != tensor["dims"]:
                raise ValueError(
                    "model '" + name + "', tensor '" + tensor["name"] + "': the model expects dims "
                    + str(tensor["dims"]) + " but the model configuration specifies dims "
                    + str(current["dims"]))
            if section == "input" and "optional" in current and "optional" in tensor \
                    and current["optional"] != tensor["optional"]:
                raise ValueError(
                    "model '" + name + "', tensor '" + tensor["name"] + "': the model expects optional "
                    + str(tensor["optional"]) + " but the model configuration specifies optional "
                    + str(current["optional"]))
            current["data_type"] = tensor["data_type"]
            current["dims"] = tensor["dims"]
            if section == "input" and "optional" in tensor:
                current["optional"] = tensor["optional"]
            return
        self._model_config[section].append(tensor)

    def add_input(self, input):
        self._check_tensor("input", input, ("name", "data_type", "dims", "optional"),
                           "'name', 'data_type', 'dims' and 'optional'")
        self._merge("input", input)

    def add_output(self, output):
        self._check_tensor("output", output, ("name", "data_type", "dims"),
                           "'name', 'data_type' and 'dims'")
        self._merge("output", output)

    def set_model_transaction_policy(self, transaction_policy_dict):
        for key in transaction_policy_dict.keys():
            if key != "decoupled":
                raise ValueError(
                    "model transaction property in auto-complete-config function for model '"
                    + self._name() + "' contains property other than 'decoupled'.")
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            if "decoupled" in policy and policy["decoupled"] != transaction_policy_dict["decoupled"]:
                raise ValueError(
                    "trying to change decoupled property in auto-complete-config for model '"
                    + self._name() + "', which is already set to '" + str(policy["decoupled"]) + "'.")
            policy["decoupled"] = transaction_policy_dict["decoupled"]
