"""The process-wide state of the Python API: init, get, put, wait, the cluster's resources, and
exporting functions to workers. What runs in worker processes is in execution.py."""

import atexit
import hashlib
import itertools
import json
import operator
import os
import sys
import threading
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
         _object_store_prefault=False, **kwargs):
    """Starts an embedded cluster (or joins one: ``address="auto"``, a cluster's ``"IP:PORT"``,
    which takes this machine's node of that cluster, or a session folder) and
    returns a RayContext. Ray's arguments: ``namespace`` (named actors are found only in their
    namespace; by default each job gets an anonymous one), ``runtime_env`` (``env_vars`` and
    ``working_dir``, for every task and actor of the job), ``log_to_driver``,
    ``ignore_reinit_error``; dashboard arguments are taken and have no effect (prism serves no
    dashboard yet). ``_object_store_prefault=True`` allocates the whole object store at start
    (``prism start --object-store-prefault``): no put waits for fresh pages, and the memory is
    taken for good."""
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
            raise TypeError("address must be a string: 'local', 'auto', a cluster's 'IP:PORT' or a session folder")
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
                 list(worker_launch_prefix or []), bool(_object_store_prefault))
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
        _context = RayContext(_address_info(node, ids, call(_prism.nodes)))
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        return _context


def _address_info(node, ids, nodes):
    ip = _node_ip(node)
    session = node["SessionDir"]
    # A cluster's address is its head's cluster port; an embedded single node has none: its folder.
    heads = [n for n in nodes if n["IsHead"] and n["Port"]]
    cluster = f"{heads[0]['Address']}:{heads[0]['Port']}" if heads else session
    return {
        "node_ip_address": ip,
        "raylet_ip_address": ip,
        "address": cluster,
        "gcs_address": cluster,
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
    resources node:<ip> (and node:__internal_head__ on the head)."""
    out = {k: float(v) for k, v in n[key].items()}
    used = n["ObjectStoreUsed"] if key == "Available" else 0
    out["object_store_memory"] = float(n["ObjectStoreCapacity"] - used)
    out["node:" + _node_ip(n)] = 1.0
    if n["IsHead"]:
        out["node:__internal_head__"] = 1.0
    return out


def _node_ip(n):
    """The address other machines reach a node at; for an embedded single node (which listens on
    no network), this machine's."""
    return n["Address"] if n["Port"] else node_ip_address()


def cluster_resources():
    """The cluster's total resources, as Ray's: {"CPU": 2.0, "memory": ..., "object_store_memory": ...,
    "node:<ip>": 1.0, "node:__internal_head__": 1.0, "GPU": ..., custom ones}."""
    _check_initialized()
    total = {}
    for n in call(_prism.nodes):
        if not n["Alive"]:
            continue
        for k, v in _node_view(n, "Resources").items():
            total[k] = total.get(k, 0.0) + v
    return total


def available_resources():
    """What is free now, shaped as cluster_resources(); resources with nothing free are left out,
    as in Ray."""
    _check_initialized()
    free = {}
    for n in call(_prism.nodes):
        if not n["Alive"]:
            continue
        for k, v in _node_view(n, "Available").items():
            if v > 0:
                free[k] = free.get(k, 0.0) + v
    return free


def nodes():
    """The cluster's nodes (this process's node first, then the others as its node last heard from
    the head, the dead included), with Ray's keys."""
    _check_initialized()
    out = []
    for n in call(_prism.nodes):
        ip = _node_ip(n)
        sock = os.path.join(n["SessionDir"], "daemon.sock")
        alive = n["Alive"]
        entry = {"NodeID": n["NodeID"], "Alive": alive, "alive": alive, "NodeManagerAddress": ip,
                 "NodeManagerHostname": n["Hostname"], "NodeName": ip, "NodeManagerPort": n["Port"],
                 "ObjectManagerPort": n["Port"], "ObjectStoreSocketName": sock, "RayletSocketName": sock,
                 "MetricsExportPort": 0, "Labels": dict(n["Labels"]), "IsHead": n["IsHead"],
                 "Resources": _node_view(n, "Resources") if alive else {}, "SessionDir": n["SessionDir"]}
        if not alive:
            entry["DeathReason"] = n["DeathCause"]
        out.append(entry)
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
