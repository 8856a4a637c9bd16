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
