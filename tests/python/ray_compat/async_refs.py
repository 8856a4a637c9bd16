# ObjectRefs in asyncio code: `await ref`, ref.future(), asyncio.wrap_future(ref.future()).
import asyncio
import concurrent.futures

import prism as ray

ray.init(num_cpus=2)


@ray.remote
def some_task(x):
    return x + 1


async def main():
    assert await some_task.remote(1) == 2
    results = await asyncio.gather(*[some_task.remote(i) for i in range(5)])
    assert results == [1, 2, 3, 4, 5]
    fut = asyncio.wrap_future(some_task.remote(10).future())
    assert await fut == 11


asyncio.run(main())

fut = some_task.remote(41).future()
assert isinstance(fut, concurrent.futures.Future)
assert fut.result(timeout=30) == 42


@ray.remote
def fails():
    raise KeyError("missing")


try:
    fails.remote().future().result(timeout=30)
    raise AssertionError("the future must carry the error")
except KeyError:
    pass


# An async actor awaits refs of other tasks.
@ray.remote
class AsyncActor:
    async def run(self, n):
        return sum(await asyncio.gather(*[some_task.remote(i) for i in range(n)]))


a = AsyncActor.remote()
assert ray.get(a.run.remote(4)) == 10
print("ok")
ray.shutdown()
