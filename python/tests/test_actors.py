"""Actors from Python: state, order, names, kill, restarts, threaded and async actors."""

import asyncio
import os
import signal
import threading
import time

import pytest

import prism as ray
from prism import exceptions


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.value = start
        self.log = []

    def add(self, x=1):
        self.value += x
        return self.value

    def record(self, who, i):
        self.log.append((who, i))
        return len(self.log)

    def history(self):
        return self.log

    def pid(self):
        return os.getpid()

    def fail(self):
        raise KeyError("no such slot")


@ray.remote
class Broken:
    def __init__(self):
        raise RuntimeError("cannot open the ledger")

    def ping(self):
        return 1


@ray.remote
class Sleeper:
    async def nap(self, seconds):
        await asyncio.sleep(seconds)
        return threading.get_ident()


@ray.remote
class Blocking:
    def hold(self, seconds):
        time.sleep(seconds)
        return threading.get_ident()


@ray.remote
def call_counter(counter, n):
    last = 0
    for i in range(n):
        last = ray.get(counter.record.remote("task", i))
    return last


def test_actor_keeps_state_and_order(cluster):
    c = Counter.remote(10)
    assert ray.get(c.add.remote(5)) == 15
    assert ray.get(c.add.remote(x=2)) == 17
    refs = [c.record.remote("driver", i) for i in range(200)]
    assert ray.get(refs) == list(range(1, 201)), "calls from one caller run in order"
    assert ray.get(c.pid.remote()) != os.getpid()


def test_handles_passed_to_tasks(cluster):
    c = Counter.remote()
    task = call_counter.options(num_cpus=0).remote(c, 100)
    mine = [c.record.remote("driver", i) for i in range(100)]
    ray.get(mine)
    assert ray.get(task) == 200
    history = ray.get(c.history.remote())
    assert [i for who, i in history if who == "task"] == list(range(100))
    assert [i for who, i in history if who == "driver"] == list(range(100))


def test_named_actors_and_kill(cluster):
    c = Counter.options(name="ledger").remote(1)
    same = ray.get_actor("ledger")
    assert ray.get(same.add.remote(1)) == 2
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor")
    with pytest.raises(ValueError):
        Counter.options(name="ledger").remote()
    ray.kill(c)
    with pytest.raises(exceptions.RayActorError):
        ray.get(c.add.remote(1), timeout=30)


def test_errors(cluster):
    c = Counter.remote()
    with pytest.raises(KeyError):
        ray.get(c.fail.remote())
    assert ray.get(c.add.remote()) == 1, "a method that raised leaves the actor alive"
    b = Broken.remote()
    with pytest.raises(exceptions.RayActorError, match="cannot open the ledger"):
        ray.get(b.ping.remote(), timeout=30)
    with pytest.raises(AttributeError):
        c.no_such_method
    with pytest.raises(TypeError, match="cannot be instantiated directly"):
        Counter()
    with pytest.raises(TypeError):
        c.add(1)


def test_restart_after_sigkill(cluster):
    c = Counter.options(max_restarts=1).remote(0)
    pid = ray.get(c.pid.remote())
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while True:
        try:
            new_pid = ray.get(c.pid.remote(), timeout=30)
            break
        except exceptions.RayActorError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    assert new_pid != pid
    assert ray.get(c.add.remote()) == 1, "state rebuilt by the constructor"
    os.kill(new_pid, signal.SIGKILL)
    with pytest.raises(exceptions.RayActorError):
        for _ in range(100):
            ray.get(c.pid.remote(), timeout=30)
            time.sleep(0.1)


def test_async_actor_serves_calls_concurrently(cluster):
    s = Sleeper.remote()
    start = time.time()
    refs = [s.nap.remote(0.1) for _ in range(100)]
    ray.get(refs, timeout=60)
    assert time.time() - start < 5, "100 calls of 0.1 s each ran at once"


def test_a_burst_of_async_calls_each_answers_once(cluster):
    # Calls that come in a burst are handed to the actor's loop together; each starts once, in
    # the order they came, and answers with its own value.
    @ray.remote
    class Echo:
        def __init__(self):
            self.started = []

        async def echo(self, i):
            self.started.append(i)
            await asyncio.sleep(0)
            return i

        async def started_order(self):
            return self.started

    e = Echo.remote()
    refs = [e.echo.remote(i) for i in range(2000)]
    assert ray.get(refs, timeout=60) == list(range(2000))
    assert ray.get(e.started_order.remote(), timeout=60) == list(range(2000))


def test_an_async_call_that_cannot_start_fails_alone(cluster):
    # Async methods' calls start on the actor's loop: one that cannot (a missing argument, a
    # dynamic generator asked of a coroutine) fails with its own error, and the actor serves on.
    @ray.remote
    class Scaler:
        async def scale(self, x, *, by=1):
            return x * by

        def plain(self):
            return "plain"

    s = Scaler.remote()
    assert ray.get(s.scale.remote(2, by=3), timeout=30) == 6
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        ray.get(s.scale.remote(), timeout=30)
    with pytest.raises(TypeError, match="needs a generator method"):
        ray.get(s.scale.options(num_returns="dynamic").remote(1), timeout=30)
    assert ray.get([s.scale.remote(5), s.plain.remote()], timeout=30) == [5, "plain"]


def test_a_handles_methods_are_reused_and_keep_their_options(cluster):
    @ray.remote
    class Calc:
        def add(self, x, y=0):
            return x + y

        def both(self, x):
            return x, -x

    c = Calc.remote()
    assert c.add is c.add  # made once per handle
    assert ray.get(c.add.remote(1)) == 1
    assert ray.get(c.add.remote(1, y=2)) == 3  # keywords after a call without them
    assert ray.get(c.add.remote(x=4)) == 4
    first, second = c.both.options(num_returns=2).remote(5)
    assert ray.get([first, second]) == [5, -5]
    assert ray.get(c.both.remote(6)) == (6, -6)  # the options stayed with that call
    with pytest.raises(ValueError, match="no concurrency groups"):
        c.add.options(concurrency_group="io").remote(1)
    with pytest.raises(ValueError, match="no concurrency groups"):
        c.add.options(concurrency_group="io").remote(1)  # every time, not only the first


def test_async_calls_keep_to_max_concurrency_and_their_own_context(cluster):
    # A call starts on the actor's loop at once, in its own context, and goes on in a task when
    # it waits: at most max_concurrency run at a time, and each sees its own task id throughout.
    @ray.remote(max_concurrency=2)
    class Gate:
        def __init__(self):
            self.now = 0
            self.most = 0

        async def visit(self, pause):
            before = ray.get_runtime_context().get_task_id()
            self.now += 1
            self.most = max(self.most, self.now)
            await asyncio.sleep(pause)
            self.now -= 1
            return before == ray.get_runtime_context().get_task_id()

        async def most_at_once(self):
            return self.most

    g = Gate.remote()
    assert all(ray.get([g.visit.remote(0.3) for _ in range(8)], timeout=60))
    assert ray.get(g.most_at_once.remote(), timeout=60) == 2


def test_a_cancelled_async_call_can_clean_up(cluster):
    # The coroutine gets CancelledError where it waits (its first step ran already), can await
    # in its cleanup, and the call fails as cancelled.
    @ray.remote
    class Worker:
        def __init__(self):
            self.started = False
            self.cleaned = False

        async def work(self):
            self.started = True
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.01)
                self.cleaned = True
                raise

        async def was_started(self):
            return self.started

        async def was_cleaned(self):
            return self.cleaned

    w = Worker.remote()
    ref = w.work.remote()
    deadline = time.time() + 30
    while not ray.get(w.was_started.remote(), timeout=30) and time.time() < deadline:
        time.sleep(0.01)  # (a slow machine may take a while to start the actor)
    ray.cancel(ref)  # it is running, waiting in its sleep
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert ray.get(w.was_cleaned.remote(), timeout=30)


def test_threaded_actor(cluster):
    b = Blocking.options(max_concurrency=4).remote()
    start = time.time()
    threads = ray.get([b.hold.remote(0.5) for _ in range(4)])
    assert time.time() - start < 1.9
    assert len(set(threads)) > 1
