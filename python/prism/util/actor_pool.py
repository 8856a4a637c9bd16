"""ActorPool: a fixed set of actors that a stream of work is spread over, as Ray's
``ray.util.ActorPool``.

The pool hands each value to an idle actor through a function ``fn(actor, value)`` that submits
the call and returns its ObjectRef (or a list of refs); the actor counts as busy until the result
of that call is taken back with ``get_next()`` or ``get_next_unordered()``. Values submitted while
every actor is busy wait in the pool, and go to the next actor that becomes free.

The pool lives in the process that made it (it is not shared between processes) and is not
meant to be used from several threads at once.
"""

import collections

import prism

_TIMEOUT_MESSAGE = "Timed out waiting for result"


def _refs_of(future):
    """The refs a submission returned (one ref, or a list of them), each once."""
    return list(dict.fromkeys(future)) if isinstance(future, (list, tuple)) else [future]


def _key_of(future):
    # A list of refs is not hashable: its refs, as a tuple, name the submission.
    return tuple(future) if isinstance(future, list) else future


class ActorPool:
    """Runs work on a fixed pool of actors.

    ``actors`` is a list of actor handles. Example::

        @prism.remote
        class Doubler:
            def double(self, v):
                return 2 * v

        pool = ActorPool([Doubler.remote(), Doubler.remote()])
        print(list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])))   # [2, 4, 6, 8]
    """

    def __init__(self, actors):
        self._idle_actors = list(actors)
        # submission key -> (index of the submission, actor running it)
        self._future_to_actor = {}
        # index of a submission -> what fn returned for it
        self._index_to_future = {}
        self._next_task_index = 0
        self._next_return_index = 0
        # (fn, value) waiting for an actor to become free, oldest first
        self._pending_submits = []
        # Submissions known to be done that get_next_unordered() has not returned yet.
        self._completed = collections.deque()

    def map(self, fn, values):
        """Applies ``fn(actor, value)`` to every value over the pool's actors; returns an iterator
        over the results in the order of ``values``. Results still pending from earlier
        submissions are dropped first. The work only all completes as the iterator is consumed."""
        return self._map(fn, values, self.get_next, lambda: self.get_next(timeout=0, ignore_if_timedout=True))

    def map_unordered(self, fn, values):
        """As ``map()``, but yields each result as soon as it is ready, in any order."""
        return self._map(fn, values, self.get_next_unordered, lambda: self.get_next_unordered(timeout=0))

    def _map(self, fn, values, take, drop):
        """Drops what earlier submissions left, submits every value, and yields through `take`."""
        while self.has_next():
            try:
                drop()
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield take()

        return results()

    def submit(self, fn, value):
        """Schedules ``fn(actor, value)`` on an idle actor, or queues it until one is free. Its
        result comes back through ``get_next()`` or ``get_next_unordered()``."""
        if self._idle_actors:
            actor = self._idle_actors.pop()
            future = fn(actor, value)
            self._future_to_actor[_key_of(future)] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    def has_next(self):
        """Whether some submitted work has a result not yet returned."""
        return bool(self._future_to_actor)

    def get_next(self, timeout=None, ignore_if_timedout=False):
        """The next result, in submission order, waiting at most ``timeout`` seconds (None: no
        limit). Raises TimeoutError when it is not ready by then; with ``ignore_if_timedout``
        the late submission is dropped too (its actor goes back to the pool) before raising.
        Raises StopIteration when nothing is pending, and ValueError after
        ``get_next_unordered()`` returned a later result (the order is lost then)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            refs = _refs_of(future)
            ready, _ = prism.wait(refs, num_returns=len(refs), timeout=timeout)
            if len(ready) < len(refs):
                if not ignore_if_timedout:
                    raise TimeoutError(_TIMEOUT_MESSAGE)
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key_of(future))
        if timed_out:
            self._return_actor(actor)
            raise TimeoutError(f"{_TIMEOUT_MESSAGE}. The task {future} has been ignored.")
        return self._get_result(future, actor)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        """Any next result: the first of the pending submissions to finish, waiting at most
        ``timeout`` seconds (None: no limit). Raises TimeoutError when none is ready by then;
        with ``ignore_if_timedout`` one pending submission is dropped too (its actor goes back to
        the pool) before raising. Raises StopIteration when nothing is pending. After this,
        ``get_next()`` may no longer be used for the results submitted so far."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        future = self._take_completed()
        if future is None:
            self._wait_for_completed(timeout)
            future = self._take_completed()
        timed_out = future is None
        if timed_out:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MESSAGE)
            future = self._index_to_future[min(self._index_to_future)]
        index, actor = self._future_to_actor.pop(_key_of(future))
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        if timed_out:
            self._return_actor(actor)
            raise TimeoutError(f"{_TIMEOUT_MESSAGE}. The task {future} has been ignored.")
        return self._get_result(future, actor)

    def _take_completed(self):
        while self._completed:
            future = self._completed.popleft()
            if _key_of(future) in self._future_to_actor:
                return future
        return None

    def _wait_for_completed(self, timeout):
        """Waits until some pending submission is done (all of its refs ready) or `timeout`
        passes; queues every submission found done, oldest first."""
        pending = [self._index_to_future[i] for i in sorted(self._index_to_future)]
        ready_refs = set()
        waiting = list({r: None for f in pending for r in _refs_of(f)})
        wait_timeout = timeout
        while waiting:
            ready, waiting = prism.wait(waiting, num_returns=1, timeout=wait_timeout)
            if not ready:
                return
            ready_refs.update(ready)
            # Others may be done as well: take them in the same pass, without waiting.
            if waiting:
                more, waiting = prism.wait(waiting, num_returns=len(waiting), timeout=0)
                ready_refs.update(more)
            done = [f for f in pending if all(r in ready_refs for r in _refs_of(f))]
            if done:
                self._completed.extend(done)
                return
            # Only part of a multi-ref submission is ready. Without a timeout keep waiting;
            # with one, a further pass would wait longer than asked, so stop here.
            if timeout is not None:
                return

    def _get_result(self, future, actor):
        # The actor goes back to the pool first, as in Ray: a dead one keeps taking work, whose
        # results then raise RayActorError, so no queued submission is silently dropped.
        self._return_actor(actor)
        return prism.get(future)

    def _return_actor(self, actor):
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self):
        """Whether some actor is idle and no submitted work is waiting for one."""
        return len(self._idle_actors) > 0 and len(self._pending_submits) == 0

    def pop_idle(self):
        """Removes an idle actor from the pool and returns it; None when none is free."""
        if self.has_free():
            return self._idle_actors.pop()
        return None

    def push(self, actor):
        """Adds an actor to the pool's idle actors (it takes waiting work at once, if any).
        Raises ValueError when the actor already belongs to the pool."""
        busy_actors = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy_actors:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
