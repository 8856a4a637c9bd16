# prism.util.queue.Queue, as Ray's ray.util.queue: a queue shared between the driver, tasks and
# actors, with blocking, non-blocking, batched and async puts and gets.
import asyncio

import prism as ray
from prism.util.queue import Empty, Full, Queue

ray.init(num_cpus=2)

# You can pass this object around to different tasks/actors
queue = Queue(maxsize=100)


@ray.remote
def consumer(id, queue):
    next_item = queue.get(block=True)
    print(f"consumer {id} got work {next_item}")
    return next_item


consumers = [consumer.remote(id, queue) for id in range(2)]
[queue.put(i) for i in range(2)]
assert sorted(ray.get(consumers)) == [0, 1]

# Producer in a task, consumer here.
@ray.remote
def producer(queue, n):
    for i in range(n):
        queue.put(i)
    return n


assert ray.get(producer.remote(queue, 5)) == 5
assert [queue.get() for _ in range(5)] == [0, 1, 2, 3, 4]
assert queue.empty() and len(queue) == 0

# Bounded queue: non-blocking put on a full queue raises Full; get with a timeout raises Empty.
small = Queue(maxsize=2)
small.put_nowait_batch(["a", "b"])
assert small.full() and small.qsize() == 2
try:
    small.put("c", block=False)
    raise AssertionError("expected Full")
except Full:
    pass
assert small.get_nowait_batch(2) == ["a", "b"]
try:
    small.get(timeout=0.2)
    raise AssertionError("expected Empty")
except Empty:
    pass


# Async producers and consumers, in an actor and on the driver's event loop.
@ray.remote
class AsyncConsumer:
    async def take(self, queue, n):
        return [await queue.get_async() for _ in range(n)]


async def main():
    q = Queue()
    taker = AsyncConsumer.remote()
    ref = taker.take.remote(q, 3)
    for i in range(3):
        await q.put_async(i)
    assert ray.get(ref) == [0, 1, 2]
    await q.put_async("x")
    assert await q.get_async(timeout=1) == "x"
    try:
        await q.get_async(block=False)
        raise AssertionError("expected Empty")
    except Empty:
        pass


asyncio.run(main())

queue.shutdown()
small.shutdown(force=True)
ray.shutdown()
print("util_queue: ok")
