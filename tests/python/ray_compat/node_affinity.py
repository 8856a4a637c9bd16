# NodeAffinitySchedulingStrategy: run on a given node; soft falls back, hard fails clearly.
import prism as ray
from prism.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(num_cpus=2)


@ray.remote
def node_of():
    return ray.get_runtime_context().get_node_id()


node = ray.get_runtime_context().get_node_id()
assert ray.get(node_of.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()) == node
unknown = "f" * len(node)
assert ray.get(node_of.options(scheduling_strategy=NodeAffinitySchedulingStrategy(unknown, soft=True)).remote()) == node
try:
    ray.get(node_of.options(scheduling_strategy=NodeAffinitySchedulingStrategy(unknown, soft=False)).remote())
    raise AssertionError("a hard affinity to an unknown node must fail")
except ray.exceptions.TaskUnschedulableError as e:
    assert unknown in str(e)
print("ok")
ray.shutdown()
