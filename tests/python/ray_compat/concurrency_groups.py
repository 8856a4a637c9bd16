# Concurrency groups: an actor's methods run in named groups, each with its own limit.
import asyncio
import threading
import time

import prism as ray

ray.init(num_cpus=2)


@ray.remote(concurrency_groups={"io": 2, "compute": 1})
class AsyncIOActor:
    def __init__(self):
        self.running = {"io": 0, "compute": 0}
        self.peak = {"io": 0, "compute": 0}

    async def _track(self, group):
        self.running[group] += 1
        self.peak[group] = max(self.peak[group], self.running[group])
        await asyncio.sleep(0.2)
        self.running[group] -= 1

    @ray.method(concurrency_group="io")
    async def f1(self):
        await self._track("io")

    @ray.method(concurrency_group="compute")
    async def f3(self):
        await self._track("compute")

    async def peaks(self):
        return dict(self.peak)


a = AsyncIOActor.remote()
ray.get([a.f1.remote() for _ in range(6)] + [a.f3.remote() for _ in range(3)])
assert ray.get(a.peaks.remote()) == {"io": 2, "compute": 1}

# .options(concurrency_group=) picks the group of one call.
ray.get([a.f3.options(concurrency_group="io").remote() for _ in range(4)])
assert ray.get(a.peaks.remote())["compute"] == 2


@ray.remote(concurrency_groups={"io": 2})
class ThreadedActor:
    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    @ray.method(concurrency_group="io")
    def io(self):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.2)
        with self.lock:
            self.running -= 1

    def peak_seen(self):  # the default group (max_concurrency 1)
        return self.peak


t = ThreadedActor.remote()
ray.get([t.io.remote() for _ in range(6)])
assert ray.get(t.peak_seen.remote()) == 2

# In an async actor with groups, plain methods run as in any async actor.
@ray.remote(concurrency_groups={"io": 2})
class Mixed:
    async def fetch(self):
        return "fetched"

    def status(self):
        return "ok"


m = Mixed.remote()
assert ray.get([m.fetch.remote(), m.status.remote()]) == ["fetched", "ok"]

try:
    t.io.options(concurrency_group="nope").remote()
    ray.get(t.io.options(concurrency_group="nope").remote())
    raise AssertionError("an unknown group must fail")
except ValueError:
    pass
print("ok")
ray.shutdown()
