"""@prism.remote on classes: actors, their handles and method calls."""

import asyncio
import inspect

import cloudpickle

from prism import _prism
from prism._private import worker
from prism.object_ref import ObjectRef
from prism.remote_function import _ListedRefGenerator, pack_args, submit_options

_ACTOR_OPTIONS = {
    "num_cpus", "num_gpus", "memory", "resources", "name", "lifetime", "max_restarts",
    "max_task_retries", "max_concurrency", "runtime_env", "scheduling_strategy", "namespace",
    "get_if_exists", "concurrency_groups", "label_selector", "_metadata",
}


def method(*args, num_returns=None, concurrency_group=None):
    """Options of one actor method, as Ray's ``@ray.method(num_returns=2,
    concurrency_group="io")``."""
    if args:
        raise TypeError("@prism.method takes only keyword options: @prism.method(num_returns=2)")
    if num_returns is not None and num_returns not in ("streaming", "dynamic") and not (
            isinstance(num_returns, int) and not isinstance(num_returns, bool) and num_returns >= 0):
        raise ValueError(f'num_returns must be a whole number >= 0, "streaming" or "dynamic", not {num_returns!r}')

    def decorate(fn):
        if num_returns is not None:
            fn.__ray_num_returns__ = num_returns
        if concurrency_group is not None:
            fn.__ray_concurrency_group__ = concurrency_group
        return fn

    return decorate


def _group_name_ok(name):
    return isinstance(name, str) and name != "" and name != "_default" and all(
        c.isalnum() or c in "_-." for c in name)


def _methods_of(cls):
    """The callable methods of cls: name -> (num_returns, concurrency group, is a generator)."""
    out = {}
    for name, member in inspect.getmembers(cls):
        if callable(member) and not (name.startswith("__") and name.endswith("__")):
            out[name] = (getattr(member, "__ray_num_returns__", None), getattr(member, "__ray_concurrency_group__", None),
                         inspect.isgeneratorfunction(member))
    return out


def _is_async(cls):
    return any(asyncio.iscoroutinefunction(m) for _, m in inspect.getmembers(cls))


class ActorClass:
    """A class made remote by @prism.remote: ``Cls.remote(*args)`` starts an actor."""

    def __init__(self, cls, options=None):
        self._cls = cls
        self._options = dict(options or {})
        for k in self._options:
            if k not in _ACTOR_OPTIONS:
                raise ValueError(f"unknown actor option '{k}' (known: {', '.join(sorted(_ACTOR_OPTIONS))})")
        lifetime = self._options.get("lifetime")
        if lifetime not in (None, "detached", "non_detached"):
            raise ValueError("lifetime must be None, 'detached' or 'non_detached'")
        groups = self._options.get("concurrency_groups")
        if groups is not None:
            if not isinstance(groups, dict) or not all(
                    _group_name_ok(k) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
                    for k, v in groups.items()):
                raise ValueError("concurrency_groups must map group names (letters, digits, '_', '-', '.') to how "
                                 "many calls each runs at once (>= 1)")
        namespace = self._options.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace or "\0" in namespace):
            raise ValueError("namespace must be a non-empty string without NUL characters")
        if self._options.get("runtime_env") is not None:
            from prism import runtime_env
            runtime_env.check(self._options["runtime_env"], ".options()")
        self._pickled = None
        self._key = None
        self._generation = None
        self._methods = _methods_of(cls)
        self._async = _is_async(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
                        f"use '{self.__name__}.remote()'.")

    def options(self, **options):
        merged = dict(self._options)
        merged.update(options)
        clone = ActorClass(self._cls, merged)
        clone._pickled, clone._key, clone._generation = self._pickled, self._key, self._generation
        return clone

    def bind(self, *args, **kwargs):
        """A node of a DAG that creates this actor (``prism.dag``); its methods bind in turn."""
        from prism.dag import ClassNode
        return ClassNode(self, args, kwargs)

    def _descriptor(self):
        if self._pickled is None:
            try:
                self._pickled = cloudpickle.dumps(self._cls, protocol=5)
            except Exception as e:
                raise TypeError(f"cannot pickle actor class {self.__qualname__}: {e}") from e
        if self._generation != worker.generation:
            self._key = worker.export_function(self._pickled)
            self._generation = worker.generation
        return "py:" + self._key

    def remote(self, *args, **kwargs):
        worker._check_initialized()
        o = self._options
        namespace = o.get("namespace") or worker.job_config()["namespace"]
        if o.get("get_if_exists") and o.get("name"):
            try:
                return get_actor(o["name"], namespace=namespace)
            except ValueError:
                pass
        descriptor = self._descriptor()
        try:
            inspect.signature(self._cls).bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.__qualname__}: {e}") from None
        except ValueError:
            pass
        packed, kwnames = pack_args(self.__qualname__, args, kwargs)
        if self._async:
            # Its calls run on its event loop (at most this many at once, 1000 by default as in
            # Ray); one thread hands them over.
            descriptor += f";c={int(o.get('max_concurrency') or 1000)}"
        groups = o.get("concurrency_groups")
        used = {g for _, g, _ in self._methods.values() if g is not None}
        unknown = sorted(used - set(groups or {}))
        if unknown:
            raise ValueError(f"methods of {self.__qualname__} name concurrency group(s) {', '.join(unknown)}, "
                             "which concurrency_groups does not define")
        if groups:
            # Each group runs apart from the others (and from the default group, of
            # max_concurrency calls).
            default = int(o.get("max_concurrency") or (1000 if self._async else 1))
            spec = {"groups": {**groups, "_default": default},
                    "methods": {m: g for m, (_, g, _) in self._methods.items() if g is not None}}
            descriptor += ";q=" + worker.export_value(spec)
        params, core = submit_options(o)
        descriptor += params
        if kwnames:
            descriptor += "|" + ",".join(kwnames)
        core.setdefault("name", o.get("name") or "")
        core["namespace"] = namespace
        core["detached"] = o.get("lifetime") == "detached"
        for k in ("max_restarts", "max_task_retries"):
            if o.get(k) is not None:
                core[k] = int(o[k])
        if groups:
            # One thread of the core hands each call over to its group's threads (or the event loop).
            core["max_concurrency"] = 1
        else:
            core["max_concurrency"] = 1 if self._async else int(o.get("max_concurrency") or 1)
        core.setdefault("num_cpus", 0)
        ref = worker.call(_prism.create_actor, descriptor, packed, core)
        if o.get("name"):
            # A handle found by name (get_actor) knows the methods' options too.
            worker.call(_prism.kv_put, "actor_methods", ref.id,
                        cloudpickle.dumps((self.__qualname__, self._methods, bool(groups))), True)
        return ActorHandle(ref, self.__qualname__, self._methods, bool(groups))


class ActorMethod:
    """A method of an actor: ``handle.method.remote(...)``, ``handle.method.options(
    num_returns=2, concurrency_group="io").remote(...)``."""

    def __init__(self, handle, name, options=None):
        self._handle = handle
        self._name = name
        self._options = dict(options or {})
        self._plan = None  # (descriptor, num_returns): the same for every call, made at the first

    def options(self, **options):
        unknown = sorted(set(options) - {"num_returns", "concurrency_group"})
        if unknown:
            raise ValueError(f"unknown actor method option(s) {', '.join(unknown)} "
                             "(known: num_returns, concurrency_group)")
        return ActorMethod(self._handle, self._name, {**self._options, **options})

    def _make_plan(self):
        declared = (self._handle._methods or {}).get(self._name, (None, None, False))
        num_returns = self._options.get("num_returns", declared[0])
        group = self._options.get("concurrency_group", declared[1])
        is_generator = declared[2]
        if num_returns is None:
            num_returns = "streaming" if is_generator else 1
        method = "py:m:" + self._name
        if group is not None:
            if not _group_name_ok(group):
                raise ValueError(f"concurrency_group must be a group's name, not {group!r}")
            if not self._handle._has_groups:
                raise ValueError(f"concurrency_group={group!r}: actor {self._handle._class_name} has no "
                                 "concurrency groups")
            method += f";k={group}"
        if num_returns in ("streaming", "dynamic"):
            # Actor calls do not stream in this version: the values come as one dynamic result.
            method += ";d"
        self._plan = (method, num_returns)
        return self._plan

    def remote(self, *args, **kwargs):
        method, num_returns = self._plan or self._make_plan()
        if args or kwargs:
            packed, kwnames = pack_args(f"{self._handle._class_name}.{self._name}", args, kwargs)
            if kwnames:
                method += "|" + ",".join(kwnames)
        else:
            packed = []
        if num_returns == 1:
            return ObjectRef(worker.call(_prism.submit_actor_task, self._handle._ref, method, packed), actor_call=True)
        if isinstance(num_returns, int) and num_returns > 1:
            handles = worker.call(_prism.submit_actor_task_returns, self._handle._ref, method, packed, num_returns)
            return [ObjectRef(h, actor_call=True) for h in handles]
        ref = ObjectRef(worker.call(_prism.submit_actor_task, self._handle._ref, method, packed), actor_call=True)
        if num_returns == "streaming":
            return _ListedRefGenerator(ref)
        return None if num_returns == 0 else ref

    def bind(self, *args, **kwargs):
        """A node of a DAG that calls this method of a live actor (``prism.dag``)."""
        from prism.dag import ClassMethodNode
        return ClassMethodNode(self._handle, self._name, args, kwargs)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'{self._name}()', try '{self._name}.remote()'.")


def _rebuild_handle(actor_id, lifetime, class_name, methods, has_groups=False):
    return ActorHandle(_prism.make_actor_ref(actor_id, lifetime._handle), class_name, methods, has_groups)


class ActorHandle:
    """A handle to an actor. Handles can be passed to tasks and other actors; an actor that is
    not detached lives while a handle to it exists anywhere."""

    def __init__(self, ref, class_name, methods=None, has_groups=False):
        self._ref = ref
        self._class_name = class_name
        self._methods = dict(methods) if methods is not None else None
        self._has_groups = has_groups

    def __getattr__(self, name):
        if name in ("__ray_ready__", "__ray_terminate__"):
            return ActorMethod(self, name)  # ready once the actor is; ends it (as Ray's)
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        if self._methods is not None and name not in self._methods:
            raise AttributeError(f"actor class {self._class_name} has no method '{name}'")
        method = ActorMethod(self, name)
        self.__dict__[name] = method  # the next lookup finds it here, without __getattr__
        return method

    def __repr__(self):
        return f"Actor({self._class_name}, {self._ref.id.hex()})"

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._ref.id == self._ref.id

    def __hash__(self):
        return hash(self._ref.id)

    def __reduce__(self):
        lifetime = ObjectRef(self._ref.lifetime)
        return _rebuild_handle, (self._ref.id, lifetime, self._class_name,
                                 None if self._methods is None else dict(self._methods), self._has_groups)


def get_actor(name, namespace=None):
    """The live actor named `name` in `namespace` (default: this job's); raises ValueError when
    there is none."""
    worker._check_initialized()
    if not isinstance(name, str) or not name:
        raise ValueError("get_actor() takes the actor's name, a non-empty string")
    ns = namespace if namespace is not None else worker.job_config()["namespace"]
    ref = worker.call(_prism.get_actor, name, ns)
    known = worker.call(_prism.kv_get, "actor_methods", ref.id)
    if known is not None:
        class_name, methods, has_groups = cloudpickle.loads(bytes(known))
        return ActorHandle(ref, class_name, methods, has_groups)
    return ActorHandle(ref, name, None, True)  # (created by another language, or before)


def kill(actor, *, no_restart=True):
    """Kills the actor's process; returns once it is dead. Calls then fail with RayActorError."""
    worker._check_initialized()
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an actor handle, not a {type(actor).__name__}")
    worker.call(_prism.kill_actor, actor._ref.id, bool(no_restart))


def exit_actor():
    """Ends the actor this runs in, for good (an intended exit is not restarted, as in Ray):
    the call that made it and later ones fail with RayActorError. Only inside an actor."""
    from prism import _prism as native
    from prism._private import execution
    if not native.is_worker_process() or execution._actor is None:
        raise TypeError("exit_actor() is called inside an actor only")
    raise execution.ActorExit(0)
