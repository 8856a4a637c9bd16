"""ObjectRef: a future for a value a task returns or ``put`` stored."""

import threading

from prism import _prism
from prism._private import serialization


def _rebuild(binary, socket_path, worker_id, node_id, node_address=""):
    # A ref arriving inside a value: this process borrows it from its owner.
    return ObjectRef(_prism.make_ref(binary, socket_path, worker_id, node_id, node_address))


class ObjectRef:
    """A reference to an immutable object. Copies and pickles refer to the same object, which
    lives while some ref to it does (in any process)."""

    __slots__ = ("_handle", "_actor_call", "__weakref__")

    def __init__(self, handle, actor_call=False):
        self._handle = handle
        self._actor_call = actor_call  # the result of an actor call this process made

    def hex(self):
        return self._handle.hex()

    def binary(self):
        return self._handle.binary()

    def __repr__(self):
        return f"ObjectRef({self.hex()})"

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and self.binary() == other.binary()

    def __hash__(self):
        return hash(self.binary())

    def future(self):
        """A concurrent.futures.Future that gets the object's value (or its error) once it is
        ready; nothing waits on a thread of its own meanwhile."""
        import concurrent.futures
        future = concurrent.futures.Future()

        def ready():
            from prism._private import worker
            try:
                # (Never starts a cluster: one shut down meanwhile fails the future.)
                future.set_result(worker.get(self, _start=False))
            except BaseException as e:  # noqa: B902 - the future carries any failure
                future.set_exception(e)

        _when_ready(self, ready)
        return future

    def __await__(self):
        """``await ref`` in async code (an async actor's methods, asyncio programs)."""
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()

    def as_future(self):
        """An asyncio future of the value, on the running event loop."""
        import asyncio
        return asyncio.wrap_future(self.future())

    def __reduce__(self):
        nested = serialization.nested_refs()
        if nested is not None:
            nested.append(self._handle)
        socket_path, worker_id, node_id, node_address = self._handle.owner()
        return _rebuild, (self.binary(), socket_path, worker_id, node_id, node_address)


# Refs waited for by futures: the core pushes a token when one is ready; one thread (started on
# first use) takes the tokens and runs their callbacks.
_waiting = {}
_waiting_lock = threading.Lock()
_next_token = 0
_dispatcher = None


def _dispatch():
    while True:
        for token in _prism.take_ready():
            with _waiting_lock:
                callback = _waiting.pop(token, None)
            if callback is not None:
                try:
                    callback()
                except Exception:  # a callback's failure must not stop the others
                    import traceback
                    traceback.print_exc()


def _when_ready(ref, callback):
    global _next_token, _dispatcher
    from prism._private import worker
    worker._check_initialized()
    with _waiting_lock:
        _next_token += 1
        token = _next_token
        _waiting[token] = callback
        if _dispatcher is None:
            _dispatcher = threading.Thread(target=_dispatch, name="prism-futures", daemon=True)
            _dispatcher.start()
    try:
        worker.call(_prism.when_ready, ref._handle, token)
    except BaseException:
        with _waiting_lock:
            _waiting.pop(token, None)
        raise
