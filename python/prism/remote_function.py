"""@prism.remote on functions: RemoteFunction with .remote() and .options()."""

import inspect

import cloudpickle

from prism import _prism
from prism._private import serialization
from prism._private import worker
from prism.object_ref import ObjectRef

# Options a task accepts, as in Ray's .options(); values are checked by the core.
_TASK_OPTIONS = {
    "num_cpus", "num_gpus", "memory", "resources", "max_retries", "name", "runtime_env",
    "scheduling_strategy", "num_returns", "retry_exceptions",
}


def _check_options(options):
    for k in options:
        if k not in _TASK_OPTIONS:
            raise ValueError(f"unknown task option '{k}' (known: {', '.join(sorted(_TASK_OPTIONS))})")
    if options.get("num_returns", 1) not in (1, "streaming"):
        raise ValueError("num_returns must be 1 or \"streaming\" in this version")
    if options.get("retry_exceptions"):
        raise ValueError("retry_exceptions is not supported in this version")
    runtime_env = options.get("runtime_env") or {}
    unknown = set(runtime_env) - {"env_vars"}
    if unknown:
        raise ValueError(f"runtime_env supports only env_vars in this version, not {sorted(unknown)}")


def _core_options(options):
    out = {}
    for k in ("num_cpus", "num_gpus", "memory", "resources", "max_retries", "name"):
        if options.get(k) is not None:
            out[k] = options[k]
    env = (options.get("runtime_env") or {}).get("env_vars")
    if env:
        out["env"] = {str(k): str(v) for k, v in env.items()}
    strategy = options.get("scheduling_strategy")
    if strategy is not None:
        from prism.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        if isinstance(strategy, PlacementGroupSchedulingStrategy):
            pg = strategy.placement_group
            out["placement_group"] = pg.id
            out["placement_group_bundles"] = pg.bundle_specs
            out["placement_group_bundle_index"] = strategy.placement_group_bundle_index
        elif strategy in ("DEFAULT", "SPREAD"):
            out["scheduling_strategy"] = strategy
        else:
            raise ValueError("scheduling_strategy must be 'DEFAULT', 'SPREAD' or a PlacementGroupSchedulingStrategy")
    return out


class ObjectRefGenerator:
    """The refs of a streaming task's values (num_returns="streaming"), in the order it yielded
    them, each available as soon as it was yielded. If the task raised, the ref after its last
    value holds the error."""

    def __init__(self, handle):
        self._stream = handle

    def __iter__(self):
        return self

    def __next__(self):
        return self._next(-1)

    def next(self, timeout=None):
        """The next ref; raises GetTimeoutError once `timeout` seconds passed without one."""
        return self._next(worker._timeout_ms(timeout))

    def _next(self, timeout_ms):
        handle = worker.call(self._stream.next, timeout_ms)
        if handle is None:
            raise StopIteration
        return ObjectRef(handle)

    def completed(self):
        """The task's own return object, ready once it ended (``prism.cancel`` it to stop it)."""
        return ObjectRef(self._stream.completion())


def pack_args(qualname, args, kwargs):
    """Encodes a call's arguments: ([packed], keyword names)."""
    try:
        packed = [_pack_arg(a) for a in args] + [_pack_arg(v) for v in kwargs.values()]
    except Exception as e:
        raise TypeError(f"cannot pickle an argument of {qualname}: {e}") from e
    return packed, list(kwargs)


def _pack_arg(value):
    if isinstance(value, ObjectRef):
        return ("ref", value._handle)  # resolved to its value before the task runs
    size, parts, nested = serialization.serialize(value)
    return ("value", size, parts, nested)


class RemoteFunction:
    """A function made remote by @prism.remote. Call ``f.remote(*args)``, not ``f(*args)``."""

    def __init__(self, function, options=None):
        if not callable(function):
            raise TypeError("@prism.remote takes a function or a class")
        self._function = function
        self._options = dict(options or {})
        _check_options(self._options)
        self._pickled = None
        self._key = None
        self._exported_generation = None
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__doc__ = getattr(function, "__doc__", None)
        self.__wrapped__ = function

    def __call__(self, *args, **kwargs):
        module = getattr(self._function, "__module__", "__main__")
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running '{module}.{self.__name__}()', "
            f"try '{module}.{self.__name__}.remote()'.")

    def options(self, **options):
        """A copy with these options changed (num_cpus, num_gpus, memory, resources, max_retries,
        name, runtime_env={"env_vars": {...}}, scheduling_strategy)."""
        merged = dict(self._options)
        merged.update(options)
        clone = RemoteFunction(self._function, merged)
        clone._pickled, clone._key, clone._exported_generation = self._pickled, self._key, self._exported_generation
        return clone

    def _descriptor(self):
        if self._pickled is None:
            try:
                self._pickled = cloudpickle.dumps(self._function, protocol=5)
            except Exception as e:
                raise TypeError(f"cannot pickle remote function {self.__qualname__}: {e}") from e
        if self._exported_generation != worker.generation:
            self._key = worker.export_function(self._pickled)
            self._exported_generation = worker.generation
        return "py:" + self._key

    def remote(self, *args, **kwargs):
        worker._check_initialized()
        descriptor = self._descriptor()
        try:
            inspect.signature(self._function).bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.__qualname__}: {e}") from None
        except ValueError:
            pass  # no signature (builtins): the call itself will tell
        packed, kwnames = pack_args(self.__qualname__, args, kwargs)
        if kwnames:
            descriptor += "|" + ",".join(kwnames)
        options = _core_options(self._options)
        options.setdefault("name", self.__qualname__)
        if self._options.get("num_returns") == "streaming":
            if not inspect.isgeneratorfunction(self._function):
                raise TypeError(f"{self.__qualname__} is not a generator function: num_returns=\"streaming\" "
                                "needs one that yields its values")
            return ObjectRefGenerator(worker.call(_prism.submit_streaming_task, descriptor, packed, options))
        return ObjectRef(worker.call(_prism.submit_task, descriptor, packed, options))
