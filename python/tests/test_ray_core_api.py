"""Ray Core APIs beyond the basics: several return values, generators, awaitable refs,
concurrency groups, actor exit, retried exceptions, runtime context, namespaces, runtime
environments; their bad input and faults."""

import asyncio
import os
import tempfile
import time

import pytest

import prism as ray
from prism import exceptions


@ray.remote
def three():
    return 1, 2, 3


def test_num_returns_bad_values_are_refused(cluster):
    for bad in (-1, 1.5, "many", True):
        with pytest.raises(ValueError, match="num_returns"):
            three.options(num_returns=bad)
    with pytest.raises(ValueError, match="num_returns"):
        ray.method(num_returns="lots")
    with pytest.raises(ValueError, match="between 1 and"):
        three.options(num_returns=1 << 20).remote()


def test_every_return_fails_alike_when_the_task_raises(cluster):
    @ray.remote(num_returns=2)
    def boom():
        raise KeyError("nope")

    a, b = boom.remote()
    for ref in (a, b):
        with pytest.raises(KeyError):
            ray.get(ref)


def test_returns_survive_a_worker_death(cluster):
    marker = os.path.join(tempfile.mkdtemp(), "died")

    @ray.remote(num_returns=2, max_retries=2)
    def dies_once():
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return "a", "b"

    assert ray.get(dies_once.remote()) == ["a", "b"]


def test_large_returns_go_through_the_store(cluster):
    import numpy as np

    @ray.remote(num_returns=2)
    def big():
        return np.ones(1 << 20), np.zeros(1 << 20)

    ones, zeros = big.remote()
    del ones  # each return lives on its own
    assert ray.get(zeros).sum() == 0


def test_generator_error_and_timeout(cluster):
    @ray.remote
    def slow():
        yield 1
        time.sleep(60)
        yield 2

    gen = slow.remote()
    assert ray.get(next(gen)) == 1
    with pytest.raises(exceptions.GetTimeoutError):
        gen.next(timeout=0.2)
    ray.cancel(gen.completed(), force=True)


def test_future_of_a_dead_actor_carries_its_error(cluster):
    @ray.remote
    class Dies:
        def die(self):
            os._exit(1)

    a = Dies.remote()
    fut = a.die.remote().future()
    with pytest.raises(exceptions.RayActorError):
        fut.result(timeout=60)


def test_await_in_asyncio_gather_with_errors(cluster):
    @ray.remote
    def maybe(i):
        if i == 2:
            raise ValueError("two")
        return i

    async def main():
        return await asyncio.gather(*[maybe.remote(i) for i in range(4)], return_exceptions=True)

    out = asyncio.run(main())
    assert out[0] == 0 and out[3] == 3 and isinstance(out[2], ValueError)


def test_concurrency_groups_bad_input(cluster):
    with pytest.raises(ValueError, match="concurrency_groups"):
        @ray.remote(concurrency_groups={"io": 0})
        class Bad:
            pass

    @ray.remote(concurrency_groups={"io": 1})
    class Undeclared:
        @ray.method(concurrency_group="cpu")
        def f(self):
            return 1

    with pytest.raises(ValueError, match="cpu"):
        Undeclared.remote()

    @ray.remote
    class Plain:
        def f(self):
            return 1

    p = Plain.remote()
    with pytest.raises(ValueError, match="no concurrency groups"):
        p.f.options(concurrency_group="io").remote()
    with pytest.raises(ValueError, match="unknown actor method option"):
        p.f.options(priority=1)


def test_exit_actor_fails_pending_calls_and_frees_its_name(cluster):
    @ray.remote
    class Quitter:
        def quit(self):
            ray.actor.exit_actor()

        def ping(self):
            return 1

    q = Quitter.options(name="quitter").remote()
    assert ray.get(q.ping.remote()) == 1
    calls = [q.quit.remote()] + [q.ping.remote() for _ in range(3)]
    for c in calls:
        with pytest.raises(exceptions.RayActorError, match="exit_actor"):
            ray.get(c, timeout=60)
    with pytest.raises(ValueError):
        ray.get_actor("quitter")
    assert ray.get(Quitter.options(name="quitter").remote().ping.remote()) == 1


def test_async_actor_exit(cluster):
    @ray.remote
    class AsyncQuitter:
        async def quit(self):
            ray.actor.exit_actor()

    a = AsyncQuitter.remote()
    with pytest.raises(exceptions.RayActorError):
        ray.get(a.quit.remote(), timeout=60)


def test_retry_exceptions_bad_input(cluster):
    with pytest.raises(TypeError, match="retry_exceptions"):
        three.options(retry_exceptions=[KeyError, "ValueError"])
    with pytest.raises(TypeError, match="retry_exceptions"):
        three.options(retry_exceptions="yes")


def test_runtime_env_bad_input(cluster):
    with pytest.raises(ValueError, match="not a folder"):
        three.options(runtime_env={"working_dir": "/no/such/folder"}).remote()
    with pytest.raises(TypeError, match="env_vars"):
        three.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(ValueError, match="conda"):
        three.options(runtime_env={"conda": "env"})
    with pytest.raises(TypeError, match="dict"):
        three.options(runtime_env=["env_vars"])


def test_init_bad_input():
    with pytest.raises(ValueError, match="local_mode"):
        ray.init(local_mode=True)
    with pytest.raises(ValueError, match="namespace"):
        ray.init(namespace="")
    with pytest.raises(TypeError, match="address"):
        ray.init(address=5)
    assert not ray.is_initialized()


def test_get_actor_bad_input(cluster):
    with pytest.raises(ValueError, match="name"):
        ray.get_actor("")
    with pytest.raises(ValueError, match="no live actor"):
        ray.get_actor("missing", namespace="elsewhere")


def test_each_job_has_an_anonymous_namespace(cluster):
    ns = ray.get_runtime_context().namespace
    assert ns and ray.get_runtime_context().namespace == ns


def test_cancel_a_queued_async_call(cluster):
    @ray.remote(max_concurrency=1)
    class One:
        async def hold(self, t):
            await asyncio.sleep(t)
            return t

    a = One.remote()
    first = a.hold.remote(1)
    queued = a.hold.remote(0)
    ray.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=30)
    assert ray.get(first, timeout=30) == 1


def test_placement_group_table_of_pending_group(cluster):
    from prism.util import placement_group, placement_group_table, remove_placement_group
    full = placement_group([{"CPU": 2}])
    assert full.wait(30)
    waiting = placement_group([{"CPU": 1}])  # fits the node, not now
    try:
        assert placement_group_table(waiting)["state"] == "PENDING"
        assert placement_group_table(waiting)["bundles_to_node_id"] == {}
    finally:
        remove_placement_group(waiting)
        remove_placement_group(full)


def test_async_actor_with_groups_runs_its_plain_methods(cluster):
    @ray.remote(concurrency_groups={"io": 2})
    class Mixed:
        async def f(self):
            return "async"

        def g(self):
            return "plain"

        @ray.method(concurrency_group="io")
        def h(self):
            return "plain in io"

    m = Mixed.remote()
    assert ray.get([m.f.remote(), m.g.remote(), m.h.remote()]) == ["async", "plain", "plain in io"]


def test_a_call_cancelled_right_after_it_was_sent_ends(cluster):
    @ray.remote
    class Forever:
        async def wait(self):
            await asyncio.sleep(3600)

    a = Forever.remote()
    ray.get(a.__ray_ready__.remote())
    for _ in range(10):  # the cancel may reach the actor before the call does
        ref = a.wait.remote()
        ray.cancel(ref)
        with pytest.raises(exceptions.TaskCancelledError):
            ray.get(ref, timeout=30)


def test_a_future_never_starts_a_cluster_after_shutdown():
    ray.init(num_cpus=1)

    @ray.remote
    def slow():
        time.sleep(30)

    fut = slow.remote().future()
    ray.shutdown()
    with pytest.raises(Exception):
        fut.result(timeout=30)
    time.sleep(0.2)
    assert not ray.is_initialized()


def test_returns_written_before_a_later_one_failed_are_freed():
    import numpy as np
    from prism import _prism
    ray.init(num_cpus=1, object_store_memory=200 << 20)
    try:
        @ray.remote(num_returns=2)
        def too_big():
            return np.ones(120 << 20, dtype=np.uint8), np.ones(300 << 20, dtype=np.uint8)

        a, b = too_big.remote()
        with pytest.raises(exceptions.ObjectStoreFullError):
            ray.get(a)
        with pytest.raises(exceptions.ObjectStoreFullError):
            ray.get(b)
        del a, b
        deadline = time.time() + 10
        while _prism.object_store_stats()["used"] > (1 << 20) and time.time() < deadline:
            time.sleep(0.1)
        assert _prism.object_store_stats()["used"] <= (1 << 20)
    finally:
        ray.shutdown()


def test_a_handle_found_by_name_knows_its_methods_options(cluster):
    @ray.remote
    class Two:
        @ray.method(num_returns=2)
        def pair(self):
            return 1, 2

    keep = Two.options(name="two").remote()  # noqa: F841 - an actor no handle refers to goes, named or not
    x, y = ray.get_actor("two").pair.remote()
    assert ray.get([x, y]) == [1, 2]


def test_task_ids_in_async_methods_and_group_threads(cluster):
    @ray.remote
    class AsyncIds:
        async def task_id(self):
            return ray.get_runtime_context().get_task_id()

    @ray.remote(concurrency_groups={"io": 2})
    class GroupIds:
        @ray.method(concurrency_group="io")
        def task_id(self):
            return ray.get_runtime_context().get_task_id()

    for actor in (AsyncIds.remote(), GroupIds.remote()):
        ids = ray.get([actor.task_id.remote() for _ in range(3)])
        assert all(ids) and len(set(ids)) == 3, ids


def test_captured_children_go_into_any_bundle_and_know_their_group(cluster):
    from prism.util import placement_group, remove_placement_group
    from prism.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    assert pg.wait(30)

    @ray.remote(num_cpus=1)
    def child():
        return ray.get_runtime_context().get_placement_group_id()

    @ray.remote(num_cpus=1)
    def parent():
        # The parent holds bundle 0: a child pinned to bundle 0 could never run.
        return ray.get(child.remote())

    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0,
                                                placement_group_capture_child_tasks=True)
    assert ray.get(parent.options(scheduling_strategy=strategy).remote(), timeout=60) == pg.id
    plain = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
    assert ray.get(child.options(scheduling_strategy=plain).remote()) == pg.id
    remove_placement_group(pg)  # (its bundles hold both CPUs)
    assert ray.get(child.remote()) is None


def test_children_inherit_their_parents_runtime_env(cluster):
    @ray.remote
    def read():
        return os.environ.get("INHERITED")

    @ray.remote
    def parent():
        return ray.get(read.remote()), ray.get(read.options(runtime_env={"env_vars": {"INHERITED": "own"}}).remote())

    assert ray.get(parent.options(runtime_env={"env_vars": {"INHERITED": "parent"}}).remote()) == ("parent", "own")
    assert ray.get(read.remote()) is None


def test_bad_concurrency_group_names(cluster):
    with pytest.raises(ValueError, match="group"):
        @ray.remote(concurrency_groups={"a;b": 1})
        class Bad:
            pass
    with pytest.raises(ValueError, match="namespace"):
        ray.remote(type("Probe", (), {})).options(namespace="a\0b")


def test_force_cancel_of_an_actor_call_is_refused(cluster):
    @ray.remote
    class A:
        def f(self):
            return 1

    ref = A.remote().f.remote()
    with pytest.raises(ValueError, match="force=True"):
        ray.cancel(ref, force=True)
    assert ray.get(ref) == 1


def test_an_interpreter_without_the_dependencies_is_told_what_to_install():
    import subprocess
    import sys
    # -S: without site-packages, so neither cloudpickle nor msgpack can be imported.
    out = subprocess.run([sys.executable, "-S", "-c", "import prism"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "prism needs the Python package(s) cloudpickle, msgpack" in out.stderr, out.stderr
    assert "pip install cloudpickle msgpack" in out.stderr


def test_wait_refuses_a_ref_given_twice_and_keeps_the_order(cluster):
    refs = [ray.put(i) for i in range(5)]
    with pytest.raises(ValueError, match="twice"):
        ray.wait([refs[0], refs[1], refs[0]])
    done, rest = ray.wait(refs, num_returns=3)
    assert done == refs[:3] and rest == refs[3:]
    done, rest = ray.wait(refs, num_returns=0)
    assert done == [] and rest == refs


def test_a_prefaulted_object_store_holds_its_whole_size_and_works():
    import numpy as np
    from prism import _prism
    ray.init(num_cpus=1, object_store_memory=64 << 20, _object_store_prefault=True)
    try:
        value = np.arange(8 << 20, dtype=np.uint8)  # 8 MiB: stored, copied over threads' parts
        ref = ray.put(value)
        assert np.array_equal(ray.get(ref), value)
        assert _prism.object_store_stats()["capacity"] >= 63 << 20
    finally:
        ray.shutdown()
    with pytest.raises(Exception, match="available"):
        ray.init(num_cpus=1, object_store_memory=1 << 50, _object_store_prefault=True)
    assert not ray.is_initialized()
