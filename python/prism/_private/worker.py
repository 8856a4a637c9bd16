"""The process-wide state of the Python API: the driver side (init, get, put, wait) and the
worker side (running Python tasks)."""

import atexit
import collections
import concurrent.futures
import contextvars
import hashlib
import inspect
import itertools
import json
import operator
import os
import sys
import threading
import traceback
import uuid

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


_INIT_DASHBOARD_ARGS = ("include_dashboard", "dashboard_host", "dashboard_port")


class RayContext(dict):
    """What ``init()`` returns, as Ray's context: ``address_info`` (also readable as a dict:
    ``ctx["session_dir"]``), ``dashboard_url`` (None: prism serves no dashboard yet), the versions,
    and ``with prism.init(): ...``, which shuts down on leaving."""

    def __init__(self, address_info):
        super().__init__(address_info)
        self.address_info = dict(address_info)
        self.dashboard_url = None
        self.python_version = ".".join(str(v) for v in sys.version_info[:3])
        from prism import __version__
        self.ray_version = __version__
        self.ray_commit = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()

    def disconnect(self):
        shutdown()

    def __repr__(self):
        return f"RayContext(address_info={self.address_info!r}, dashboard_url={self.dashboard_url!r})"


_context = None
# This job's namespace and runtime environment (init's); in a worker, read from the job's
# entry in the control store on first use.
_job_config = None


def init(address=None, *, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
         memory=None, log_level=None, ignore_reinit_error=False, code_search_path=None, gpu_topology=None,
         timeline=False, worker_launch_prefix=None, namespace=None, runtime_env=None, log_to_driver=True,
         logging_level=None, logging_format=None, configure_logging=True, local_mode=False, labels=None,
         **kwargs):
    """Starts an embedded cluster (or joins one: ``address="auto"`` or a session folder) and
    returns a RayContext. Ray's arguments: ``namespace`` (named actors are found only in their
    namespace; by default each job gets an anonymous one), ``runtime_env`` (``env_vars`` and
    ``working_dir``, for every task and actor of the job), ``log_to_driver``,
    ``ignore_reinit_error``; dashboard arguments are taken and have no effect (prism serves no
    dashboard yet)."""
    global generation, _atexit_registered, _context, _job_config
    unknown = sorted(k for k in kwargs if k not in _INIT_DASHBOARD_ARGS)
    if unknown:
        raise TypeError(f"init() got unknown keyword argument(s): {', '.join(unknown)}")
    if kwargs.get("include_dashboard"):
        import warnings
        warnings.warn("prism serves no dashboard yet: include_dashboard=True has no effect", stacklevel=2)
    if local_mode:
        raise ValueError("local_mode is not supported (Ray deprecated it): tasks run in worker processes; "
                         "for debugging, call the function itself or use a one-CPU cluster")
    with _lock:
        if _prism.is_initialized():
            if ignore_reinit_error:
                return _context
            raise RuntimeError("prism.init() was already called (maybe by a first API call, which starts a "
                               "cluster by itself); call prism.shutdown() first, or pass ignore_reinit_error=True")
        if address is not None and not isinstance(address, str):
            raise TypeError("address must be a string: 'local', 'auto' or a session folder")
        if address is None:
            address = os.environ.get("PRISM_ADDRESS") or None
        if namespace is not None and (not isinstance(namespace, str) or not namespace or "\0" in namespace):
            raise ValueError("namespace must be a non-empty string without NUL characters")
        from prism import runtime_env as _renv
        job_env = _renv.check(runtime_env, "init(runtime_env=...)")
        # Workers run this interpreter with the worker module, and see the driver's sys.path
        # (so that functions pickled by reference to a module can be imported there).
        # argv[0] is this interpreter's path, so that a worker finds the same virtual environment.
        worker_argv = [sys.executable or "python3", "-m", "prism._worker", json.dumps([p for p in sys.path if p])]
        saved_log_env = os.environ.get("PRISM_LOG_TO_DRIVER")
        if not log_to_driver:
            os.environ["PRISM_LOG_TO_DRIVER"] = "0"  # read once, by the core worker as it starts
        try:
            call(_prism.init, "" if address in (None, "local") else address, float(num_cpus or 0),
                 -1 if num_gpus is None else int(num_gpus), int(object_store_memory or 0), int(memory or 0),
                 dict(resources or {}), log_level or "", worker_argv,
                 [os.path.abspath(p) for p in (code_search_path or [])], gpu_topology or "", bool(timeline),
                 list(worker_launch_prefix or []))
        finally:
            if not log_to_driver:
                if saved_log_env is None:
                    os.environ.pop("PRISM_LOG_TO_DRIVER", None)
                else:
                    os.environ["PRISM_LOG_TO_DRIVER"] = saved_log_env
        generation += 1
        try:
            ids = _prism.runtime_context()
            node = call(_prism.nodes)[0]
            _job_config = {
                "namespace": namespace or str(uuid.uuid4()),
                "runtime_env": _renv.prepare(job_env, node["SessionDir"]),
            }
            call(_prism.kv_put, "job", (ids["job_id"] + ":config").encode(), json.dumps(_job_config).encode(), True)
        except BaseException:
            _prism.shutdown()
            _job_config = None
            raise
        _context = RayContext(_address_info(node, ids))
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        return _context


def _address_info(node, ids):
    ip = node_ip_address()
    session = node["SessionDir"]
    return {
        "node_ip_address": ip,
        "raylet_ip_address": ip,
        "address": session,
        "gcs_address": session,
        "session_dir": session,
        "raylet_socket_name": os.path.join(session, "daemon.sock"),
        "object_store_address": os.path.join(session, "daemon.sock"),
        "webui_url": None,
        "node_id": ids["node_id"],
        "job_id": ids["job_id"],
    }


def node_ip_address():
    """This machine's address as other machines would reach it (its hostname's address), or
    127.0.0.1 where the hostname does not resolve."""
    import socket
    try:
        ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return ip


def job_config():
    """This job's namespace and runtime environment: init's in the driver; a worker reads its
    job's from the control store (once)."""
    global _job_config
    if _job_config is None:
        ids = _prism.runtime_context()
        raw = _prism.kv_get("job", (ids["job_id"] + ":config").encode())
        config = json.loads(bytes(raw)) if raw is not None else {}
        config.setdefault("namespace", "")
        config.setdefault("runtime_env", {})
        _job_config = config
    return _job_config


def shutdown():
    global _context, _job_config
    _prism.shutdown()
    _context = None
    _job_config = None


def is_initialized():
    return _prism.is_initialized()


def _check_initialized():
    """Starts a cluster with the defaults on the first API use without init(), as Ray does."""
    if _prism.is_initialized():
        return
    if _prism.is_worker_process():
        raise RuntimeError("prism is not initialized in this worker process")
    init(ignore_reinit_error=True)


def _refs_of(object_refs, what):
    """(refs, their handles, whether one ref was given)."""
    if isinstance(object_refs, ObjectRef):
        return [object_refs], [object_refs._handle], True
    if isinstance(object_refs, (list, tuple)):
        try:
            # (Only ObjectRefs have a _handle; the binding checks what it is.)
            return list(object_refs), [r._handle for r in object_refs], False
        except AttributeError:
            bad = next(r for r in object_refs if not isinstance(r, ObjectRef))
            raise TypeError(f"{what} takes an ObjectRef or a list of ObjectRefs, "
                            f"and the list holds a {type(bad).__name__}") from None
    raise TypeError(f"{what} takes an ObjectRef or a list of ObjectRefs, not a {type(object_refs).__name__}")


def _timeout_ms(timeout):
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    return int(timeout * 1000)


def get(object_refs, *, timeout=None, _start=True):
    if _start:
        _check_initialized()
    elif not _prism.is_initialized():
        raise exceptions.RaySystemError("prism was shut down before the object was read")
    refs, handles, single = _refs_of(object_refs, "get")
    if not refs:
        return []
    datas = call(_prism.get, handles, _timeout_ms(timeout))
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
    refs, handles, _ = _refs_of(object_refs, "wait")
    if num_returns < 0 or num_returns > len(refs):
        raise ValueError(f"num_returns must be between 0 and the number of refs ({len(refs)}), not {num_returns}")
    # The binding refuses a ref given twice, and marks the first num_returns ready refs only.
    ready = call(_prism.wait, handles, num_returns, _timeout_ms(timeout))
    done = list(itertools.compress(refs, ready))
    if len(done) == len(refs):
        return done, []
    return done, list(itertools.compress(refs, map(operator.not_, ready)))


def cancel(object_ref, *, force=False, recursive=True):
    _check_initialized()
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, not a {type(object_ref).__name__}")
    if force and object_ref._actor_call:
        raise ValueError("force=True is not supported for actor tasks (it would kill the actor): use "
                         "prism.kill(actor), or cancel without force")
    call(_prism.cancel, object_ref._handle, bool(force))


def _node_view(n, key):
    """A node's resources as Ray shapes them: floats, object_store_memory, and the node's own
    resources node:<ip> and node:__internal_head__."""
    out = {k: float(v) for k, v in n[key].items()}
    stats = call(_prism.object_store_stats)
    out["object_store_memory"] = float(stats["capacity"] - (stats["used"] if key == "Available" else 0))
    out["node:" + node_ip_address()] = 1.0
    out["node:__internal_head__"] = 1.0
    return out


def cluster_resources():
    """The cluster's total resources, as Ray's: {"CPU": 2.0, "memory": ..., "object_store_memory": ...,
    "node:<ip>": 1.0, "node:__internal_head__": 1.0, "GPU": ..., custom ones}."""
    _check_initialized()
    total = {}
    for n in call(_prism.nodes):
        for k, v in _node_view(n, "Resources").items():
            total[k] = total.get(k, 0.0) + v
    return total


def available_resources():
    """What is free now, shaped as cluster_resources(); resources with nothing free are left out,
    as in Ray."""
    _check_initialized()
    free = {}
    for n in call(_prism.nodes):
        for k, v in _node_view(n, "Available").items():
            if v > 0:
                free[k] = free.get(k, 0.0) + v
    return free


def nodes():
    """The cluster's nodes, with Ray's keys."""
    _check_initialized()
    import socket
    out = []
    ip = node_ip_address()
    for n in call(_prism.nodes):
        sock = os.path.join(n["SessionDir"], "daemon.sock")
        out.append({"NodeID": n["NodeID"], "Alive": n["Alive"], "alive": n["Alive"],
                    "NodeManagerAddress": ip, "NodeManagerHostname": socket.gethostname(), "NodeName": ip,
                    "NodeManagerPort": 0, "ObjectManagerPort": 0, "ObjectStoreSocketName": sock,
                    "RayletSocketName": sock, "MetricsExportPort": 0, "Labels": {},
                    "Resources": _node_view(n, "Resources"), "SessionDir": n["SessionDir"]})
    return out


def session_dir():
    """The session folder of this process's node (cached per init)."""
    global _session
    if _session is None or _session[0] != generation:
        _session = (generation, call(_prism.nodes)[0]["SessionDir"])
    return _session[1]


_session = None


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


def export_value(value):
    """Pickles a value for workers (exception types to retry, a captured placement group) into
    the key-value table, once per content; returns its key."""
    return export_function(cloudpickle.dumps(value))


# ---- worker side ------------------------------------------------------------------------------

_functions = {}
_values = {}


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


def _load_value(key):
    if key not in _values:
        _values[key] = _load_function(key)
    return _values[key]


# What the running call passes on to the tasks it starts, and what its runtime context reports.
# Context variables, so that each thread and each coroutine of an async actor sees its own call.
_task_var = contextvars.ContextVar("prism_task_id", default=None)
_capture_var = contextvars.ContextVar("prism_capture", default=None)
_group_var = contextvars.ContextVar("prism_placement_group", default=None)
_env_var = contextvars.ContextVar("prism_runtime_env", default=None)
# An actor's own: what its calls inherit for its whole life (set by its creation).
_actor_running = {}


def captured_placement_group():
    """The strategy children of the running task inherit, if it captures them; else None."""
    return _capture_var.get()


def current_placement_group_id():
    """The placement group the running task (or this actor) was placed in, or None."""
    return _group_var.get()


def current_task_id():
    """The running call's task id (hex) where the core's thread does not know it (an async
    actor's event loop, a concurrency group's threads), else None."""
    return _task_var.get()


def inherited_runtime_env():
    """The runtime environment the running task passes on to its children (its own, laid over
    its job's), or None where it is the job's."""
    return _env_var.get()


def _enter_call(call_, task_id):
    """Sets the running call's context; returns what _leave_call needs to restore it."""
    params = call_.params
    if not _actor_running and "g" not in params and "p" not in params and "e" not in params:
        return (_task_var.set(task_id or None),)  # (the common case: nothing to pass on)
    running = dict(_actor_running)
    if "g" in call_.params:
        running["capture"] = _load_value(call_.params["g"])
    if "p" in call_.params:
        running["group"] = int(call_.params["p"])
    if "e" in call_.params:
        running["env"] = _load_value(call_.params["e"])
    return (_task_var.set(task_id or None), _capture_var.set(running.get("capture")),
            _group_var.set(running.get("group")), _env_var.set(running.get("env")), running)


def _leave_call(tokens):
    for var, token in zip((_task_var, _capture_var, _group_var, _env_var), tokens[:4]):
        var.reset(token)


def _running_of(tokens):
    """What a creation's call passes on to the actor's calls."""
    return tokens[4] if len(tokens) > 4 else {}


class _Call:
    """A call's descriptor: "<target>[;param...][|kw1,kw2]". Params: c=N (an async actor's
    concurrency), g=<key> (the placement group strategy children inherit), r=N:<key or *>
    (retry exceptions of these types, N times; -1 forever), d (a dynamic generator), q=<key>
    (an actor's concurrency groups), k=<group> (the group a method call runs in), p=<id> (the
    placement group it runs in), e=<key> (the runtime environment its children inherit)."""

    def __init__(self, body):
        target, _, kw = body.partition("|")
        self.kwnames = kw.split(",") if kw else []
        parts = target.split(";")
        self.target = parts[0]
        self.params = {}
        for p in parts[1:]:
            name, _, value = p.partition("=")
            self.params[name] = value

    def args(self, arg_views):
        args = [serialization.deserialize(v) for v in arg_views]
        kwargs = {}
        if self.kwnames:
            n = len(self.kwnames)
            kwargs = dict(zip(self.kwnames, args[len(args) - n:]))
            args = args[:len(args) - n]
        return args, kwargs

    def retry(self):
        """(times, exception types or None for any) when the call retries exceptions."""
        spec = self.params.get("r")
        if not spec:
            return 0, None
        times, _, types = spec.partition(":")
        return int(times), None if types == "*" else _load_value(types)


_calls = {}  # descriptor -> _Call: a worker runs the same few calls again and again


def _parse_call(descriptor, skip):
    call_ = _calls.get(descriptor)
    if call_ is None:
        call_ = _Call(descriptor[skip:])
        if len(_calls) >= 4096:
            _calls.clear()
        _calls[descriptor] = call_
    return call_


_actor = None
_actor_loop = None
_actor_slots = None  # asyncio.Semaphore: how many async calls run at once
_actor_groups = {}  # concurrency group name -> its executor (threads) or semaphore (async)
_actor_methods_groups = {}  # method name -> its concurrency group (@method / options)
_async_calls = {}  # task id -> the running async call's future (for cancel)


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


def _start_groups(groups, is_async):
    """An actor's concurrency groups: each runs at most its number of calls at once, apart from
    the others (async actors: a limit on the event loop; threaded actors: a pool of threads)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    for name, limit in groups.items():
        if is_async:
            async def make(n=limit):
                return asyncio.Semaphore(n)
            _actor_groups[name] = asyncio.run_coroutine_threadsafe(make(), _actor_loop).result()
        else:
            _actor_groups[name] = ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"prism-group-{name}")


def _finish(completion, outcome):
    """Answers a deferred call with what execute would have returned."""
    if outcome[0] == "ok":
        completion.ok(*outcome[1:])
    elif outcome[0] == "ok_multi":
        completion.ok_multi(outcome[1])
    else:
        completion.error(*outcome[1:4])


def _answer_later(coroutine, completion, num_returns, slots, task_id, call_):
    """Runs an async method on the actor's loop; its result (or error) answers the call then."""
    import asyncio

    async def run():
        _enter_call(call_, task_id)  # (this task's own context: nothing to restore)
        async with slots:
            try:
                return await coroutine
            except SystemExit as e:  # exit_actor() or sys.exit() in an async method
                _exit_actor(e)

    def done(future):
        _async_calls.pop(task_id, None)
        try:
            result = future.result()
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            from prism.exceptions import TaskCancelledError
            _finish(completion, _error(TaskCancelledError(f"call {task_id} was cancelled"), "cancelled"))
            return
        except BaseException as e:  # noqa: B902 - every failure answers the call
            _finish(completion, _error(e, "".join(traceback.format_exception(e))))
            return
        _finish(completion, _results(result, num_returns))

    future = asyncio.run_coroutine_threadsafe(run(), _actor_loop)
    with _cancel_lock:
        _async_calls[task_id] = future
        cancelled = _cancelled.pop(task_id, None) is not None
    if cancelled:  # its cancel came before it was handed to the loop
        future.cancel()
    future.add_done_callback(done)


_cancel_lock = threading.Lock()
_cancelled = collections.OrderedDict()  # calls cancelled before they started here (bounded)


def _cancel_calls():
    """A thread of every Python actor: cancels the running async calls their callers cancelled
    (prism.cancel); the coroutine gets CancelledError, and the call fails with
    TaskCancelledError. A cancel that comes before its call started here is kept for it."""
    while True:
        for task_id in _prism.take_cancelled():
            with _cancel_lock:
                future = _async_calls.get(task_id)
                if future is None:
                    _cancelled[task_id] = True
                    while len(_cancelled) > 10000:
                        _cancelled.popitem(last=False)
            if future is not None:
                future.cancel()  # (thread-safe: it cancels the task on the actor's loop)


def _results(result, num_returns):
    """The answer for a call's result: one value, or num_returns of them."""
    try:
        if num_returns > 1:
            values = list(result) if inspect.isgenerator(result) else result
            if not isinstance(values, (list, tuple)) or len(values) != num_returns:
                count = len(values) if isinstance(values, (list, tuple)) else 1
                raise ValueError(f"Task returned {count} objects, but num_returns={num_returns}.")
            return ("ok_multi", [serialization.serialize(v) for v in values])
        size, parts, nested = serialization.serialize(result)
        return ("ok", size, parts, nested)
    except Exception as e:
        return _error(e)


def _run_with_retries(call, fn, args, kwargs):
    """Runs fn; a task with retry_exceptions runs again after an exception of those types, up
    to its max_retries times (-1: until it succeeds)."""
    times, types = call.retry()
    attempt = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if times == 0 or (times > 0 and attempt >= times) or (types is not None and not isinstance(e, types)):
                raise
            attempt += 1


def current_actor_handle():
    """A handle to the actor this process hosts; RuntimeError elsewhere."""
    if _actor is None:
        raise RuntimeError("current_actor is available only inside an actor")
    from prism.actor import ActorHandle, _methods_of
    cls = type(_actor)
    return ActorHandle(call(_prism.current_actor), cls.__qualname__, _methods_of(cls), bool(_actor_groups))


def _exit_actor(e):
    """The actor asked to end (exit_actor() or sys.exit()): it dies for good, as in Ray (an
    intended exit is not restarted); its calls then fail with RayActorError."""
    sys.stdout.flush()
    sys.stderr.flush()
    if isinstance(e, ActorExit):
        reason = "it exited by calling exit_actor()"
    else:
        reason = f"it exited by calling sys.exit({e.code!r})"
    _prism.exit_actor(reason)


class ActorExit(SystemExit):
    """Raised by prism.actor.exit_actor() inside an actor."""


def execute_task(kind, descriptor, arg_views, streaming, completion=None, num_returns=1, task_id=""):
    """Runs one Python task, actor creation or actor method for the worker loop: ("ok", size,
    parts, handles), ("ok_multi", [(size, parts, handles), ...]) for num_returns > 1, ("error",
    type, message, pickled exception), or ("deferred",) when the call answers later through
    `completion`."""
    global _actor
    import asyncio
    try:
        if kind == "method":
            call_ = _parse_call(descriptor, len("py:m:"))
            args, kwargs = call_.args(arg_views)
            if _actor is None:
                raise RuntimeError("this worker hosts no Python actor")
            if call_.target == "__ray_ready__":
                return _results(True, 1)
            if call_.target == "__ray_terminate__":
                _exit_actor(ActorExit())
            fn = getattr(_actor, call_.target)
        else:
            call_ = _parse_call(descriptor, len("py:"))
            args, kwargs = call_.args(arg_views)
            fn = _load_function(call_.target)
    except _prism.ObjectLostError as e:  # a device object argument went with its producer
        return ("lost", str(e))
    except Exception as e:  # the call could not even start: report it as its error
        return _error(e)
    tokens = _enter_call(call_, task_id)
    try:
        if kind == "create":
            _actor = fn(*args, **kwargs)
            _prism.set_actor_label(type(_actor).__name__)
            _actor_running.update(_running_of(tokens))  # its calls inherit its placement group and environment
            threading.Thread(target=_cancel_calls, name="prism-actor-cancel", daemon=True).start()
            concurrency = call_.params.get("c")
            if concurrency:
                _start_actor_loop(int(concurrency))
            groups = call_.params.get("q")
            if groups:
                spec = _load_value(groups)
                _actor_methods_groups.update(spec["methods"])
                _start_groups(spec["groups"], bool(concurrency))
            result = True
        elif streaming:
            for value in fn(*args, **kwargs):
                size, parts, nested = serialization.serialize(value)
                _prism.stream_write(size, parts, nested)
            result = None
        elif "d" in call_.params:
            from prism.remote_function import DynamicObjectRefGenerator
            result = DynamicObjectRefGenerator([put(v) for v in fn(*args, **kwargs)])
        elif kind == "method" and completion is not None and (
                _actor_loop is not None and asyncio.iscoroutinefunction(fn) or _actor_groups and _actor_loop is None):
            group = call_.params.get("k") or _actor_methods_groups.get(call_.target)
            if _actor_loop is not None:
                slots = _actor_groups.get(group, _actor_slots) if group else _actor_slots
                _answer_later(fn(*args, **kwargs), completion, num_returns, slots, task_id, call_)
                return ("deferred",)
            group = group or "_default"
            if group not in _actor_groups:
                raise ValueError(f"the actor has no concurrency group {group!r}")

            def run_in_group():
                group_tokens = _enter_call(call_, task_id)
                try:
                    outcome = _results(fn(*args, **kwargs), num_returns)
                except SystemExit as e:
                    _exit_actor(e)
                except BaseException as e:  # noqa: B902 - every failure answers the call
                    outcome = _error(e)
                finally:
                    _leave_call(group_tokens)
                _finish(completion, outcome)

            _actor_groups[group].submit(run_in_group)
            return ("deferred",)
        elif kind == "task":
            result = _run_with_retries(call_, fn, args, kwargs)
        else:
            result = fn(*args, **kwargs)
    except SystemExit as e:
        if kind != "task":
            _exit_actor(e)  # does not return
        return _error(RuntimeError(f"the task called sys.exit({e.code!r})"))
    except Exception as e:
        return _error(e)
    finally:
        _leave_call(tokens)
    if kind == "task" and descriptor.startswith("py:@"):
        # Called from C++: the result goes back as msgpack, which C++ can read.
        import msgpack
        try:
            data = msgpack.packb(result, use_bin_type=True)
        except Exception as e:
            return _error(TypeError(f"the result of {descriptor[4:]} cannot go back to C++ as msgpack: {e}"))
        return ("ok", len(data), [(0, data)], [])
    return _results(result, num_returns)


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
    from prism import runtime_env
    runtime_env.enter_working_dir()
    # Lines reach the driver as they are printed.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _prism.run_worker(execute_task)
