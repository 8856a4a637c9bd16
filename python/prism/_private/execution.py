"""The worker side of the Python API: running Python tasks, actor creations and actor calls in
a worker process (the core worker's foreign executor), and what a running call passes on to the
tasks it starts (its placement group, runtime environment, task id)."""

import collections
import contextvars
import inspect
import json
import os
import sys
import threading
import traceback
import types

import cloudpickle

from prism import _prism
from prism._private import serialization
from prism._private.worker import call, put

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
_async_calls = {}  # task id -> the running async call's asyncio task (for cancel)


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
    elif outcome[0] == "lost":
        completion.lost(outcome[1])
    else:
        completion.error(*outcome[1:4])


def _answer_later(coroutine, completion, num_returns, slots, task_id, call_):
    """Runs an async method on the actor's loop; its result (or error) answers the call then.
    (For a coroutine method routing did not see: the class's own come by _start_routed_calls.)"""
    _actor_loop.call_soon_threadsafe(_async_start(coroutine, completion, num_returns, slots, task_id, call_))


def _async_start(coroutine, completion, num_returns, slots, task_id, call_):
    """What starts an async call on the actor's loop (call it there)."""
    import asyncio
    answered = False

    def answer(outcome):
        nonlocal answered
        if not answered:
            answered = True
            _async_calls.pop(task_id, None)
            _finish(completion, outcome)

    def cancelled_outcome():
        from prism.exceptions import TaskCancelledError
        return _error(TaskCancelledError(f"call {task_id} was cancelled"), "cancelled")

    async def run():
        _enter_call(call_, task_id)  # (this task's own context: nothing to restore)
        try:
            async with slots:
                try:
                    result = await coroutine
                except SystemExit as e:  # exit_actor() or sys.exit() in an async method
                    _exit_actor(e)
                    result = None
        except asyncio.CancelledError:
            answer(cancelled_outcome())
            return
        except BaseException as e:  # noqa: B902 - every failure answers the call
            answer(_error(e, "".join(traceback.format_exception(e))))
            return
        answer(_results(result, num_returns))

    def start():  # on the actor's loop
        with _cancel_lock:
            cancelled = _cancelled.pop(task_id, None) is not None
        if cancelled:  # its cancel came before it was handed to the loop
            coroutine.close()
            answer(cancelled_outcome())
            return
        if not _EAGER:
            task = _actor_loop.create_task(run())
            _async_calls[task_id] = task
            # A task cancelled before its first step never enters run(): answered here.
            task.add_done_callback(lambda t: answer(cancelled_outcome()) if t.cancelled() else None)
            return
        # The first step runs now, in the call's own context: a method that waits for nothing
        # answers here, without a task and another turn of the loop (as Python 3.12's eager
        # tasks do). One that waits goes on in a task from where it stopped.
        context = contextvars.copy_context()
        steps = run()
        try:
            awaited = context.run(steps.send, None)
        except StopIteration:
            return  # answered
        _go_on_in_task(steps, awaited, context, task_id)

    return start


# Python 3.11's create_task takes the context a started call goes on in.
_EAGER = sys.version_info >= (3, 11)


def _go_on_in_task(steps, awaited, context, task_id):
    """A task that drives `steps` (run() of an async call, started here) on from `awaited`."""
    task = _actor_loop.create_task(_driven(steps, awaited), context=context)
    _async_calls[task_id] = task

    def done(t):
        if t.cancelled():  # cancelled before its first step: the call never saw it, so throw it in
            import asyncio
            try:
                again = context.run(steps.throw, asyncio.CancelledError())
            except BaseException:  # noqa: B902 - StopIteration: run() answered (it answers everything)
                return
            _go_on_in_task(steps, again, context, task_id)  # it caught the cancel and waits again

    task.add_done_callback(done)


@types.coroutine
def _driven(steps, awaited):
    """Goes on with `steps` (a coroutine stopped at `awaited`) as `await` would."""
    pending = awaited
    while True:
        try:
            sent = yield pending
        except BaseException as e:  # noqa: B902 - thrown in by the task (a cancel): passed on
            try:
                pending = steps.throw(e)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = steps.send(sent)
            except StopIteration as stop:
                return stop.value


def _route_async_calls():
    """An async actor: the calls of its async methods go from the core straight to its loop
    (see _start_routed_calls), without the executor's thread taking the GIL for them."""
    import asyncio
    names = [name for name, m in inspect.getmembers(type(_actor)) if asyncio.iscoroutinefunction(m)]
    fd = _prism.route_async_calls(names)
    _actor_loop.call_soon_threadsafe(_actor_loop.add_reader, fd, _start_routed_calls)


def _start_routed_calls():  # on the actor's loop, when calls came
    for descriptor, views, completion, num_returns, task_id in _prism.take_async_calls():
        try:
            call_ = _parse_call(descriptor, len("py:m:"))
            args, kwargs = call_.args(views)
            fn = getattr(_actor, call_.target)
            if "d" in call_.params:
                raise TypeError(f"num_returns='dynamic' needs a generator method; {call_.target} is async")
            group = call_.params.get("k") or _actor_methods_groups.get(call_.target)
            slots = _actor_groups.get(group, _actor_slots) if group else _actor_slots
            coroutine = fn(*args, **kwargs)  # (runs none of its code: run() sets the call's context)
        except _prism.ObjectLostError as e:  # a device object argument went with its producer
            _finish(completion, ("lost", str(e)))
            continue
        except Exception as e:  # the call could not even start: report it as its error
            _finish(completion, _error(e))
            continue
        _async_start(coroutine, completion, num_returns, slots, task_id, call_)()


_cancel_lock = threading.Lock()
_cancelled = collections.OrderedDict()  # calls cancelled before they started here (bounded)


def _cancel_calls():
    """A thread of every Python actor: cancels the running async calls their callers cancelled
    (prism.cancel); the coroutine gets CancelledError, and the call fails with
    TaskCancelledError. A cancel that comes before its call started here is kept for it. The
    cancels are applied on the actor's loop, where calls start: one never falls between a call's
    start and its task."""
    while True:
        for task_id in _prism.take_cancelled():
            if _actor_loop is None:
                _keep_cancel(task_id)
            else:
                _actor_loop.call_soon_threadsafe(_cancel_on_loop, task_id)


def _keep_cancel(task_id):
    with _cancel_lock:
        _cancelled[task_id] = True
        while len(_cancelled) > 10000:
            _cancelled.popitem(last=False)


def _cancel_on_loop(task_id):
    task = _async_calls.get(task_id)
    if task is None:
        _keep_cancel(task_id)
    else:
        task.cancel()


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


_entered_working_dir = False


def execute_task(kind, descriptor, arg_views, streaming, completion=None, num_returns=1, task_id=""):
    """Runs one Python task, actor creation or actor method for the worker loop: ("ok", size,
    parts, handles), ("ok_multi", [(size, parts, handles), ...]) for num_returns > 1, ("error",
    type, message, pickled exception), or ("deferred",) when the call answers later through
    `completion`."""
    global _actor, _entered_working_dir
    import asyncio
    try:
        if not _entered_working_dir:
            # Before the first task (the key-value table is reachable from here on).
            from prism import runtime_env
            runtime_env.enter_working_dir()
            _entered_working_dir = True
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
            if _actor_loop is not None:
                _route_async_calls()
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
    # Lines reach the driver as they are printed.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _prism.run_worker(execute_task)
