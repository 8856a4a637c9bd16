# ActorPool, as in Ray Core's documentation (ray.util.ActorPool): map, map_unordered, submit
# and get_next over a fixed set of actors.
import time

import prism as ray
from prism.util import ActorPool

ray.init(num_cpus=2)


@ray.remote
class Actor:
    def double(self, n):
        return n * 2


a1, a2 = Actor.remote(), Actor.remote()
pool = ActorPool([a1, a2])

# pool.map(..) returns a Python generator object ActorPool.map
gen = pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])
print(list(gen))
assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])) == [2, 4, 6, 8]

# Unordered: results as they finish.
results = pool.map_unordered(lambda a, v: a.double.remote(v), range(10))
assert sorted(results) == [2 * i for i in range(10)]

# submit / get_next keep the submission order; more work than actors waits in the pool.
for v in [10, 20, 30]:
    pool.submit(lambda a, v: a.double.remote(v), v)
assert not pool.has_free()
assert [pool.get_next(), pool.get_next(), pool.get_next()] == [20, 40, 60]
assert not pool.has_next()
assert pool.has_free()


@ray.remote
class Sleeper:
    def nap(self, seconds):
        time.sleep(seconds)
        return seconds


# The shorter call comes back first from get_next_unordered.
pool = ActorPool([Sleeper.remote(), Sleeper.remote()])
pool.submit(lambda a, v: a.nap.remote(v), 1.0)
pool.submit(lambda a, v: a.nap.remote(v), 0.1)
assert pool.get_next_unordered() == 0.1
try:
    pool.get_next_unordered(timeout=0.05)
    raise AssertionError("expected a timeout")
except TimeoutError:
    pass
assert pool.get_next_unordered() == 1.0

# Actors leave and join the pool.
idle = pool.pop_idle()
assert idle is not None
pool.push(idle)
try:
    pool.push(idle)
    raise AssertionError("pushing an actor twice must fail")
except ValueError:
    pass

ray.shutdown()
print("actor_pool: ok")
