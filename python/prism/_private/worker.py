"""The process-wide state of the Python API: the driver side (init, get, put, wait) and the
worker side (running Python tasks)."""

import atexit
import hashlib
import json
import os
import sys
import threading
import traceback

import cloudpickle

from prism import _prism
from prism import exceptions
from prism._private import serialization
from prism.object_ref import ObjectRef

_lock = threading.Lock()
# Bumped by each init(): functions are exported again to a new cluster.
generation = 0
_atexit_registered = False


def _translate(err):
    """A prism exception for an error the binding raised."""
    if isinstance(err, _prism.TaskError):
        function_name, type_name, message, payload = err.args
        cause = None
        if payload:
            try:
                cause = cloudpickle.loads(payload)
            except Exception:  # the exception's class may not exist here
                cause = None
        return exceptions.RayTaskError(function_name, message, cause, type_name).as_instanceof_cause()
    text = str(err)
    table = [
        (_prism.GetTimeoutError, exceptions.GetTimeoutError),
        (_prism.WorkerCrashedError, exceptions.WorkerCrashedError),
        (_prism.InfeasibleError, exceptions.InfeasibleError),
        (_prism.OwnerDiedError, exceptions.OwnerDiedError),
        (_prism.ObjectLostError, exceptions.ObjectLostError),
        (_prism.ActorDiedError, exceptions.RayActorError),
        (_prism.TaskCancelledError, exceptions.TaskCancelledError),
        (_prism.ObjectStoreFullError, exceptions.ObjectStoreFullError),
        (_prism.CollectiveError, exceptions.CollectiveError),
        (_prism.InvalidArgumentError, ValueError),
    ]
    for native, mine in table:
        if isinstance(err, native):
            return mine(text)
    return exceptions.RaySystemError(text)


def call(fn, *args):
    """Calls the binding, raising prism's exceptions instead of the binding's."""
    try:
        return fn(*args)
    except _prism.Error as err:
        raise _translate(err) from None


def init(address=None, *, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
         memory=None, log_level=None, ignore_reinit_error=False, code_search_path=None, gpu_topology=None,
         timeline=False, worker_launch_prefix=None):
    global generation, _atexit_registered
    with _lock:
        if _prism.is_initialized():
            if ignore_reinit_error:
                return
            raise RuntimeError("prism.init() was already called; call prism.shutdown() first")
        if address not in (None, "", "local") and not isinstance(address, str):
            raise TypeError("address must be a string: 'auto' or a session folder")
        # Workers run this interpreter with the worker module, and see the driver's sys.path
        # (so that functions pickled by reference to a module can be imported there).
        # argv[0] is this interpreter's path, so that a worker finds the same virtual environment.
        worker_argv = [sys.executable or "python3", "-m", "prism._worker", json.dumps([p for p in sys.path if p])]
        call(_prism.init, "" if address in (None, "local") else address, float(num_cpus or 0),
             -1 if num_gpus is None else int(num_gpus), int(object_store_memory or 0), int(memory or 0),
             dict(resources or {}), log_level or "", worker_argv,
             [os.path.abspath(p) for p in (code_search_path or [])], gpu_topology or "", bool(timeline),
             list(worker_launch_prefix or []))
        generation += 1
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True


def shutdown():
    _prism.shutdown()


def is_initialized():
    return _prism.is_initialized()


def _check_initialized():
    if not _prism.is_initialized():
        raise RuntimeError("prism is not initialized: call prism.init() first")


def _refs_of(object_refs, what):
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, (list, tuple)):
        for r in object_refs:
            if not isinstance(r, ObjectRef):
                raise TypeError(f"{what} takes an ObjectRef or a list of ObjectRefs, "
                                f"and the list holds a {type(r).__name__}")
        return list(object_refs), False
    raise TypeError(f"{what} takes an ObjectRef or a list of ObjectRefs, not a {type(object_refs).__name__}")


def _timeout_ms(timeout):
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    return int(timeout * 1000)


def get(object_refs, *, timeout=None):
    _check_initialized()
    refs, single = _refs_of(object_refs, "get")
    if not refs:
        return []
    datas = call(_prism.get, [r._handle for r in refs], _timeout_ms(timeout))
    values = []
    for ref, data in zip(refs, datas):
        for rebuilt in range(3):
            try:
                values.append(serialization.deserialize(data))
                break
            except _prism.ObjectLostError as err:
                # Device objects in it went with their producer: its owner (this process) may
                # rebuild it by running its task again (lineage); then read the new value.
                if rebuilt == 2 or not call(_prism.rebuild_lost, ref._handle):
                    raise _translate(err) from None
                data = call(_prism.get, [ref._handle], _timeout_ms(timeout))[0]
    return values[0] if single else values


def put(value):
    _check_initialized()
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself")
    size, parts, nested = serialization.serialize(value)
    return ObjectRef(call(_prism.put, size, parts, nested))


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    _check_initialized()
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() takes a list of ObjectRefs, not a single ObjectRef")
    refs, _ = _refs_of(object_refs, "wait")
    if len(set(r.binary() for r in refs)) != len(refs):
        raise ValueError("wait() was given the same ObjectRef twice")
    if num_returns < 0 or num_returns > len(refs):
        raise ValueError(f"num_returns must be between 0 and the number of refs ({len(refs)}), not {num_returns}")
    ready = call(_prism.wait, [r._handle for r in refs], num_returns, _timeout_ms(timeout))
    done = [r for r, ok in zip(refs, ready) if ok][:num_returns] if num_returns else []
    done_ids = {r.binary() for r in done}
    return done, [r for r in refs if r.binary() not in done_ids]


def cancel(object_ref, *, force=False, recursive=True):
    _check_initialized()
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, not a {type(object_ref).__name__}")
    call(_prism.cancel, object_ref._handle, bool(force))


def cluster_resources():
    _check_initialized()
    total = {}
    for n in call(_prism.nodes):
        for k, v in n["Resources"].items():
            total[k] = total.get(k, 0) + v
    return total


def available_resources():
    _check_initialized()
    free = {}
    for n in call(_prism.nodes):
        for k, v in n["Available"].items():
            if v > 0:
                free[k] = free.get(k, 0) + v
    return free


def nodes():
    _check_initialized()
    out = []
    for n in call(_prism.nodes):
        out.append({"NodeID": n["NodeID"], "Alive": n["Alive"], "Resources": dict(n["Resources"]),
                    "SessionDir": n["SessionDir"]})
    return out


def timeline(filename="prism-timeline.json"):
    """Writes the task events workers recorded (``init(timeline=True)`` or PRISM_TIMELINE=1) as a
    Chrome trace: tasks per worker and thread, GPU work per stream. Open it in Perfetto."""
    _check_initialized()
    call(_prism.write_timeline, os.fspath(filename))
    return filename


def get_gpu_ids():
    return list(_prism.gpu_ids())


def export_function(pickled):
    """Stores a pickled function in the cluster's key-value table; returns its key (hex)."""
    key = hashlib.sha1(pickled).hexdigest()
    call(_prism.kv_put, "fn", key.encode(), pickled, False)
    return key


# ---- worker side ------------------------------------------------------------------------------

_functions = {}


def _load_function(key):
    if key.startswith("@"):
        # A function named by module and name (called from C++: prism::PyFunction).
        import importlib
        fn = _functions.get(key)
        if fn is None:
            module_name, _, name = key[1:].rpartition(".")
            if not module_name:
                raise ValueError(f"a Python function called by name is 'module.function', not {key[1:]!r}")
            fn = getattr(importlib.import_module(module_name), name)
            _functions[key] = fn
        return fn
    fn = _functions.get(key)
    if fn is None:
        pickled = _prism.kv_get("fn", key.encode())
        if pickled is None:
            raise RuntimeError(f"function {key} was not exported to this cluster")
        fn = cloudpickle.loads(pickled)
        _functions[key] = fn
    return fn


_actor = None
_actor_loop = None
_actor_slots = None  # asyncio.Semaphore: how many async calls run at once


def _start_actor_loop(concurrency):
    """An event loop on a thread of its own: async methods of this actor run there, at most
    `concurrency` at once, and answer from there when they finish."""
    global _actor_loop, _actor_slots
    import asyncio
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    threading.Thread(target=run, name="prism-actor-loop", daemon=True).start()
    ready.wait()

    async def make_slots():
        return asyncio.Semaphore(concurrency)

    _actor_slots = asyncio.run_coroutine_threadsafe(make_slots(), loop).result()
    _actor_loop = loop


def _decode_call(body, arg_views):
    """body: "<target>" or "<target>|kw1,kw2" (the last arguments are those keywords' values);
    the target may carry ";c=N" (an async actor's concurrency)."""
    target, _, kw = body.partition("|")
    args = [serialization.deserialize(v) for v in arg_views]
    kwnames = kw.split(",") if kw else []
    kwargs = {}
    if kwnames:
        kwargs = dict(zip(kwnames, args[len(args) - len(kwnames):]))
        args = args[:len(args) - len(kwnames)]
    return target, args, kwargs


def _answer_later(coroutine, completion):
    """Runs an async method on the actor's loop; its result (or error) answers the call then."""
    import asyncio

    async def run():
        async with _actor_slots:
            return await coroutine

    def done(future):
        try:
            result = future.result()
        except BaseException as e:  # noqa: B902 - every failure answers the call
            completion.error(*_error(e, "".join(traceback.format_exception(e)))[1:])
            return
        try:
            size, parts, nested = serialization.serialize(result)
        except Exception as e:
            completion.error(*_error(e)[1:])
            return
        completion.ok(size, parts, nested)

    asyncio.run_coroutine_threadsafe(run(), _actor_loop).add_done_callback(done)


def execute_task(kind, descriptor, arg_views, streaming, completion=None):
    """Runs one Python task, actor creation or actor method for the worker loop: ("ok", size,
    parts, handles), ("error", type, message, pickled exception), or ("deferred",) when an
    async method will answer through `completion`."""
    global _actor
    import asyncio
    try:
        if kind == "method":
            name, args, kwargs = _decode_call(descriptor[len("py:m:"):], arg_views)
            if _actor is None:
                raise RuntimeError("this worker hosts no Python actor")
            fn = getattr(_actor, name)
        else:
            target, args, kwargs = _decode_call(descriptor[len("py:"):], arg_views)
            key, _, concurrency = target.partition(";c=")
            fn = _load_function(key)
    except _prism.ObjectLostError as e:  # a device object argument went with its producer
        return ("lost", str(e))
    except Exception as e:  # the call could not even start: report it as its error
        return _error(e)
    try:
        if kind == "create":
            _actor = fn(*args, **kwargs)
            _prism.set_actor_label(type(_actor).__name__)
            if concurrency:
                _start_actor_loop(int(concurrency))
            result = True
        elif streaming:
            for value in fn(*args, **kwargs):
                size, parts, nested = serialization.serialize(value)
                _prism.stream_write(size, parts, nested)
            result = None
        elif _actor_loop is not None and asyncio.iscoroutinefunction(fn) and completion is not None:
            _answer_later(fn(*args, **kwargs), completion)
            return ("deferred",)
        else:
            result = fn(*args, **kwargs)
    except Exception as e:
        return _error(e)
    if kind == "task" and descriptor.startswith("py:@"):
        # Called from C++: the result goes back as msgpack, which C++ can read.
        import msgpack
        try:
            data = msgpack.packb(result, use_bin_type=True)
        except Exception as e:
            return _error(TypeError(f"the result of {descriptor[4:]} cannot go back to C++ as msgpack: {e}"))
        return ("ok", len(data), [(0, data)], [])
    size, parts, nested = serialization.serialize(result)
    return ("ok", size, parts, nested)


def _error(e, tb=None):
    tb = tb or traceback.format_exc()
    try:
        payload = cloudpickle.dumps(e)
    except Exception:
        payload = b""
    return ("error", type(e).__qualname__, tb, payload)


def run_worker(sys_path_json=None):
    if sys_path_json:
        for p in reversed(json.loads(sys_path_json)):
            if p not in sys.path:
                sys.path.insert(0, p)
    # Lines reach the driver as they are printed.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _prism.run_worker(execute_task)
