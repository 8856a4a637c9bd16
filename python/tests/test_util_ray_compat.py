"""Ray's utilities under prism: ActorPool, Queue, metrics, inspect_serializability and the
classic DAG API; their edge cases and bad input."""

import asyncio
import collections
import io
import pickle
import queue as stdlib_queue
import threading
import time
import warnings

import pytest

import prism as ray
from prism import exceptions
from prism.dag import ClassMethodNode, ClassNode, DAGNode, FunctionNode, InputNode, MultiOutputNode
from prism.util.actor_pool import ActorPool
from prism.util.check_serialize import FailureTuple, inspect_serializability
from prism.util.metrics import Counter, Gauge, Histogram, _registry_snapshot
from prism.util.queue import Empty, Full, Queue


@ray.remote
class Doubler:
    def double(self, v):
        return 2 * v

    def nap(self, seconds, value=None):
        time.sleep(seconds)
        return seconds if value is None else value

    def fail(self, v):
        raise KeyError(f"no slot {v}")


@ray.remote
def inc(x, by=1):
    return x + by


@ray.remote
def ident(x):
    return x


# ---- ActorPool ------------------------------------------------------------------------------


def test_actor_pool_map_keeps_order_when_later_values_finish_first(cluster):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    # The first value takes longest; map still yields in the order of the values.
    out = list(pool.map(lambda a, v: a.nap.remote(0.3 - 0.1 * v, v), [0, 1, 2]))
    assert out == [0, 1, 2]
    assert not pool.has_next() and pool.has_free()


def test_actor_pool_more_work_than_actors_waits_in_the_pool(cluster):
    pool = ActorPool([Doubler.remote()])
    for v in range(4):
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert not pool.has_free()
    assert pool.pop_idle() is None
    assert [pool.get_next() for _ in range(4)] == [0, 2, 4, 6]
    assert pool.has_free()
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_actor_pool_get_next_after_get_next_unordered_is_refused(cluster):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(lambda a, v: a.nap.remote(v), 0.5)
    pool.submit(lambda a, v: a.nap.remote(v), 0.0)
    assert pool.get_next_unordered() == 0.0
    with pytest.raises(ValueError, match=r"It is not allowed to call get_next\(\) after get_next_unordered\(\)"):
        pool.get_next()
    assert pool.get_next_unordered() == 0.5


def test_actor_pool_timeout_leaves_the_work_pending(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.nap.remote(v), 0.5)
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next(timeout=0.05)
    assert pool.has_next()
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    assert pool.get_next(timeout=5) == 0.5


def test_actor_pool_ignore_if_timedout_drops_the_work(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.nap.remote(v), 0.4)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.01, ignore_if_timedout=True)
    assert not pool.has_next()
    assert pool.has_free()  # the actor is back (it finishes the nap before the next call)
    pool.submit(lambda a, v: a.nap.remote(v), 0.4)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0.01, ignore_if_timedout=True)
    assert not pool.has_next()
    pool.submit(lambda a, v: a.double.remote(v), 4)
    assert pool.get_next() == 8


def test_actor_pool_map_drops_earlier_pending_results(cluster):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(lambda a, v: a.double.remote(v), 100)
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]
    pool.submit(lambda a, v: a.double.remote(v), 100)
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), [3, 4])) == [6, 8]


def test_actor_pool_submission_of_several_refs(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: [a.double.remote(v), a.double.remote(v + 1)], 1)
    assert pool.get_next(timeout=5) == [2, 4]
    pool.submit(lambda a, v: [a.nap.remote(0.1, v), a.double.remote(v)], 3)
    assert pool.get_next_unordered() == [3, 6]


def test_actor_pool_task_error_returns_the_actor(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.fail.remote(v), 7)
    with pytest.raises(KeyError, match="no slot 7"):
        pool.get_next()
    assert pool.has_free()
    assert list(pool.map(lambda a, v: a.double.remote(v), [5])) == [10]


def test_actor_pool_dead_actor_stays_and_its_work_fails_loudly(cluster):
    # As in Ray: the dead actor goes back to the pool, and what it is given raises RayActorError
    # (no queued submission is silently dropped).
    doomed = Doubler.remote()
    ray.kill(doomed)
    pool = ActorPool([doomed])
    for v in (1, 2, 3):
        pool.submit(lambda a, v: a.double.remote(v), v)
    for _ in range(3):
        with pytest.raises(exceptions.RayActorError):
            pool.get_next()
    assert not pool.has_next()
    assert pool.pop_idle() is doomed


def test_actor_pool_push_and_pop(cluster):
    a1, a2 = Doubler.remote(), Doubler.remote()
    pool = ActorPool([a1])
    pool.push(a2)
    with pytest.raises(ValueError, match="Actor already belongs to current ActorPool"):
        pool.push(a1)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(pickle.loads(pickle.dumps(a1)))  # another handle to the same actor
    pool.submit(lambda a, v: a.nap.remote(v), 0.2)
    busy = pool._future_to_actor[next(iter(pool._future_to_actor))][1]
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(busy)
    idle = pool.pop_idle()
    assert idle is not None and idle is not busy
    assert pool.pop_idle() is None
    assert pool.get_next() == 0.2
    # A pushed actor takes work that was waiting for one.
    pool.submit(lambda a, v: a.double.remote(v), 1)
    pool.submit(lambda a, v: a.double.remote(v), 2)
    assert not pool.has_free()
    pool.push(idle)
    assert sorted([pool.get_next_unordered(), pool.get_next_unordered()]) == [2, 4]


# ---- Queue ----------------------------------------------------------------------------------


def test_queue_fifo_and_sizes(cluster):
    q = Queue()
    assert q.empty() and not q.full() and len(q) == 0
    for i in range(5):
        q.put(i)
    assert q.qsize() == q.size() == len(q) == 5
    assert [q.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    q.put({"nested": [1, 2]})
    assert q.get_nowait() == {"nested": [1, 2]}
    q.shutdown()


def test_queue_exceptions_are_the_standard_ones_unwrapped(cluster):
    assert issubclass(Empty, stdlib_queue.Empty) and issubclass(Full, stdlib_queue.Full)
    q = Queue(maxsize=1)
    with pytest.raises(Empty) as empty:
        q.get_nowait()
    assert type(empty.value) is Empty
    q.put_nowait(1)
    with pytest.raises(Full) as full:
        q.put_nowait(2)
    assert type(full.value) is Full
    with pytest.raises(stdlib_queue.Full):
        q.put(2, block=False)
    q.shutdown()


def test_queue_timeouts(cluster):
    q = Queue(maxsize=1)
    start = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.3)
    assert time.monotonic() - start >= 0.25
    q.put(1)
    start = time.monotonic()
    with pytest.raises(Full):
        q.put(2, timeout=0.3)
    assert time.monotonic() - start >= 0.25
    # A timeout of 0 still takes an item that is there, and puts where there is room.
    assert q.get(timeout=0) == 1
    q.put(3, timeout=0)
    with pytest.raises(Full):
        q.put(4, timeout=0)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(5, timeout=-0.5)
    q.shutdown()


def test_queue_blocking_put_and_get_meet_across_processes(cluster):
    q = Queue(maxsize=1)

    @ray.remote
    def drain(q, n):
        return [q.get(timeout=10) for _ in range(n)]

    ref = drain.remote(q, 3)
    for i in range(3):
        q.put(i, timeout=10)  # blocks until the task made room
    assert ray.get(ref) == [0, 1, 2]
    q.shutdown()


def test_queue_batches_are_all_or_nothing(cluster):
    q = Queue(maxsize=3)
    q.put_nowait_batch(x for x in ["a", "b"])  # any iterable
    with pytest.raises(Full, match="Cannot add 2 items to queue of size 2 and maxsize 3"):
        q.put_nowait_batch(["c", "d"])
    assert q.qsize() == 2
    with pytest.raises(Empty, match="Cannot get 3 items from queue of size 2"):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(2) == ["a", "b"]
    with pytest.raises(TypeError, match="Argument 'items' must be an Iterable"):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError, match="Argument 'num_items' must be an int"):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError, match="'num_items' must be nonnegative"):
        q.get_nowait_batch(-1)
    q.shutdown()


def test_queue_bad_construction(cluster):
    with pytest.raises(TypeError, match="maxsize must be an int"):
        Queue(maxsize=2.5)
    with pytest.raises(ValueError, match="maxsize must be >= 0"):
        Queue(maxsize=-1)
    with pytest.raises(TypeError, match="actor_options must be a dict"):
        Queue(actor_options=[("num_cpus", 1)])
    with pytest.raises(ValueError, match="unknown actor option"):
        Queue(actor_options={"no_such_option": 1})


def test_queue_with_actor_options(cluster):
    q = Queue(actor_options={"num_cpus": 1})
    q.put("x")
    assert q.get() == "x"
    q.shutdown()


def test_queue_async_methods(cluster):
    q = Queue(maxsize=1)

    async def main():
        await q.put_async(1)
        with pytest.raises(Full):
            await q.put_async(2, block=False)
        with pytest.raises(Full):
            await q.put_async(2, timeout=0.1)
        assert await q.get_async() == 1
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.1)
        with pytest.raises(ValueError):
            await q.get_async(timeout=-1)
        # Waiting on the queue leaves the event loop free for other coroutines.
        getter = asyncio.ensure_future(q.get_async(timeout=5))
        await asyncio.sleep(0.1)
        assert not getter.done()
        await q.put_async("late")
        return await getter

    assert asyncio.run(main()) == "late"
    q.shutdown()


def test_queue_travels_to_actors_and_pickles(cluster):
    @ray.remote
    class Consumer:
        async def take(self, q, n):
            return [await q.get_async(timeout=10) for _ in range(n)]

    q = Queue()
    ref = Consumer.remote().take.remote(q, 2)
    copy = pickle.loads(pickle.dumps(q))  # a copy reaches the same items
    copy.put("a")
    q.put("b")
    assert ray.get(ref) == ["a", "b"]
    q.shutdown()


def test_queue_shutdown(cluster):
    q = Queue()
    q.put(1)
    q.shutdown(grace_period_s=1)
    q.shutdown()  # again: nothing to do
    with pytest.raises(RuntimeError, match="this queue was shut down"):
        q.get()
    with pytest.raises(RuntimeError, match="shut down"):
        len(q)
    forced = Queue()
    blocked = forced.actor.get.remote(None)  # a get that waits forever
    forced.shutdown(force=True)
    with pytest.raises(exceptions.RayActorError):
        ray.get(blocked, timeout=10)


# ---- metrics --------------------------------------------------------------------------------


def test_metrics_record_into_the_registry():
    c = Counter("t_requests", description="Requests.", tag_keys=("route",))
    c.inc(tags={"route": "/a"})
    c.inc(2, tags={"route": "/a"})
    c.set_default_tags({"route": "/b"}).inc(0.5)
    g = Gauge("t_depth")
    g.set(3)
    g.set(1.5)
    g.set(None)  # does nothing
    h = Histogram("t_latency", boundaries=[1, 2.5, 10], tag_keys=("op",))
    for v in (0.5, 1, 2, 2.5, 3, 11):
        h.observe(v, tags={"op": "read"})
    snap = _registry_snapshot()
    assert snap["t_requests"]["kind"] == "counter"
    assert snap["t_requests"]["description"] == "Requests."
    assert snap["t_requests"]["series"] == {(("route", "/a"),): 3.0, (("route", "/b"),): 0.5}
    assert snap["t_depth"]["series"] == {(): 1.5}
    hist = snap["t_latency"]
    assert hist["boundaries"] == [1.0, 2.5, 10.0]
    assert hist["series"][(("op", "read"),)] == {"buckets": [2, 2, 1, 1], "sum": 20.0, "count": 6}
    # The snapshot is a copy.
    snap["t_depth"]["series"][()] = 99
    assert _registry_snapshot()["t_depth"]["series"][()] == 1.5


def test_metrics_same_definition_shares_values_other_definition_is_refused():
    Counter("t_shared", tag_keys=("k",)).inc(tags={"k": "v"})
    Counter("t_shared", tag_keys=("k",)).inc(tags={"k": "v"})
    assert _registry_snapshot()["t_shared"]["series"] == {(("k", "v"),): 2.0}
    with pytest.raises(ValueError, match="already defined as a counter"):
        Gauge("t_shared", tag_keys=("k",))
    with pytest.raises(ValueError, match="already defined"):
        Counter("t_shared", tag_keys=("other",))
    Histogram("t_shared_h", boundaries=[1, 2])
    with pytest.raises(ValueError, match="boundaries"):
        Histogram("t_shared_h", boundaries=[1, 3])


def test_metrics_tags_must_be_exactly_the_declared_keys():
    c = Counter("t_tags", tag_keys=("a", "b"))
    with pytest.raises(ValueError, match="Missing value for tag key\\(s\\): b."):
        c.inc(tags={"a": "1"})
    with pytest.raises(ValueError, match="Missing value for tag key\\(s\\): a,b."):
        c.inc()
    with pytest.raises(ValueError, match="Unrecognized tag key\\(s\\): z"):
        c.inc(tags={"a": "1", "b": "2", "z": "3"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        c.inc(tags={"a": 1, "b": "2"})
    with pytest.raises(ValueError, match="Unrecognized tag key z."):
        c.set_default_tags({"z": "1"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        c.set_default_tags({"a": 1})
    with pytest.raises(TypeError):
        c.inc(tags=[("a", "1")])
    # Call tags take precedence over defaults.
    c.set_default_tags({"a": "x", "b": "y"})
    c.inc(tags={"b": "z"})
    assert _registry_snapshot()["t_tags"]["series"] == {(("a", "x"), ("b", "z")): 1.0}
    Gauge("t_no_tags").set(1)
    with pytest.raises(ValueError, match="Unrecognized"):
        Gauge("t_no_tags").set(1, tags={"a": "b"})


def test_metrics_bad_definitions_and_values():
    with pytest.raises(ValueError, match="Empty name is not allowed"):
        Counter("")
    with pytest.raises(TypeError, match="Metric name must be a str"):
        Gauge(None)
    with pytest.raises(TypeError, match="tag_keys should be a tuple type"):
        Counter("t_bad", tag_keys=["a"])
    with pytest.raises(TypeError, match="Tag keys must be str"):
        Counter("t_bad", tag_keys=("a", 1))
    with pytest.raises(ValueError, match="boundaries argument should be provided"):
        Histogram("t_bad_h")
    with pytest.raises(ValueError, match="boundaries argument should be provided"):
        Histogram("t_bad_h", boundaries=[])
    with pytest.raises(ValueError, match="Use positive values"):
        Histogram("t_bad_h", boundaries=[0, 1])
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram("t_bad_h", boundaries=[1, 5, 5])
    with pytest.raises(TypeError, match="Boundaries must be numbers"):
        Histogram("t_bad_h", boundaries=[1, "2"])
    c = Counter("t_values")
    with pytest.raises(ValueError, match="value must be >0, got -1"):
        c.inc(-1)
    with pytest.raises(ValueError, match="value must be >0"):
        c.inc(0)
    with pytest.raises(TypeError, match="value must be int or float"):
        c.inc("1")
    with pytest.raises(TypeError, match="value must be int or float"):
        Gauge("t_values_g").set("high")
    with pytest.raises(TypeError, match="value must be int or float"):
        Histogram("t_values_h", boundaries=[1]).observe(None)


def test_metrics_invalid_name_warns_and_records_nothing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = Counter("t-dashes are invalid")
    assert "Invalid metric name" in str(caught[0].message)
    c.inc()
    assert "t-dashes are invalid" not in _registry_snapshot()


def test_metrics_info_and_pickling_keep_the_definition():
    h = Histogram("t_info", description="d", boundaries=[1, 2], tag_keys=("k",)).set_default_tags({"k": "v"})
    assert h.info == {"name": "t_info", "description": "d", "tag_keys": ("k",), "default_tags": {"k": "v"},
                      "boundaries": [1.0, 2.0]}
    copy = pickle.loads(pickle.dumps(h))
    assert copy.info == h.info
    copy.observe(1.5)  # default tags came along
    assert _registry_snapshot()["t_info"]["series"][(("k", "v"),)]["buckets"] == [0, 1, 0]


def test_metrics_are_thread_safe():
    c = Counter("t_threads")
    h = Histogram("t_threads_h", boundaries=[1])

    def work():
        for _ in range(2000):
            c.inc()
            h.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = _registry_snapshot()
    assert snap["t_threads"]["series"][()] == 16000.0
    assert snap["t_threads_h"]["series"][()]["count"] == 16000


def test_metrics_recorded_in_a_task_stay_in_its_worker(cluster):
    c = Counter("t_remote", tag_keys=("where",)).set_default_tags({"where": "task"})

    @ray.remote
    def record(counter):
        counter.inc(3)
        return _registry_snapshot()["t_remote"]["series"]

    assert ray.get(record.remote(c)) == {(("where", "task"),): 3.0}
    assert _registry_snapshot()["t_remote"]["series"] == {}


# ---- inspect_serializability ----------------------------------------------------------------

_GLOBAL_LOCK = threading.Lock()


def test_inspect_finds_a_global():
    # Defined here, not at module level: a module's functions pickle by reference (by name).
    def _uses_global_lock():
        return _GLOBAL_LOCK.locked()

    assert inspect_serializability(test_inspect_finds_a_global, print_file=io.StringIO())[0]
    out = io.StringIO()
    ok, failures = inspect_serializability(_uses_global_lock, name="fn", print_file=out)
    assert not ok
    (failure,) = failures
    assert isinstance(failure, FailureTuple)
    assert failure.obj is _GLOBAL_LOCK and failure.name == "_GLOBAL_LOCK" and failure.parent is _uses_global_lock
    assert failure.path == ("fn", "_GLOBAL_LOCK")
    assert "Detected 1 global variables" in out.getvalue()
    assert "FailTuple(_GLOBAL_LOCK" in repr(failure)


def test_inspect_finds_a_captured_variable_and_all_failures():
    lock, event = threading.Lock(), threading.Event()
    fine = [1, 2, 3]

    def closure():
        return lock, event._cond, fine

    ok, failures = inspect_serializability(closure, print_file=io.StringIO())
    assert not ok
    names = {f.name for f in failures}
    assert "lock" in names and "fine" not in names
    assert any(f.name in ("event", "_cond", "_lock") for f in failures)


def test_inspect_walks_attributes_items_and_methods():
    class Service:
        def __init__(self):
            self.config = {"retries": 3, "guard": threading.Lock()}
            self.names = ["a", "b"]

        def run(self):
            return self.names

    ok, failures = inspect_serializability(Service(), name="svc", print_file=io.StringIO())
    assert not ok
    (failure,) = failures
    assert failure.name == "['guard']" and failure.path == ("svc", "config", "['guard']")

    bound = Service().run
    ok, failures = inspect_serializability(bound, print_file=io.StringIO())
    assert not ok and [f.name for f in failures] == ["['guard']"]


def test_inspect_looks_into_a_class_pickled_by_value_and_stops_at_generators():
    lock = threading.Lock()

    class Local:  # defined in a function: pickled by value, with what its methods refer to
        def guarded(self):
            return lock

        @property
        def broken(self):
            raise RuntimeError("a property that raises is skipped")

    ok, failures = inspect_serializability(Local(), name="obj", print_file=io.StringIO())
    assert not ok
    (failure,) = failures
    assert failure.obj is lock and failure.path == ("obj", "__class__", "guarded", "lock")

    gen = (i for i in range(3))
    ok, failures = inspect_serializability(gen, name="gen", print_file=io.StringIO())
    assert not ok and [f.obj for f in failures] == [gen]  # not the frame and all it reaches


def test_inspect_depth_and_cycles():
    holder = {"inner": {"lock": threading.Lock()}}
    holder["self"] = holder
    ok, failures = inspect_serializability(holder, name="holder", depth=0, print_file=io.StringIO())
    assert not ok and [f.obj for f in failures] == [holder]
    ok, failures = inspect_serializability(holder, name="holder", depth=1, print_file=io.StringIO())
    assert [f.name for f in failures] == ["['inner']"]
    ok, failures = inspect_serializability(holder, name="holder", depth=5, print_file=io.StringIO())
    assert [f.name for f in failures] == ["['lock']"]
    with pytest.raises(ValueError, match="depth must be an int >= 0"):
        inspect_serializability(holder, depth=-1)


def test_inspect_serializable_objects_and_default_output(capsys):
    assert inspect_serializability(lambda x: x * 2) == (True, set())
    assert inspect_serializability(collections.OrderedDict(a=1), name="od") == (True, set())
    out = capsys.readouterr().out
    assert "Checking Serializability of" in out and "FAIL" not in out


# ---- DAG ------------------------------------------------------------------------------------


def test_dag_each_node_runs_once_per_execute(cluster):
    @ray.remote
    class Tally:
        def __init__(self):
            self.n = 0

        def hit(self, x):
            self.n += 1
            return x

        def count(self):
            return self.n

    tally = Tally.remote()
    with InputNode() as inp:
        shared = tally.hit.bind(inp)
        dag = MultiOutputNode([inc.bind(shared), inc.bind(shared, by=shared), ident.bind([shared, shared])])
    refs = dag.execute(5)
    assert isinstance(refs, list) and len(refs) == 3
    first, second, nested = ray.get(refs)
    assert (first, second) == (6, 10)
    assert ray.get(nested) == [5, 5]  # refs inside a list arrive as refs, as with .remote()
    assert nested[0] == nested[1]  # one node, one ref
    assert ray.get(tally.count.remote()) == 1
    dag.execute(6)
    assert ray.get(tally.count.remote()) == 2


def test_dag_returns_what_the_root_gives(cluster):
    assert isinstance(inc.bind(1).execute(), ray.ObjectRef)

    @ray.remote
    class Box:
        def __init__(self, v):
            self.v = v

        def get(self):
            return self.v

    handle = Box.bind(inc.bind(1)).execute()
    assert isinstance(handle, ray.ActorHandle)
    assert ray.get(handle.get.remote()) == 2
    with InputNode() as inp:
        pass
    assert inp.execute({"a": 1}) == {"a": 1}


def test_dag_nodes_nested_in_containers_and_kwargs(cluster):
    Pair = collections.namedtuple("Pair", "left right")

    @ray.remote
    def collect(items, pair, mapping, tags, scale=1):
        return (sorted(ray.get(list(items))), ray.get(pair.left), pair.right,
                {k: ray.get(v) for k, v in mapping.items()}, sorted(ray.get(list(tags))), scale)

    a, b = inc.bind(0), inc.bind(10)
    dag = collect.bind((a, b), Pair(a, 7), collections.OrderedDict(x=b), {a}, scale=inc.bind(99))
    assert ray.get(dag.execute()) == ([1, 11], 1, 7, {"x": 11}, [1], 100)


def test_dag_input_parts(cluster):
    class Obj:
        speed = 4

    with InputNode() as inp:
        dag = MultiOutputNode([ident.bind(inp[1]), ident.bind(inp["k"]), ident.bind(inp.k), ident.bind(inp[0])])
    assert inp[1] is inp[1] and inp.k is inp.k  # one node per part
    assert ray.get(dag.execute("zero", "one", k="kay")) == ["one", "kay", "kay", "zero"]
    with InputNode() as inp:
        dag = inc.bind(inp.speed)
    assert ray.get(dag.execute(Obj())) == 5
    with InputNode() as inp:
        dag = inc.bind(inp["missing"])
    with pytest.raises(KeyError):
        dag.execute({"present": 1})
    with pytest.raises(TypeError, match="int index or str"):
        inp[1.5]


def test_dag_class_node_methods_run_in_bind_order_on_a_new_actor_per_execute(cluster):
    @ray.remote
    class Acc:
        def __init__(self, start):
            self.total = start

        def add(self, x):
            self.total += x
            return self.total

        def get(self):
            return self.total

    with InputNode() as inp:
        acc = Acc.bind(100)
        acc.add.bind(inp)  # bound but not referenced: still runs, before the next call
        dag = acc.get.bind()
    assert ray.get(dag.execute(5)) == 105
    assert ray.get(dag.execute(7)) == 107  # a new actor: not 112


def test_dag_live_actor_method_bind(cluster):
    doubler = Doubler.remote()
    node = doubler.double.bind(inc.bind(1))
    assert isinstance(node, ClassMethodNode)
    assert ray.get(node.execute()) == 4
    assert ray.get([node.execute(), node.execute()]) == [4, 4]


def test_dag_long_chain_does_not_recurse(cluster):
    node = inc.bind(0)
    for _ in range(1500):
        node = inc.bind(node)
    assert ray.get(node.execute(), timeout=60) == 1501


def test_dag_task_errors_come_back_through_the_ref(cluster):
    @ray.remote
    def boom(x):
        raise ValueError(f"bad {x}")

    dag = inc.bind(boom.bind(1))
    ref = dag.execute()
    with pytest.raises(ValueError, match="bad 1"):
        ray.get(ref)


def test_dag_misuse_is_refused():
    assert isinstance(inc.bind(1), FunctionNode) and isinstance(inc.bind(1), DAGNode)
    with pytest.raises(AttributeError, match=r"\.bind\(\) cannot be used again"):
        inc.bind(1).bind(2)
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used"):
        inc.bind(1).remote()
    with pytest.raises(ValueError, match="InputNode should not take any args"):
        InputNode(1)
    with InputNode() as inp:
        with pytest.raises(ValueError, match="cannot be used as args or kwargs in ClassNode constructor"):
            Doubler.bind(inp)
        with pytest.raises(ValueError, match="cannot be used as args"):
            Doubler.bind([inp])
    node = Doubler.bind()
    assert isinstance(node, ClassNode)
    with pytest.raises(AttributeError, match="has no method 'triple'"):
        node.triple
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used on ClassMethodNodes"):
        node.double.remote(1)
    with pytest.raises(ValueError, match="Invalid input type for `args`"):
        MultiOutputNode(inc.bind(1))
    with pytest.raises(TypeError, match="FunctionNode takes a remote function"):
        FunctionNode(len, (), {})
    with pytest.raises(TypeError, match="ClassNode takes an actor class"):
        ClassNode(dict, (), {})
    with pytest.raises(TypeError, match="ClassNode or an actor handle"):
        ClassMethodNode(object(), "m", (), {})


def test_dag_input_node_rules(cluster):
    outside = InputNode()
    with pytest.raises(AssertionError, match="context manager"):
        inc.bind(outside).execute(1)
    with InputNode() as first:
        pass
    with InputNode() as second:
        pass
    with pytest.raises(AssertionError, match="only have one unique InputNode"):
        MultiOutputNode([inc.bind(first), inc.bind(second)]).execute(1)
