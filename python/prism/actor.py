"""@prism.remote on classes: actors, their handles and method calls."""

import asyncio
import inspect

import cloudpickle

from prism import _prism
from prism._private import worker
from prism.object_ref import ObjectRef
from prism.remote_function import _core_options, pack_args

_ACTOR_OPTIONS = {
    "num_cpus", "num_gpus", "memory", "resources", "name", "lifetime", "max_restarts",
    "max_task_retries", "max_concurrency", "runtime_env", "scheduling_strategy", "namespace",
    "get_if_exists",
}


def _methods_of(cls):
    names = set()
    for name, member in inspect.getmembers(cls):
        if callable(member) and not (name.startswith("__") and name.endswith("__")):
            names.add(name)
    return names


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
        if o.get("get_if_exists") and o.get("name"):
            try:
                return get_actor(o["name"])
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
        if kwnames:
            descriptor += "|" + ",".join(kwnames)
        core = _core_options(o)
        core.setdefault("name", o.get("name") or "")
        core["detached"] = o.get("lifetime") == "detached"
        for k in ("max_restarts", "max_task_retries"):
            if o.get(k) is not None:
                core[k] = int(o[k])
        core["max_concurrency"] = 1 if self._async else int(o.get("max_concurrency") or 1)
        core.setdefault("num_cpus", 0)
        ref = worker.call(_prism.create_actor, descriptor, packed, core)
        return ActorHandle(ref, self.__qualname__, self._methods)


class ActorMethod:
    def __init__(self, handle, name):
        self._handle = handle
        self._name = name

    def remote(self, *args, **kwargs):
        packed, kwnames = pack_args(f"{self._handle._class_name}.{self._name}", args, kwargs)
        method = "py:m:" + self._name + ("|" + ",".join(kwnames) if kwnames else "")
        return ObjectRef(worker.call(_prism.submit_actor_task, self._handle._ref, method, packed))

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'{self._name}()', try '{self._name}.remote()'.")


def _rebuild_handle(actor_id, lifetime, class_name, methods):
    return ActorHandle(_prism.make_actor_ref(actor_id, lifetime._handle), class_name, methods)


class ActorHandle:
    """A handle to an actor. Handles can be passed to tasks and other actors; an actor that is
    not detached lives while a handle to it exists anywhere."""

    def __init__(self, ref, class_name, methods=None):
        self._ref = ref
        self._class_name = class_name
        self._methods = set(methods) if methods is not None else None

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        if self._methods is not None and name not in self._methods:
            raise AttributeError(f"actor class {self._class_name} has no method '{name}'")
        return ActorMethod(self, name)

    def __repr__(self):
        return f"Actor({self._class_name}, {self._ref.id.hex()})"

    def __reduce__(self):
        lifetime = ObjectRef(self._ref.lifetime)
        return _rebuild_handle, (self._ref.id, lifetime, self._class_name,
                                 None if self._methods is None else sorted(self._methods))


def get_actor(name, namespace=None):
    """The live actor named `name`; raises ValueError when there is none."""
    worker._check_initialized()
    ref = worker.call(_prism.get_actor, name)
    return ActorHandle(ref, name, None)


def kill(actor, *, no_restart=True):
    """Kills the actor's process; returns once it is dead. Calls then fail with RayActorError."""
    worker._check_initialized()
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an actor handle, not a {type(actor).__name__}")
    worker.call(_prism.kill_actor, actor._ref.id, bool(no_restart))
