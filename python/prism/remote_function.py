"""@prism.remote on functions: RemoteFunction with .remote() and .options()."""

import inspect

import cloudpickle

from prism import _prism
from prism._private import serialization
from prism._private import execution
from prism._private import worker
from prism.object_ref import ObjectRef

# Options a task accepts, as in Ray's .options(); values are checked by the core.
_TASK_OPTIONS = {
    "num_cpus", "num_gpus", "memory", "resources", "max_retries", "name", "runtime_env",
    "scheduling_strategy", "num_returns", "retry_exceptions", "label_selector", "_metadata",
}


def _check_options(options):
    for k in options:
        if k not in _TASK_OPTIONS:
            raise ValueError(f"unknown task option '{k}' (known: {', '.join(sorted(_TASK_OPTIONS - {'_metadata'}))})")
    n = options.get("num_returns")
    if n is not None and n not in ("streaming", "dynamic") and not (isinstance(n, int) and not isinstance(n, bool)
                                                                    and n >= 0):
        raise ValueError(f'num_returns must be a whole number >= 0, "streaming" or "dynamic", not {n!r}')
    retry = options.get("retry_exceptions")
    if retry is not None and not isinstance(retry, bool):
        if not isinstance(retry, (list, tuple)) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in retry):
            raise TypeError("retry_exceptions must be a bool or a list of exception types")
    if options.get("runtime_env") is not None:
        from prism import runtime_env
        runtime_env.check(options["runtime_env"], ".options()")


def prepared_runtime_env(options):
    """The runtime environment of a task or actor with these options: its own laid over the one
    it inherits (its parent task's, else its job's), working_dir copied into the session once."""
    from prism import runtime_env
    inherited = execution.inherited_runtime_env()
    if inherited is None:
        inherited = worker.job_config().get("runtime_env") or {}
    own = options.get("runtime_env")
    if own:
        own = runtime_env.prepare(runtime_env.check(own, ".options()"), worker.session_dir())
    return runtime_env.merge(inherited, own)


def _strategy_of(options):
    """The options' scheduling strategy, else the one the running task passes on to its children."""
    strategy = options.get("scheduling_strategy")
    return execution.captured_placement_group() if strategy is None else strategy


def submit_options(options):
    """What a submission with these options passes: (the descriptor's parameters, the core's
    options). The runtime environment is prepared once for both (it may copy a working_dir)."""
    from prism import runtime_env
    strategy = _strategy_of(options)
    env = prepared_runtime_env(options)
    return _descriptor_params(options, strategy, env), _core_options(options, strategy, runtime_env.worker_env(env))


def core_options(options):
    """The core's options alone (a call to another language's function, whose worker reads no
    descriptor parameters)."""
    from prism import runtime_env
    strategy = _strategy_of(options)
    return _core_options(options, strategy, runtime_env.worker_env(prepared_runtime_env(options)))


def _core_options(options, strategy, env_vars):
    out = {}
    for k in ("num_cpus", "num_gpus", "memory", "resources", "max_retries", "name"):
        if options.get(k) is not None:
            out[k] = options[k]
    if env_vars:
        out["env"] = env_vars
    selector = options.get("label_selector")
    if selector:
        if not isinstance(selector, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in selector.items()):
            raise TypeError("label_selector must be a dict of label name -> value (str), e.g. "
                            "{\"zone\": \"us-west\"}, {\"gpu\": \"!a100\"}, {\"tier\": \"in(a,b)\"}")
        out["label_selector"] = dict(selector)
    if strategy is not None:
        from prism.util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                                      PlacementGroupSchedulingStrategy)
        if isinstance(strategy, PlacementGroupSchedulingStrategy):
            pg = strategy.placement_group
            out["placement_group"] = pg.id
            out["placement_group_bundles"] = pg.bundle_specs
            out["placement_group_bundle_index"] = strategy.placement_group_bundle_index
        elif isinstance(strategy, NodeAffinitySchedulingStrategy):
            out["node_affinity"] = strategy.node_id
            out["node_affinity_soft"] = strategy.soft
        elif strategy in ("DEFAULT", "SPREAD"):
            out["scheduling_strategy"] = strategy
        else:
            raise ValueError("scheduling_strategy must be 'DEFAULT', 'SPREAD', a PlacementGroupSchedulingStrategy "
                             "or a NodeAffinitySchedulingStrategy")
    return out


def _descriptor_params(options, strategy, env):
    """What the worker must know of a call's options, appended to its descriptor: the
    placement group it runs in and the one its children go to (placement_group_capture_child_tasks),
    the runtime environment its children inherit, how it retries exceptions, whether it returns
    a dynamic generator."""
    params = ""
    from prism.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        params += f";p={strategy.placement_group.id}"
        if strategy.placement_group_capture_child_tasks:
            # Its children go into the same group, in any bundle (as in Ray).
            params += ";g=" + worker.export_value(
                PlacementGroupSchedulingStrategy(strategy.placement_group, -1, True))
    if env != (worker.job_config().get("runtime_env") or {}):
        params += ";e=" + worker.export_value(env)  # what its children inherit
    retry = options.get("retry_exceptions")
    if retry:
        retries = options.get("max_retries")
        retries = 3 if retries is None else int(retries)
        if retries != 0:
            params += f";r={retries}:" + ("*" if retry is True else worker.export_value(tuple(retry)))
    if options.get("num_returns") == "dynamic":
        params += ";d"
    return params


class ObjectRefGenerator:
    """The refs of a streaming task's values (generator functions stream by default, as in Ray
    2.x), in the order it yielded them, each available as soon as it was yielded. If the task
    raised, the ref after its last value holds the error. Iterate it with ``for`` or, in async
    code, ``async for``."""

    def __init__(self, handle):
        self._stream = handle
        self._finished = False

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
            self._finished = True
            raise StopIteration
        return ObjectRef(handle)

    def __aiter__(self):
        return self

    async def __anext__(self):
        import asyncio

        def next_or_none():
            try:
                return self._next(-1)
            except StopIteration:  # (cannot cross into a future)
                return None

        # The wait for the next value blocks a thread, not the event loop.
        ref = await asyncio.get_running_loop().run_in_executor(None, next_or_none)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def is_finished(self):
        """True once every value was taken and the task ended."""
        return self._finished

    def completed(self):
        """The task's own return object, ready once it ended (``prism.cancel`` it to stop it)."""
        return ObjectRef(self._stream.completion())


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task: the refs of the values its generator
    yielded, in order (``for ref in prism.get(ref): ...``)."""

    def __init__(self, refs):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self):
        return len(self._refs)

    def __repr__(self):
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


class _ListedRefGenerator:
    """A generator method of an actor (actor calls do not stream in this version): the refs of
    the values it yielded, iterable like an ObjectRefGenerator once the call returned them."""

    def __init__(self, dynamic_ref):
        self._ref = dynamic_ref
        self._refs = None

    def _load(self):
        if self._refs is None:
            self._refs = iter(worker.get(self._ref))
        return self._refs

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._load())

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._refs is None:
            generator = await self._ref
            self._refs = iter(generator)
        try:
            return next(self._refs)
        except StopIteration:
            raise StopAsyncIteration from None

    def completed(self):
        return self._ref


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
        self._submit_options = None  # (generation, descriptor params, core options)
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

    def bind(self, *args, **kwargs):
        """A node of a DAG that calls this function (``prism.dag``); ``dag.execute()`` runs it."""
        from prism.dag import FunctionNode
        return FunctionNode(self, args, kwargs)

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
        num_returns = self._options.get("num_returns")
        is_generator = inspect.isgeneratorfunction(self._function)
        if num_returns is None:
            num_returns = "streaming" if is_generator else 1  # generators stream by default, as in Ray 2.x
        if num_returns in ("streaming", "dynamic") and not is_generator:
            raise TypeError(f"{self.__qualname__} is not a generator function: num_returns={num_returns!r} "
                            "needs one that yields its values")
        # What the options come to is the same for every call of this function in this cluster,
        # unless the caller's task passes its placement group on to its children.
        captured = execution.captured_placement_group() or execution.inherited_runtime_env()
        cached = self._submit_options
        if cached is not None and captured is None and cached[0] == worker.generation:
            params, options = cached[1], cached[2]
        else:
            params, options = submit_options(self._options)
            options.setdefault("name", self.__qualname__)
            if captured is None:
                self._submit_options = (worker.generation, params, options)
        descriptor += params
        packed, kwnames = pack_args(self.__qualname__, args, kwargs)
        if kwnames:
            descriptor += "|" + ",".join(kwnames)
        if num_returns == "streaming":
            return ObjectRefGenerator(worker.call(_prism.submit_streaming_task, descriptor, packed, options))
        if isinstance(num_returns, int) and num_returns > 1:
            handles = worker.call(_prism.submit_task_returns, descriptor, packed, options, num_returns)
            return [ObjectRef(h) for h in handles]
        ref = ObjectRef(worker.call(_prism.submit_task, descriptor, packed, options))
        return None if num_returns == 0 else ref
