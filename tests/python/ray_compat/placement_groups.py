# Placement groups: the table, detached groups, and child tasks captured into the group.
import prism as ray
from prism.util import placement_group, placement_group_table, remove_placement_group
from prism.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(num_cpus=4)

pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK", name="pair")
ray.get(pg.ready())
entry = placement_group_table(pg)
assert entry["state"] == "CREATED", entry
assert entry["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}, entry
assert entry["name"] == "pair" and entry["strategy"] == "PACK"
assert pg.id in placement_group_table()
assert ray.available_resources()["CPU"] == 2.0


@ray.remote(num_cpus=1)
def child():
    return ray.get_runtime_context().get_assigned_resources()


@ray.remote(num_cpus=1)
def parent():
    # With capture, the child goes into the parent's placement group too.
    return ray.get(child.remote()), ray.get_runtime_context().get_placement_group_id()


resources, pg_seen = ray.get(parent.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
    pg, placement_group_capture_child_tasks=True)).remote())
assert pg_seen == pg.id and resources == {"CPU": 1.0}

remove_placement_group(pg)
assert placement_group_table(pg)["state"] == "REMOVED"

detached = placement_group([{"CPU": 1}], lifetime="detached")
assert detached.wait(10)
assert placement_group_table(detached)["is_detached"] is True
remove_placement_group(detached)

try:
    placement_group([{"CPU": 1}], lifetime="forever")
    raise AssertionError("a bad lifetime must be refused")
except ValueError:
    pass
print("ok")
ray.shutdown()
