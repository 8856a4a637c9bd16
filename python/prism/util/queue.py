"""A first-in, first-out queue that tasks and actors share, as Ray's ``ray.util.queue``.

The items live in an actor holding an ``asyncio.Queue``; a ``Queue`` object is a handle to that
actor, so it can be passed to tasks and actors (it pickles as its actor handle), and every copy
reaches the same items. Items travel by value: each ``put`` pickles its item into the actor and
each ``get`` brings a copy back (as with any argument, an ObjectRef given as the item itself is
resolved to its value; refs inside an item travel as refs).

``put``/``get`` block the calling thread; ``put_async``/``get_async`` are coroutines for an
event loop. Their timeouts are kept by the actor, so a blocking ``get`` with a timeout raises
``Empty`` once the queue stayed empty that long, and a blocking ``put`` raises ``Full``.
"""

import asyncio
import concurrent.futures
import queue as _queue
import threading
from collections.abc import Iterable

import prism


class Empty(_queue.Empty):
    """The queue had no item to give (non-blocking get, or the timeout passed)."""


class Full(_queue.Full):
    """The queue had no room for the item (non-blocking put, or the timeout passed)."""


class _QueueActor:
    """Holds the items. Every method is a coroutine so that all of them run on the actor's
    event loop, the one thread an asyncio.Queue may be used from."""

    def __init__(self, maxsize):
        self.maxsize = maxsize
        # Made on the event loop by the first call: an asyncio.Queue belongs to the loop that
        # first uses it, and the constructor runs on another thread.
        self._items = None

    def _queue(self):
        if self._items is None:
            self._items = asyncio.Queue(self.maxsize)
        return self._items

    async def qsize(self):
        return self._queue().qsize()

    async def empty(self):
        return self._queue().empty()

    async def full(self):
        return self._queue().full()

    async def put(self, item, timeout=None):
        q = self._queue()
        if (timeout is not None and timeout <= 0) or not q.full():
            # No waiting: either there is room now or the caller gave no time to wait for it
            # (asyncio.wait_for with a timeout of 0 would fail even with room to spare).
            return await self.put_nowait(item)
        try:
            await asyncio.wait_for(q.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full(f"the queue stayed full (maxsize {self.maxsize}) for {timeout} s") from None

    async def get(self, timeout=None):
        q = self._queue()
        if (timeout is not None and timeout <= 0) or not q.empty():
            return await self.get_nowait()
        try:
            return await asyncio.wait_for(q.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty(f"the queue stayed empty for {timeout} s") from None

    async def put_nowait(self, item):
        try:
            self._queue().put_nowait(item)
        except asyncio.QueueFull:
            raise Full(f"the queue is full (maxsize {self.maxsize})") from None

    async def put_nowait_batch(self, items):
        q = self._queue()
        if self.maxsize > 0 and len(items) + q.qsize() > self.maxsize:
            raise Full(f"Cannot add {len(items)} items to queue of size {q.qsize()} and maxsize {self.maxsize}.")
        for item in items:
            q.put_nowait(item)

    async def get_nowait(self):
        try:
            return self._queue().get_nowait()
        except asyncio.QueueEmpty:
            raise Empty("the queue is empty") from None

    async def get_nowait_batch(self, num_items):
        q = self._queue()
        if num_items > q.qsize():
            raise Empty(f"Cannot get {num_items} items from queue of size {q.qsize()}.")
        return [q.get_nowait() for _ in range(num_items)]


_actor_class = None
_actor_class_lock = threading.Lock()


def _queue_actor_class():
    global _actor_class
    with _actor_class_lock:
        if _actor_class is None:
            _actor_class = prism.remote(_QueueActor)
        return _actor_class


def _queue_error(err):
    """The Empty or Full an actor call raised, without the task-error wrapping (the caller
    asked the queue, not a task); any other error as it is."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, (Empty, Full)) else err


def _value(ref):
    try:
        return prism.get(ref)
    except (Empty, Full) as e:
        raise _queue_error(e) from None


async def _value_async(ref):
    # prism.get blocks, so it runs on a thread of its own and the event loop awaits its future.
    # One thread per call: a pool could fill with blocked gets and starve the put that would
    # unblock them. A cancelled await leaves the call running in the actor (as in Ray, the item
    # it then takes is lost).
    future = concurrent.futures.Future()

    def fetch():
        try:
            future.set_result(prism.get(ref))
        except Exception as e:  # the awaiting coroutine receives it
            future.set_exception(e)

    threading.Thread(target=fetch, name="prism-queue-await", daemon=True).start()
    try:
        return await asyncio.wrap_future(future)
    except (Empty, Full) as e:
        raise _queue_error(e) from None


def _check_timeout(timeout):
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class Queue:
    """A first-in, first-out queue, usable from the driver, tasks and actors.

    ``maxsize``: the most items it holds (0: no limit). ``actor_options``: options for the actor
    that holds the items, as ``.options(...)`` takes them (e.g. ``{"num_cpus": 1}``).

        q = Queue(maxsize=2)
        q.put(1)
        q.put_nowait(2)
        q.get()                       # 1
        q.get(timeout=0.1)            # 2
        q.get(timeout=0.1)            # raises Empty after 0.1 s

    Producers that put to the same full queue, or consumers that get from the same empty one,
    are served in no guaranteed order.
    """

    def __init__(self, maxsize=0, actor_options=None):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0: no limit), not {maxsize}")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(f"actor_options must be a dict of actor options, not {type(actor_options).__name__}")
        self.maxsize = maxsize
        self.actor = _queue_actor_class().options(**(actor_options or {})).remote(maxsize)

    def _handle(self):
        if self.actor is None:
            raise RuntimeError("this queue was shut down")
        return self.actor

    def __len__(self):
        return self.size()

    def size(self):
        """How many items the queue holds."""
        return prism.get(self._handle().qsize.remote())

    def qsize(self):
        """How many items the queue holds."""
        return self.size()

    def empty(self):
        """Whether the queue holds no item."""
        return prism.get(self._handle().empty.remote())

    def full(self):
        """Whether the queue holds maxsize items (never, when maxsize is 0)."""
        return prism.get(self._handle().full.remote())

    def put(self, item, block=True, timeout=None):
        """Adds an item. When the queue is full, blocks until there is room (at most ``timeout``
        seconds; None: no limit), or, with ``block=False``, raises Full at once.

        Raises Full when there is no room in time, ValueError when ``timeout`` is negative."""
        if not block:
            return _value(self._handle().put_nowait.remote(item))
        _check_timeout(timeout)
        return _value(self._handle().put.remote(item, timeout))

    async def put_async(self, item, block=True, timeout=None):
        """``put`` as a coroutine: ``await q.put_async(item)`` waits without blocking the
        event loop."""
        if not block:
            return await _value_async(self._handle().put_nowait.remote(item))
        _check_timeout(timeout)
        return await _value_async(self._handle().put.remote(item, timeout))

    def get(self, block=True, timeout=None):
        """Removes and returns the oldest item. When the queue is empty, blocks until an item
        comes (at most ``timeout`` seconds; None: no limit), or, with ``block=False``, raises
        Empty at once.

        Raises Empty when no item came in time, ValueError when ``timeout`` is negative."""
        if not block:
            return _value(self._handle().get_nowait.remote())
        _check_timeout(timeout)
        return _value(self._handle().get.remote(timeout))

    async def get_async(self, block=True, timeout=None):
        """``get`` as a coroutine: ``item = await q.get_async()`` waits without blocking the
        event loop."""
        if not block:
            return await _value_async(self._handle().get_nowait.remote())
        _check_timeout(timeout)
        return await _value_async(self._handle().get.remote(timeout))

    def put_nowait(self, item):
        """``put(item, block=False)``: raises Full when the queue is full."""
        return self.put(item, block=False)

    def put_nowait_batch(self, items):
        """Adds all of ``items``, in order, or none of them: raises Full when they do not all
        fit."""
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        return _value(self._handle().put_nowait_batch.remote(list(items)))

    def get_nowait(self):
        """``get(block=False)``: raises Empty when the queue is empty."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items):
        """Removes and returns the ``num_items`` oldest items, in order, or none: raises Empty
        when the queue holds fewer."""
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        return _value(self._handle().get_nowait_batch.remote(num_items))

    def shutdown(self, force=False, grace_period_s=5):
        """Ends the actor that holds the items (they are lost) and frees what it reserved.

        Without ``force``, calls this process made before it are let start first, for up to
        ``grace_period_s`` seconds; calls still waiting then (a blocked get, say) fail with
        RayActorError. Using this queue afterwards raises RuntimeError; calling shutdown again
        does nothing."""
        if self.actor is None:
            return
        actor, self.actor = self.actor, None
        if not force:
            # Calls from one handle start in order: once this one answers, the earlier ones ran.
            prism.wait([actor.qsize.remote()], timeout=grace_period_s)
        prism.kill(actor, no_restart=True)
