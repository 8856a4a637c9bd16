# Generator tasks stream by default (Ray 2.x): each yielded value is a ref, ready as soon as it
# was yielded; `async for` works too; num_returns="dynamic" gives one ref to a generator of refs.
import asyncio
import time

import prism as ray

ray.init(num_cpus=2)


@ray.remote
def task():
    for i in range(5):
        time.sleep(0.05)
        yield i


gen = task.remote()
assert isinstance(gen, ray.ObjectRefGenerator)
values = [ray.get(ref) for ref in gen]
assert values == [0, 1, 2, 3, 4], values


# The first value arrives before the task ends.
@ray.remote
def slow():
    yield "first"
    time.sleep(3)
    yield "second"


start = time.monotonic()
g = slow.remote()
assert ray.get(next(g)) == "first"
assert time.monotonic() - start < 2.5, "the first value waited for the whole task"
assert ray.get(next(g)) == "second"


# Errors: the ref after the last value raises.
@ray.remote
def fails():
    yield 1
    raise ValueError("boom")


g = fails.remote()
assert ray.get(next(g)) == 1
try:
    ray.get(next(g))
    raise AssertionError("the generator's error must come out")
except ValueError:
    pass


async def consume():
    out = []
    async for ref in task.remote():
        out.append(await ref)
    return out


assert asyncio.run(consume()) == [0, 1, 2, 3, 4]


@ray.remote(num_returns="dynamic")
def split(n):
    for i in range(n):
        yield i * 10


ref = split.remote(3)
dynamic = ray.get(ref)
assert [ray.get(r) for r in dynamic] == [0, 10, 20]
print("ok")
ray.shutdown()
