# ray.get_runtime_context(): ids, assigned resources, namespace, restarts.
import os
import time

import prism as ray

ray.init(num_cpus=2, namespace="ctx-docs")
ctx = ray.get_runtime_context()
driver_job = ctx.get_job_id()
node = ctx.get_node_id()
assert ctx.get_task_id() is None  # the driver runs no task
assert ctx.get_actor_id() is None
assert ctx.namespace == "ctx-docs"
assert ctx.job_id.hex() == driver_job


@ray.remote(num_cpus=1)
def where():
    c = ray.get_runtime_context()
    return c.get_job_id(), c.get_node_id(), c.get_task_id(), c.get_worker_id(), c.get_assigned_resources()


job, task_node, task_id, worker_id, resources = ray.get(where.remote())
assert job == driver_job and task_node == node
assert task_id and worker_id != ctx.get_worker_id()
assert resources == {"CPU": 1.0}, resources
ids = {ray.get(where.remote())[2] for _ in range(3)}
assert len(ids) == 3, "every task has an id of its own"


@ray.remote(max_restarts=1)
class Phoenix:
    def info(self):
        c = ray.get_runtime_context()
        return c.get_actor_id(), c.was_current_actor_reconstructed, c.namespace, c.get_accelerator_ids()

    def die(self):
        os._exit(1)


p = Phoenix.remote()
actor_id, reconstructed, namespace, accelerators = ray.get(p.info.remote())
assert actor_id and not reconstructed and namespace == "ctx-docs"
assert accelerators == {"GPU": []}
p.die.remote()
for _ in range(100):
    try:
        again = ray.get(p.info.remote())
        break
    except ray.exceptions.RayActorError:
        continue
assert again[0] == actor_id and again[1] is True, again


# An actor's own handle and name.
@ray.remote
class Self:
    def __init__(self):
        self.n = 0

    def name(self):
        return ray.get_runtime_context().get_actor_name()

    def bump(self):
        self.n += 1
        return self.n

    def value(self):
        return self.n

    def bump_through_handle(self):
        me = ray.get_runtime_context().current_actor
        me.bump.remote()  # queued behind this call: runs after it
        return self.n


s = Self.options(name="me").remote()
assert ray.get(s.name.remote()) == "me"
assert ray.get(s.bump_through_handle.remote()) == 0
for _ in range(200):  # the call it made through its own handle runs soon after
    if ray.get(s.value.remote()) == 1:
        break
    time.sleep(0.05)
assert ray.get(s.value.remote()) == 1
assert ray.get(Self.remote().name.remote()) is None
print("ok")
ray.shutdown()
