"""rustpy's Python-side glue, embedded in the backend and the CLI.

Everything here runs inside the one interpreter that all models of a server
share, so it keeps each model's modules apart (see load_module).
"""

import asyncio
import builtins
import gc
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import itertools
import os
import re
import sys
import tempfile
import threading
import traceback
import types

import _rustpy_native as _native

_default_import = getattr(builtins.__import__, "_rustpy_default", builtins.__import__)


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
        "checkpoint_dir",
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

    def empty(self, shape, dtype="float32"):
        """An uninitialised array for the model to fill and return as an
        output (e.g. `np.multiply(x, 2, out=ctx.empty(x.shape, x.dtype))`).
        With `rustpy.isolation: "process"`, during `predict`, a large one lies
        in the worker's output region, so returning it (or row slices of it)
        costs no copy; a kept one stays valid (its range is held while it
        lives). Anywhere else it is `numpy.empty`."""
        import numpy as np
        import triton_python_backend_utils as pb_utils

        dtype = np.dtype(dtype)
        shape = tuple(int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        code = pb_utils._dtype_code_of(dtype)
        if code is not None and code != 13 and all(d >= 0 for d in shape):
            array = _native.output_empty(list(shape), code)
            if array is not None:
                return array
        return np.empty(shape, dtype)

    @property
    def output_labels(self):
        """{output name: [label, ...]} for every output with a label_filename
        (one label per line, as Triton's classification extension reads it)."""
        labels = {}
        for output in self.config.get("output", []):
            filename = output.get("label_filename")
            if filename:
                labels[output["name"]] = _read_labels(os.path.join(self.model_dir, filename))
        return labels

    @property
    def labels(self):
        """The labels of the first output with a label_filename, else those of
        <model_dir>/labels.txt, else []."""
        for values in self.output_labels.values():
            return values
        path = os.path.join(self.model_dir, "labels.txt")
        return _read_labels(path) if os.path.isfile(path) else []


def _read_labels(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


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


# --- per-model imports ---------------------------------------------------------
#
# Every model gets the import context the official backend gives it (model.py
# imported as `<version>.model`, so `from . import x` works; its version and
# model directories searched for `import x`; `import model` finding itself),
# but privately: its modules live in its own `_ModelImports.modules`, and
# sys.path is never edited. Two models may both ship `utils.py`, and a reload
# reads the files again.
#
# Yet they are findable by name, as pickle, copy, inspect and multiprocessing
# need (they look `module.__name__` up in sys.modules): sys.modules holds, for
# each name some model's module has, a `_ModelModule` that stands for the
# module of that name of the model whose code is running (found from the call
# stack, or the model whose code started the current thread). Two models that
# both have `1.model` and `utils` each find their own. A process spawned from
# model code gets the model's directories and a pb_utils on its sys.path, as
# upstream's stub has them, so it imports `1.model` again by name.
#
# No lock is held while user code runs: the only lock guards a few dict
# operations; a thread that needs a module another thread is still executing
# waits for that one module (as Python's own per-module import locks do), and
# a thread that would wait on itself (a circular import) gets the partially
# initialised module, as Python gives it.

_MARK = "__rustpy_model_imports__"
_serial = itertools.count(1)


class _Loading:
    __slots__ = ("owner", "done")

    def __init__(self):
        self.owner = threading.get_ident()
        self.done = threading.Event()


class _ModelImports:
    """One load of one model: its private modules and its `__import__`."""

    def __init__(self, model_name, version, model_dir, model_file):
        self.model_name = model_name
        self.model_dir = model_dir
        self.version_dir = os.path.dirname(model_file)
        self.dirs = [self.version_dir, model_dir]
        self.package = os.path.basename(self.version_dir) or str(version)
        self.stem = os.path.splitext(os.path.basename(model_file))[0]
        self.model_file = model_file
        self.modules = {}
        self.model_module = None
        # Names this load registered in sys.modules (see _ModelModule).
        self.registered = set()
        self.closed = False
        self._lock = threading.Lock()
        self._loading = {}
        self._waiting = {}
        # The builtins of every module of this model: its `__import__` is this
        # model's, and the mark lets rustpy find the model from any frame.
        self.builtins = dict(vars(builtins))
        self.builtins["__import__"] = self.import_
        self.builtins[_MARK] = self

    # -- name resolution
    def owns(self, top):
        """Whether a top-level name is this model's (already imported, the
        model itself, or a not-yet-imported file in its directories)."""
        if top in self.modules or top == self.stem or top == self.package:
            return True
        if top in sys.modules and type(sys.modules[top]) is not _ModelModule:
            return False
        try:
            spec = importlib.machinery.PathFinder.find_spec(top, self.dirs)
            if spec is not None and spec.loader is None:
                # A namespace package (a directory without __init__.py) that
                # also exists on sys.path (e.g. `google/`) stays shared, or its
                # site-packages half would be cut off.
                return importlib.machinery.PathFinder.find_spec(top) is None
            return spec is not None
        except (ImportError, ValueError):
            return False

    def import_(self, name, globals=None, locals=None, fromlist=(), level=0):
        """The `__import__` of the model's own modules."""
        if level > 0:
            package = _package_of(globals)
            if package and package.partition(".")[0] in self.modules:
                resolved = _resolve_name(name, package, level)
                module = self.get(resolved)
                return self._result(module, name, resolved, fromlist, level)
        elif name and self.owns(name.partition(".")[0]):
            return self._result(self.get(name), name, name, fromlist, 0)
        return _default_import(name, globals, locals, fromlist, level)

    def _result(self, module, name, resolved, fromlist, level):
        # What __import__ returns, as importlib._bootstrap._handle_fromlist /
        # __import__ compute it.
        if fromlist:
            if hasattr(module, "__path__"):
                for item in fromlist:
                    if item == "*":
                        items = getattr(module, "__all__", ())
                        self._result(module, name, resolved, tuple(items), level)
                    elif isinstance(item, str) and not hasattr(module, item):
                        try:
                            self.get("%s.%s" % (resolved, item))
                        except ModuleNotFoundError as e:
                            if e.name != "%s.%s" % (resolved, item):
                                raise
            return module
        if level == 0:
            return self.get(name.partition(".")[0])
        if not name:
            return module
        cut = len(name) - len(name.partition(".")[0])
        return self.get(resolved[: len(resolved) - cut])

    def get(self, fullname):
        """The module `fullname` of this model, importing it (and its parents) if needed."""
        if fullname == self.stem and self.model_module is not None:
            return self.model_module
        module = self.modules.get(fullname)
        if module is not None and fullname not in self._loading:
            return module
        parent, _, short = fullname.rpartition(".")
        parent_module = self.get(parent) if parent else None
        while True:
            with self._lock:
                module = self.modules.get(fullname)
                loading = self._loading.get(fullname)
                if loading is None:
                    if module is not None:
                        return module
                    loading = self._loading[fullname] = _Loading()
                    break
                if loading.owner == threading.get_ident() or self._would_deadlock(loading):
                    # A circular import: the partially initialised module, as
                    # Python gives it.
                    return module
                me = threading.get_ident()
                self._waiting[me] = fullname
            try:
                loading.done.wait()
            finally:
                with self._lock:
                    self._waiting.pop(me, None)
        try:
            return self._load(fullname, parent_module, short)
        finally:
            with self._lock:
                del self._loading[fullname]
            loading.done.set()

    def _would_deadlock(self, loading):
        """Whether the thread loading a module waits (through others) on us."""
        me = threading.get_ident()
        owner = loading.owner
        for _ in range(len(self._waiting) + 1):
            name = self._waiting.get(owner)
            if name is None:
                return False
            nxt = self._loading.get(name)
            if nxt is None:
                return False
            if nxt.owner == me:
                return True
            owner = nxt.owner
        return False

    def _load(self, fullname, parent_module, short):
        if parent_module is not None:
            path = getattr(parent_module, "__path__", None)
            if path is None:
                raise ModuleNotFoundError(
                    "No module named %r; %r is not a package" % (fullname, parent_module.__name__),
                    name=fullname)
            spec = importlib.machinery.PathFinder.find_spec(fullname, list(path))
        elif fullname == self.package:
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = [self.version_dir]
        else:
            spec = importlib.machinery.PathFinder.find_spec(fullname, self.dirs)
        if spec is None:
            raise ModuleNotFoundError("No module named %r" % fullname, name=fullname)
        if spec.loader is None and spec.submodule_search_locations is not None:
            # A namespace package: a plain list, so that Python never
            # recomputes it from sys.path (which does not hold our directories).
            spec.submodule_search_locations = list(spec.submodule_search_locations)
        module = importlib.util.module_from_spec(spec)
        module.__dict__["__builtins__"] = self.builtins
        self.modules[fullname] = module
        # Findable by name from now on (a class body that looks its own
        # module up, e.g. dataclasses, runs during exec_module).
        _register(self, fullname)
        try:
            if spec.loader is not None:
                spec.loader.exec_module(module)
        except BaseException:
            self.modules.pop(fullname, None)
            _unregister(self, [fullname])
            raise
        if parent_module is not None:
            setattr(parent_module, short, module)
        return module

    def load_model_module(self):
        fullname = "%s.%s" % (self.package, self.stem)
        self.get(self.package)
        module = self.get(fullname)
        self.model_module = module
        return module

    def close(self):
        """The model unloads: its names leave sys.modules (unless another
        load of a model still has them) and its modules are dropped."""
        self.closed = True
        _unregister(self, list(self.registered))
        self.modules.clear()
        self.model_module = None


# registered name -> the loads (_ModelImports) that have a module of that
# name, oldest first. Changed under _names_lock; read without it.
_by_name = {}
_names_lock = threading.Lock()
_module_getattribute = types.ModuleType.__getattribute__


class _ModelModule(types.ModuleType):
    """sys.modules' entry for a name that models' modules have: every
    attribute is that of the calling model's module of that name, so
    `pickle`, `copy`, `inspect` and `importlib` find each model its own
    module (a class, a function, `__file__`, `__dict__`, `__spec__`). Without
    a model to ask for (no model code on the stack and none started the
    thread) it stands for the one model that has the name, if only one does;
    otherwise its attributes are missing (AttributeError)."""

    __slots__ = ()

    def _target(self):
        name = _module_getattribute(self, "__name__")
        owners = _by_name.get(name) or ()
        found = _imports_of(sys._getframe(2))
        if found is not None and found in owners:
            module = found.modules.get(name)
            if module is not None:
                return module
        if len(owners) == 1:
            try:
                return owners[0].modules.get(name)
            except IndexError:  # unregistered meanwhile
                return None
        return None

    def __getattribute__(self, attr):
        target = _ModelModule._target(self)
        if target is None:
            name = _module_getattribute(self, "__name__")
            if attr == "__name__":
                return name
            if attr in ("__class__", "_target"):
                return _module_getattribute(self, attr)
            raise AttributeError(
                "module %r: several models have a module of this name and none of them is running "
                "on this thread, so rustpy cannot tell whose %r is meant" % (name, attr))
        return getattr(target, attr)

    def __setattr__(self, attr, value):
        target = _ModelModule._target(self)
        if target is None:
            raise AttributeError("module %r: no model to set %r on"
                                 % (_module_getattribute(self, "__name__"), attr))
        setattr(target, attr, value)

    def __delattr__(self, attr):
        target = _ModelModule._target(self)
        if target is None:
            raise AttributeError(attr)
        delattr(target, attr)

    def __dir__(self):
        target = _ModelModule._target(self)
        return dir(target) if target is not None else []

    def __repr__(self):
        target = _ModelModule._target(self)
        if target is not None:
            return repr(target)
        return "<module %r of several models (rustpy)>" % _module_getattribute(self, "__name__")


def _register(imports, fullname):
    """Makes `imports`' module `fullname` findable by name (not over a real
    module of that name: that one stays what everybody imports)."""
    with _names_lock:
        current = sys.modules.get(fullname)
        if current is None:
            sys.modules[fullname] = _ModelModule(fullname)
        elif type(current) is not _ModelModule:
            return
        owners = _by_name.setdefault(fullname, [])
        if imports not in owners:
            owners.append(imports)
        imports.registered.add(fullname)


def _unregister(imports, names):
    with _names_lock:
        for name in names:
            imports.registered.discard(name)
            owners = _by_name.get(name)
            if not owners:
                continue
            if imports in owners:
                # A new list: readers iterate the old one without the lock.
                owners = [o for o in owners if o is not imports]
                _by_name[name] = owners
            if not owners:
                del _by_name[name]
                if type(sys.modules.get(name)) is _ModelModule:
                    del sys.modules[name]


def _package_of(globals):
    if not isinstance(globals, dict):
        return None
    package = globals.get("__package__")
    if package is None:
        spec = globals.get("__spec__")
        if spec is not None:
            return spec.parent
        name = globals.get("__name__")
        if name is None:
            return None
        package = name if "__path__" in globals else name.rpartition(".")[0]
    return package


def _resolve_name(name, package, level):
    bits = package.rsplit(".", level - 1)
    if len(bits) < level:
        raise ImportError("attempted relative import beyond top-level package")
    base = bits[0]
    return "%s.%s" % (base, name) if name else base


def _imports_of(frame):
    """The model whose code runs in `frame` or in one of its callers; else
    the model whose code started this thread (a pool's worker, a queue's
    feeder)."""
    while frame is not None:
        found = frame.f_builtins.get(_MARK)
        if found is not None:
            return found
        frame = frame.f_back
    found = getattr(threading.current_thread(), "_rustpy_imports", None)
    if found is not None and not found.closed:
        return found
    return None


_original_thread_start = getattr(threading.Thread.start, "_rustpy_default", threading.Thread.start)


def _thread_start(self):
    """threading.Thread.start: a thread started by a model's code (or by a
    thread that one started) belongs to that model for module lookups."""
    try:
        self._rustpy_imports = _imports_of(sys._getframe(1))
    except Exception:  # noqa: BLE001 - a Thread subclass that takes no attributes
        pass
    return _original_thread_start(self)


_thread_start._rustpy_default = _original_thread_start
threading.Thread.start = _thread_start


# id(instance object) -> its Triton instance name ('<model>_0_0'), so messages
# name the instance as upstream's stub does (one stub per instance there).
_instance_names = {}


def _instance_name_of(ctx):
    if isinstance(ctx, dict):  # pb_utils: initialize(args)
        return ctx.get("model_instance_name")
    return getattr(ctx, "instance_name", None)


def current_instance():
    """The instance name whose method is on this thread's stack (a frame
    whose `self` is a model instance), else the calling model's name."""
    frame = sys._getframe(1)
    while frame is not None:
        name = _instance_names.get(id(frame.f_locals.get("self")))
        if name:
            return name
        frame = frame.f_back
    return current_model()[0]


def current_model():
    """(model name, model.py's directory) of the model whose code called
    into rustpy, from any thread of the model; (None, None) if no model code
    is on the stack."""
    found = _imports_of(sys._getframe(1))
    if found is None:
        return None, None
    return found.model_name, found.version_dir


def _global_import(name, globals=None, locals=None, fromlist=(), level=0):
    """builtins.__import__ for code outside models (libraries, unittest,
    pickle): Python's own import; a name some model's module has is that of
    the model whose code is running, and a top-level name Python cannot find
    is looked up among that model's files (upstream has the model's
    directories at the end of sys.path)."""
    if level == 0 and name:
        entry = sys.modules.get(name.partition(".")[0])
        if type(entry) is _ModelModule:
            found = _imports_of(sys._getframe(1))
            if found is not None and not found.closed and found.owns(name.partition(".")[0]):
                return found.import_(name, None, None, fromlist, 0)
    try:
        return _default_import(name, globals, locals, fromlist, level)
    except ModuleNotFoundError:
        if level == 0 and name:
            top = name.partition(".")[0]
            if top not in sys.modules:
                found = _imports_of(sys._getframe(1))
                if found is not None and found.owns(top):
                    return found.import_(name, None, None, fromlist, 0)
        raise


def _import_module(name, package=None):
    """importlib.import_module, resolving the calling model's own modules
    (`importlib.import_module("model")`, `("utils")`) as its imports do."""
    frame = sys._getframe(1)
    direct = frame.f_builtins.get(_MARK)
    if direct is not None:
        absolute = name
        if name.startswith("."):
            if not package:
                raise TypeError("the 'package' argument is required to perform a relative "
                                "import for {!r}".format(name))
            level = len(name) - len(name.lstrip("."))
            absolute = _resolve_name(name[level:], package, level)
        top = absolute.partition(".")[0]
        if top in direct.modules or direct.owns(top):
            return direct.get(absolute)
    try:
        return _original_import_module(name, package)
    except ModuleNotFoundError:
        if name.startswith("."):
            raise
        top = name.partition(".")[0]
        found = _imports_of(frame)
        if top in sys.modules or found is None or not found.owns(top):
            raise
        return found.get(name)


_global_import._rustpy_default = _default_import
_original_import_module = getattr(importlib.import_module, "_rustpy_default", importlib.import_module)
_import_module._rustpy_default = _original_import_module
builtins.__import__ = _global_import
importlib.import_module = _import_module


def load_module(model_name, version, model_dir, model_file):
    """Imports model_file as `<version>.model` in a private import context
    (see _ModelImports); returns (a unique name, the module, its modules)."""
    model_dir = os.path.abspath(model_dir)
    model_file = os.path.abspath(model_file)
    imports = _ModelImports(model_name, version, model_dir, model_file)
    safe = re.sub(r"\W", "_", model_name)
    unique = "_rustpy_model_%s_v%d_%d" % (safe, version, next(_serial))
    try:
        module = imports.load_model_module()
    except BaseException:
        imports.close()
        raise
    return unique, module, imports


def find_model_class(module, model_file):
    """Returns (class, api) where api is _native.API_BATCHED or _native.API_PB_UTILS."""
    cls = getattr(module, "Model", None)
    if isinstance(cls, type) and callable(getattr(cls, "predict", None)):
        return cls, _native.API_BATCHED
    cls = getattr(module, "TritonPythonModel", None)
    if isinstance(cls, type) and callable(getattr(cls, "execute", None)):
        return cls, _native.API_PB_UTILS
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


def create_instance(cls, ctx, entry):
    """Instantiates the user's class and runs its initialize(ctx); returns
    (object, bound entry method, whether it takes `requests`,
    split_by_parameters).

    `entry` is the method rustpy calls per batch: "predict" (batched API) or
    "execute" (official Python backend API). The model's imports resolve
    through its own __import__ (see _ModelImports); nothing is locked while
    user code runs.
    """
    obj = cls()
    _instance_names[id(obj)] = _instance_name_of(ctx)
    init = getattr(obj, "initialize", None)
    if callable(init):
        with _phase("initialize"):
            init(ctx)
    predict = getattr(obj, entry)
    return (
        obj,
        predict,
        _accepts_requests(predict),
        bool(getattr(obj, "split_by_parameters", False)),
    )


_threads_warned = set()


def limit_threads(model_name, limit, asked):
    """rustpy.threads: caps this process's BLAS and OpenMP thread pools at
    `limit` threads with threadpoolctl; called before and after the instance's
    initialize (the second time for libraries initialize loaded). BLAS pools
    are process-wide: in-process, the last instance created sets them for
    every model of the server (docs/performance.md). Without threadpoolctl, a
    limit the config asked for fails the load; the default's is skipped."""
    try:
        import threadpoolctl
    except ImportError:
        if asked:
            raise ImportError(
                "model '%s': parameter 'rustpy.threads' is %d, but threadpoolctl is not installed "
                "for the serving interpreter (pip install threadpoolctl)" % (model_name, limit)
            ) from None
        if model_name not in _threads_warned:  # once per model, not per call
            _threads_warned.add(model_name)
            _native.log(
                _native.LOG_WARN,
                "model '%s': several instances share the cores; install threadpoolctl to size the "
                "BLAS/OpenMP pools to %d thread(s) each (rustpy.threads)" % (model_name, limit),
                "rustpy",
                0,
            )
        return []
    threadpoolctl.threadpool_limits(limits=limit)
    return [(p.get("internal_api"), p.get("num_threads")) for p in threadpoolctl.threadpool_info()]


class _phase:
    """Marks this thread as running a model's initialize/finalize, where
    pb_utils refuses BLS as upstream does."""

    def __init__(self, name):
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        self.name = name

    def __enter__(self):
        self.pb_utils._set_phase(self.name)

    def __exit__(self, *exc):
        self.pb_utils._set_phase(None)


def has_is_ready(obj):
    """Whether the model defines is_ready() (python_backend r26.03), as the
    stub decides it once, after initialize."""
    return hasattr(obj, "is_ready")


def call_is_ready(obj, key):
    """The model's is_ready(): a bool, awaited on the instance's event loop
    when it is a coroutine; anything but a bool is an error, as upstream."""
    result = obj.is_ready()
    if asyncio.iscoroutine(result):
        result = run_coroutine(key, result, True)
    if not isinstance(result, bool):
        raise _pb._BackendError("is_ready() must return a boolean value")
    return result


def finalize_instance(obj):
    try:
        fin = getattr(obj, "finalize", None)
        if callable(fin):
            with _phase("finalize"):
                fin()
    finally:
        _instance_names.pop(id(obj), None)
        # What finalize printed reaches the log now, not never.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass


def unload_module(unique, imports):
    sys.modules.pop(unique, None)
    imports.close()
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


def run_coroutine(key, coro, wait, requests=(), model_name=""):
    """Runs an `async def execute` on the instance's own event loop thread
    (`key` names one instance for its lifetime, so a reload never shares a
    loop with the instance it replaces). Several coroutines of a decoupled
    model run concurrently on it; one that raises is logged and fails the
    requests it left open."""
    loop = _loops.get(key)
    if loop is None:
        loop = _loops.setdefault(key, _Loop())
    if wait:
        return loop.run(coro, True)
    future = loop.run(coro, False)
    future.add_done_callback(lambda f: _background_done(f, requests, model_name))
    return future


def _background_done(future, requests, model_name):
    """A decoupled model's `async def execute` ended: if it raised, the server
    log gets the type, message and traceback tail, and every request it did
    not finish gets that as its error."""
    if future.cancelled():
        text = "CancelledError: the async execute was cancelled"
        where = ("rustpy", 0)
    else:
        exc = future.exception()
        if exc is None:
            return
        text = format_exception(exc)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
        where = (os.path.basename(frames[-1].filename), frames[-1].lineno or 0) if frames else ("rustpy", 0)
    message = "Failed to process the request(s) for model '%s', message: %s" % (model_name, text)
    try:
        _native.log(_native.LOG_ERROR, message, where[0], where[1])
    finally:
        _fail_open(requests, message)

# --- the official API's execution: pb_utils requests in, responses out ----------------
# pb_utils.py (triton_python_backend_utils) holds only what user code sees;
# the engine's side of it lives here. That module is created after this one,
# so it is bound once it exists (attach_pb_utils).
_pb = None
_new_tensor = None
_new_request = None


def attach_pb_utils(module, source):
    global _pb, _new_tensor, _new_request, _pb_source
    _pb = module
    _pb_source = source
    _new_tensor = module.Tensor.__new__
    _new_request = module.InferenceRequest.__new__


# --- processes a model spawns ------------------------------------------------------
# multiprocessing's spawn and forkserver start a fresh interpreter that
# re-imports what it unpickles by module name: it must be a Python (not the
# server binary), and find the model's modules and pb_utils on its sys.path.
_pb_source = None
_child_dir = None
_child_dir_lock = threading.Lock()


def _python_executable():
    """The interpreter of the libpython rustpy embeds, for child processes
    (sys.executable of an embedded interpreter is the host's binary, or a
    guess from PATH)."""
    version = "%d.%d" % sys.version_info[:2]
    for prefix in (sys.base_exec_prefix, sys.exec_prefix):
        for name in ("python" + version, "python3", "python"):
            candidate = os.path.join(prefix, "bin", name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return None


def _child_stub_source():
    """`_rustpy_native` for a child process: the constants pb_utils reads,
    and calls that say they need the server."""
    lines = ['"""rustpy: what pb_utils needs of the native module in a process a model started."""',
             "import sys as _sys", ""]
    for key in sorted(vars(_native)):
        value = getattr(_native, key)
        if not key.startswith("_") and type(value) in (int, float, str, bool):
            lines.append("%s = %r" % (key, value))
    lines += [
        "",
        "",
        "def log(level, message, file='rustpy', line=0):",
        "    print('%s:%s: %s' % (file, line, message), file=_sys.stderr)",
        "",
        "",
        "def __getattr__(name):",
        "    def unavailable(*args, **kwargs):",
        "        raise RuntimeError('triton_python_backend_utils: %s needs the Triton server; it is not '",
        "                           'available in a process the model started' % name)",
        "    return unavailable",
        "",
    ]
    return "\n".join(lines)


def child_support_dir():
    """A directory with `triton_python_backend_utils.py` and a stand-in
    `_rustpy_native.py`, for children's sys.path (upstream's stub has the
    backend directory, where its pb_utils file lives, on its sys.path).
    Content-addressed under a private per-user directory of the temp dir."""
    global _child_dir
    if _child_dir is not None:
        return _child_dir
    with _child_dir_lock:
        if _child_dir is not None:
            return _child_dir
        files = {"triton_python_backend_utils.py": _pb_source or "", "_rustpy_native.py": _child_stub_source()}
        digest = hashlib.sha256("\0".join(files[k] for k in sorted(files)).encode()).hexdigest()[:16]
        base = os.path.join(tempfile.gettempdir(), "rustpy-%d" % os.getuid())
        os.makedirs(base, mode=0o700, exist_ok=True)
        st = os.lstat(base)
        if not os.path.isdir(base) or os.path.islink(base) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise RuntimeError("rustpy: %s is not a private directory of this user; "
                               "cannot write pb_utils for child processes there" % base)
        target = os.path.join(base, "spawn-" + digest)
        os.makedirs(target, mode=0o700, exist_ok=True)
        for name, text in files.items():
            path = os.path.join(target, name)
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() == text:
                        continue
            except OSError:
                pass
            tmp = "%s.%d.%d" % (path, os.getpid(), threading.get_ident())
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        _child_dir = target
        return target


def _install_spawn_support():
    import multiprocessing
    import multiprocessing.spawn as spawn

    exe = _python_executable()
    if exe is not None and not os.path.basename(sys.executable or "").startswith("python"):
        # The server's (or the worker's) binary would be started instead.
        sys.executable = exe
        sys._base_executable = exe
        multiprocessing.set_executable(exe)
    original = getattr(spawn.get_preparation_data, "_rustpy_default", spawn.get_preparation_data)

    def get_preparation_data(name):
        data = original(name)
        found = _imports_of(sys._getframe(1))
        if found is not None and not found.closed:
            path = list(data.get("sys_path", sys.path))
            for extra in (found.version_dir, found.model_dir, child_support_dir()):
                if extra not in path:
                    path.append(extra)
            data["sys_path"] = path
        return data

    get_preparation_data._rustpy_default = original
    spawn.get_preparation_data = get_preparation_data


_install_spawn_support()


def make_request(native, request_id, correlation_id, flags, timeout, parameters, requested, inputs):
    """A request from the backend. Its inputs are fresh C-contiguous arrays
    whose Triton type the backend already knows, so the user-facing
    constructors' checks are skipped (this runs once per request)."""
    tensors = []
    Tensor = _pb.Tensor
    for name, array, code in inputs:
        t = _new_tensor(Tensor)
        t._name = name
        t._array = array
        t._dtype_code = code
        tensors.append(t)
    r = _new_request(_pb.InferenceRequest)
    r._request_id = request_id
    r._correlation_id = correlation_id
    r._inputs = tensors
    r._requested = requested
    r._model_name = None
    r._model_version = -1
    r._flags = flags
    r._timeout = timeout
    r._parameters = parameters
    r._native = native
    r._sender = None
    r._release_flags = _native.REQUEST_RELEASE_ALL
    return r


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
        """Stops the loop once the coroutines still running on it (a decoupled
        model's background executes) have finished; never blocks the caller."""

        def stop_when_idle():
            if any(not t.done() for t in asyncio.all_tasks(self.loop)):
                self.loop.call_later(0.05, stop_when_idle)
            else:
                self.loop.stop()

        self.loop.call_soon_threadsafe(stop_when_idle)


def process_returned(model_name, decoupled, requests, returned):
    """Checks execute()'s return value (as the official stub does, with its
    messages); returns the responses to send, or raises."""
    BackendError = _pb._BackendError
    if returned is None:
        if not decoupled:
            _complete_unfinished(requests)
        return None
    if decoupled:
        raise BackendError(
            "Python model '%s' is using the decoupled mode and the execute function must return None."
            % model_name)
    if not isinstance(returned, list):
        raise BackendError(
            "Expected a list in the execute return, found type '%s'." % type(returned))
    if len(returned) != len(requests):
        raise BackendError(
            "Number of InferenceResponse objects do not match the number of InferenceRequest objects. "
            "InferenceRequest(s) size is:%d, and InferenceResponse(s) size is:%d\n"
            % (len(requests), len(returned)))
    for request, response in zip(requests, returned):
        if response is None:
            continue
        if getattr(request, "_release_flags", _native.REQUEST_RELEASE_ALL) == \
                _native.REQUEST_RELEASE_RESCHEDULE:
            raise BackendError(
                "Expected a None object in the execute function return list for reschduled request, "
                "found type '%s'." % type(response))
        if not isinstance(response, _pb.InferenceResponse):
            raise BackendError(
                "Expected an 'InferenceResponse' object in the execute function return list, found type '%s'."
                % type(response))
        try:
            request._native.claim_returned()
        except RuntimeError as e:
            raise BackendError(str(e)) from None
    return returned


def _fail_open(requests, message):
    """Ends every request that is not finished yet with an error response
    carrying `message` (and the FINAL flag)."""
    for request in requests:
        request._native.fail_if_open(_pb.TritonError.INTERNAL, message)


def send_returned(requests, responses):
    for request, response in zip(requests, responses):
        if response is None:
            continue
        try:
            _pb._send(request._native.send_returned, response)
        except Exception as e:
            # A response that cannot be converted or sent fails its own
            # request only; the next ones still go out.
            message = str(e) if isinstance(e, RuntimeError) else "%s: %s" % (type(e).__name__, e)
            try:
                request._native.send_returned(None, (_pb.TritonError.INTERNAL, message))
            except RuntimeError:
                pass  # the native sender already answered it with the error
    _complete_unfinished(requests)


def awaits_sender(request):
    """Whether a default model's request stays open after execute returned:
    the model took its response sender and has not closed it (it may answer
    later, from a thread or a task, as upstream allows)."""
    return getattr(request, "_sender", None) is not None and request._native.is_open()


def _complete_unfinished(requests):
    for request in requests:
        if getattr(request, "_sender", None) is not None:
            request._native.complete()


def close_loop(key):
    loop = _loops.pop(key, None)
    if loop is not None:
        loop.close()


def is_coroutine(obj):
    return asyncio.iscoroutine(obj)


def is_iterator(obj):
    return hasattr(obj, "__next__") and not isinstance(obj, dict)


def format_exception(exc, tb=None):
    """`Type: message` plus the last traceback lines; SyntaxError as file:line:col."""
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
