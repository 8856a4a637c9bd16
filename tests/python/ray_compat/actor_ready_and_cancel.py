# actor.__ray_ready__, and ray.cancel of a running async actor call.
import asyncio
import time

import prism as ray

ray.init(num_cpus=2)


@ray.remote
class Slow:
    def __init__(self):
        time.sleep(0.5)

    async def forever(self):
        await asyncio.sleep(3600)

    async def ping(self):
        return "pong"


a = Slow.remote()
assert ray.get(a.__ray_ready__.remote(), timeout=30) is True
ref = a.forever.remote()
time.sleep(0.5)
ray.cancel(ref)
try:
    ray.get(ref, timeout=30)
    raise AssertionError("a cancelled call must raise")
except ray.exceptions.TaskCancelledError:
    pass
assert ray.get(a.ping.remote()) == "pong"  # the actor lives on
print("ok")
ray.shutdown()
