"""rustpy's Python-side glue, embedded in the backend and the CLI.

Everything here runs inside the one interpreter that all models of a server
share, so it keeps each model's modules apart (see load_module).
"""

import builtins
import gc
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
import threading

# Loading touches process-wide state (sys.path, sys.modules); serialise it.
_load_lock = threading.RLock()
_default_import = builtins.__import__
_serial = 0


class ModelContext:
    """What `Model.initialize(ctx)` receives."""

    __slots__ = (
        "model_name",
        "model_version",
        "instance_name",
        "instance_kind",
        "device_id",
        "model_dir",
        "config",
        "parameters",
    )

    def __init__(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __repr__(self):
        return "ModelContext(model_name=%r, model_version=%r, instance_name=%r)" % (
            self.model_name,
            self.model_version,
            self.instance_name,
        )


class RequestInfo:
    """One request of a batch, as `Model.predict(inputs, requests)` sees it.

    `cancelled` turns True when the client cancels the request (a streaming
    predict sees it between yields; rustpy sends nothing more to it).
    `finish()` in a streaming predict makes the next response this request's
    last (or ends its stream at the next yield if that yield has nothing
    for it); the other requests go on.
    """

    __slots__ = (
        "id",
        "correlation_id",
        "flags",
        "parameters",
        "batch_size",
        "requested_outputs",
        "cancelled",
        "_finished",
    )

    def __init__(self, id, correlation_id, flags, parameters, batch_size, requested_outputs):
        self.id = id
        self.correlation_id = correlation_id
        self.flags = flags
        self.parameters = parameters
        self.batch_size = batch_size
        self.requested_outputs = requested_outputs
        self.cancelled = False
        self._finished = False

    def finish(self):
        self._finished = True

    @property
    def finished(self):
        return self._finished

    def __repr__(self):
        return "RequestInfo(id=%r, batch_size=%r, parameters=%r)" % (
            self.id,
            self.batch_size,
            self.parameters,
        )


class _ModelPaths:
    """Puts a model's directories first on sys.path for the duration of a block."""

    def __init__(self, paths):
        self.paths = [p for p in paths if p]

    def __enter__(self):
        _load_lock.acquire()
        sys.path[:0] = self.paths
        importlib.invalidate_caches()

    def __exit__(self, *exc):
        for p in self.paths:
            try:
                sys.path.remove(p)
            except ValueError:
                pass
        _load_lock.release()
        return False


def _is_inside(path, directory):
    try:
        return os.path.commonpath([os.path.abspath(path), directory]) == directory
    except ValueError:
        return False


def _take_private_modules(before, model_dir):
    """Removes from sys.modules every module newly imported from model_dir.

    Two models that both ship `utils.py` must each get their own, and a reload
    must read the files again, so a model's sibling modules never stay in the
    shared sys.modules. The model's code keeps its references to them.
    """
    private = {}
    for name in list(sys.modules.keys() - before):
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None)
        if origin:
            mine = _is_inside(origin, model_dir)
        else:
            # A namespace package (a directory without __init__.py) has no
            # __file__; it is the model's if all of its directories are. Left
            # shared, it would keep the model's submodules as attributes, so a
            # reload would get the old ones back, and another model's regular
            # package of the same name would never run.
            paths = list(getattr(module, "__path__", None) or ())
            mine = bool(paths) and all(_is_inside(p, model_dir) for p in paths)
        if mine:
            private[name] = sys.modules.pop(name)
    return private


class _ModelImporter:
    """The `__import__` of one model's code.

    A model's sibling modules live in its own `private` dict, never in the
    shared sys.modules, so its code cannot find them through the normal
    import system once loading is over. Every function defined in model.py
    gets this importer as its `__import__` (through the module's own
    `__builtins__`), so an `import utils` run lazily inside execute/predict
    resolves from the model's directories and private modules, as it would
    with the official backend (which puts those directories on sys.path).
    """

    def __init__(self, dirs, model_dir):
        self.dirs = dirs
        self.model_dir = model_dir
        self.private = {}

    def __call__(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name:
            top = name.partition(".")[0]
            if top in self.private or (top not in sys.modules and self._is_sibling(top)):
                return self._import_private(name, fromlist)
        return _default_import(name, globals, locals, fromlist, level)

    def _is_sibling(self, top):
        try:
            return importlib.machinery.PathFinder.find_spec(top, self.dirs) is not None
        except (ImportError, ValueError):
            return False

    def _import_private(self, name, fromlist):
        with _ModelPaths(self.dirs):
            before = set(sys.modules)
            sys.modules.update(self.private)
            try:
                return _default_import(name, None, None, fromlist, 0)
            finally:
                self.private.update(_take_private_modules(before, self.model_dir))
                for key in self.private:
                    sys.modules.pop(key, None)


def _builtins_with(importer):
    namespace = dict(vars(builtins))
    namespace["__import__"] = importer
    return namespace


def load_module(model_name, version, model_dir, model_file):
    """Imports model_file under a name unique to this model, version and load."""
    global _serial
    model_dir = os.path.abspath(model_dir)
    dirs = [os.path.dirname(os.path.abspath(model_file)), model_dir]
    with _ModelPaths(dirs):
        _serial += 1
        safe = re.sub(r"\W", "_", model_name)
        unique = "_rustpy_model_%s_v%d_%d" % (safe, version, _serial)
        before = set(sys.modules)
        spec = importlib.util.spec_from_file_location(unique, model_file)
        if spec is None or spec.loader is None:
            raise ImportError("cannot load %s" % model_file)
        module = importlib.util.module_from_spec(spec)
        importer = _ModelImporter(dirs, model_dir)
        module.__dict__["__builtins__"] = _builtins_with(importer)
        sys.modules[unique] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(unique, None)
            _take_private_modules(before, model_dir)
            for key in importer.private:
                sys.modules.pop(key, None)
            raise
        importer.private.update(_take_private_modules(before, model_dir))
        sys.modules.pop(unique, None)
        return unique, module, importer.private


def find_model_class(module, model_file):
    """Returns (class, api) where api is "batched" or "pb_utils"."""
    cls = getattr(module, "Model", None)
    if isinstance(cls, type) and callable(getattr(cls, "predict", None)):
        return cls, "batched"
    cls = getattr(module, "TritonPythonModel", None)
    if isinstance(cls, type) and callable(getattr(cls, "execute", None)):
        return cls, "pb_utils"
    raise AttributeError(
        "%s defines neither `class Model` with a `predict` method (rustpy's batched API) "
        "nor `class TritonPythonModel` with an `execute` method (the Python backend API)"
        % model_file
    )


def _accepts_requests(fn):
    """Whether predict takes the optional `requests` argument."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def create_instance(cls, ctx, paths, entry):
    """Instantiates the user's class and runs its initialize(ctx).

    `entry` is the method rustpy calls per batch: "predict" (batched API) or
    "execute" (official Python backend API).
    """
    with _ModelPaths(paths):
        obj = cls()
        init = getattr(obj, "initialize", None)
        if callable(init):
            init(ctx)
    predict = getattr(obj, entry)
    return (
        obj,
        predict,
        _accepts_requests(predict),
        bool(getattr(obj, "split_by_parameters", False)),
        inspect.isgeneratorfunction(predict) or inspect.isasyncgenfunction(predict),
    )


def finalize_instance(obj):
    fin = getattr(obj, "finalize", None)
    if callable(fin):
        fin()


def unload_module(unique, private):
    sys.modules.pop(unique, None)
    private.clear()
    gc.collect()


def auto_complete(cls, config_json):
    """Runs TritonPythonModel.auto_complete_config; returns the new JSON or None."""
    fn = getattr(cls, "auto_complete_config", None)
    if not callable(fn):
        return None
    import json
    import triton_python_backend_utils as pb_utils

    result = fn(pb_utils.ModelConfig(config_json))
    if not isinstance(result, pb_utils.ModelConfig):
        raise TypeError(
            "auto_complete_config must return its pb_utils.ModelConfig argument, got %s"
            % type(result).__name__
        )
    return json.dumps(result.as_dict())


_loops = {}


def run_coroutine(key, coro, wait):
    """Runs an `async def execute` on the instance's own event loop thread."""
    import triton_python_backend_utils as pb_utils

    loop = _loops.get(key)
    if loop is None:
        loop = _loops[key] = pb_utils._Loop()
    return loop.run(coro, wait)


def close_loop(key):
    loop = _loops.pop(key, None)
    if loop is not None:
        loop.close()


def is_coroutine(obj):
    import asyncio

    return asyncio.iscoroutine(obj)


def is_iterator(obj):
    return hasattr(obj, "__next__") and not isinstance(obj, dict)


def format_exception(exc, tb=None):
    """`Type: message` plus the last traceback lines; SyntaxError as file:line:col."""
    import traceback

    if getattr(exc, "_rustpy_bare_message", False):
        # pb_utils' checks of what execute returned: just the message, as the
        # official backend reports them.
        return str(exc)
    name = type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.filename:
        where = "%s:%s:%s" % (exc.filename, exc.lineno, exc.offset)
        text = (exc.text or "").rstrip()
        return "%s: %s: %s%s" % (where, name, exc.msg, ("\n    " + text.strip()) if text else "")
    head = "%s: %s" % (name, exc)
    frames = traceback.extract_tb(tb if tb is not None else exc.__traceback__)
    # Frames of rustpy's own glue say nothing useful to the user.
    frames = [f for f in frames if f.filename != __file__]
    tail = traceback.format_list(frames[-4:])
    if not tail:
        return head
    return head + "\nTraceback (most recent call last):\n" + "".join(tail).rstrip()
