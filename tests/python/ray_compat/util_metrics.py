# Application metrics, as Ray's ray.util.metrics: Counter, Gauge and Histogram, recorded in the
# driver and in an actor.
import prism as ray
from prism.util.metrics import Counter, Gauge, Histogram
from prism.util.metrics import _registry_snapshot

ray.init(num_cpus=2)


@ray.remote
class MyActor:
    def __init__(self, name):
        self._curr_count = 0
        self.counter = Counter(
            "num_requests",
            description="Number of requests processed by the actor.",
            tag_keys=("actor_name",),
        )
        self.counter.set_default_tags({"actor_name": name})
        self.gauge = Gauge(
            "curr_count",
            description="Current count held by the actor. Goes up and down.",
            tag_keys=("actor_name",),
        )
        self.gauge.set_default_tags({"actor_name": name})
        self.histogram = Histogram(
            "request_latency",
            description="Latencies of requests in ms.",
            boundaries=[0.1, 1],
            tag_keys=("actor_name",),
        )
        self.histogram.set_default_tags({"actor_name": name})

    def process_request(self, num):
        self.counter.inc()
        self._curr_count += num
        self.gauge.set(self._curr_count)
        self.histogram.observe(0.05 * num)
        return self._curr_count

    def snapshot(self):
        return _registry_snapshot()


actor = MyActor.remote("my_actor")
for i in range(1, 4):
    ray.get(actor.process_request.remote(i))

# The actor's metrics live in the actor's process.
snap = ray.get(actor.snapshot.remote())
tags = (("actor_name", "my_actor"),)
assert snap["num_requests"]["kind"] == "counter"
assert snap["num_requests"]["series"][tags] == 3.0
assert snap["curr_count"]["series"][tags] == 6.0
hist = snap["request_latency"]["series"][tags]
# 0.05 and 0.1 fall in (0, 0.1], 0.15 in (0.1, 1], none above 1.
assert hist["count"] == 3 and hist["buckets"] == [2, 1, 0]
assert abs(hist["sum"] - 0.3) < 1e-9

# In the driver, with tags given per call.
jobs = Counter("jobs_total", description="Jobs run.", tag_keys=("kind",))
jobs.inc(tags={"kind": "train"})
jobs.inc(2, tags={"kind": "eval"})
jobs.inc(tags={"kind": "train"})
series = _registry_snapshot()["jobs_total"]["series"]
assert series == {(("kind", "train"),): 2.0, (("kind", "eval"),): 2.0}


# A metric passed to a task is rebuilt there (with its default tags) and counts in that worker.
@ray.remote
def count_in_task(counter):
    counter.inc(5)
    return _registry_snapshot()["jobs_total"]["series"]


remote_series = ray.get(count_in_task.remote(jobs.set_default_tags({"kind": "task"})))
assert remote_series[(("kind", "task"),)] == 5.0

# Bad input is refused as Ray refuses it.
for bad in (lambda: jobs.inc(-1), lambda: jobs.inc(tags={"kind": "x", "other": "y"}),
            lambda: Histogram("h", boundaries=[]), lambda: Counter("c", tag_keys=["a"])):
    try:
        bad()
        raise AssertionError("expected an error")
    except (ValueError, TypeError):
        pass

ray.shutdown()
print("util_metrics: ok")
