"""Scheduling strategies for .options(scheduling_strategy=...), as in ray.util.scheduling_strategies."""


class PlacementGroupSchedulingStrategy:
    """Run the task or actor on a placement group's reserved resources, in bundle
    ``placement_group_bundle_index`` (-1: any bundle). With
    ``placement_group_capture_child_tasks=True`` the tasks and actors it starts go into the same
    group too, unless they name a strategy of their own (as in Ray)."""

    def __init__(self, placement_group, placement_group_bundle_index=-1,
                 placement_group_capture_child_tasks=None):
        from prism.util.placement_group import PlacementGroup
        if not isinstance(placement_group, PlacementGroup):
            raise TypeError(f"placement_group must be a PlacementGroup, not a {type(placement_group).__name__}")
        if not isinstance(placement_group_bundle_index, int) or not (
                -1 <= placement_group_bundle_index < placement_group.bundle_count):
            raise ValueError(f"placement_group_bundle_index must be -1 or a bundle of the group "
                             f"(0..{placement_group.bundle_count - 1}), not {placement_group_bundle_index!r}")
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = bool(placement_group_capture_child_tasks)


class NodeAffinitySchedulingStrategy:
    """Run the task or actor on the node with id ``node_id`` (hex, as ``prism.nodes()`` and the
    runtime context give it). With ``soft=True`` it may run elsewhere when that node is dead or
    unknown; otherwise it fails with a clear error there."""

    def __init__(self, node_id, soft, _spill_on_unavailable=False, _fail_on_unavailable=False):
        if not isinstance(node_id, str):
            node_id = getattr(node_id, "hex", lambda: node_id)()
        self.node_id = node_id
        self.soft = bool(soft)
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def check_node(self):
        """Raises unless the node is this process's node, or the strategy is soft. (Work goes to the
        caller's node: another node of the cluster cannot be asked yet.)"""
        from prism._private import worker
        from prism import _prism
        nodes = worker.call(_prism.nodes)
        alive = {n["NodeID"] for n in nodes if n["Alive"]}
        if self.soft:
            return
        from prism.exceptions import TaskUnschedulableError
        if self.node_id not in alive:
            raise TaskUnschedulableError(
                f"NodeAffinitySchedulingStrategy: node {self.node_id} is not a live node of this cluster "
                f"(live: {', '.join(sorted(alive))}); pass soft=True to run elsewhere")
        if self.node_id != nodes[0]["NodeID"]:
            raise TaskUnschedulableError(
                f"NodeAffinitySchedulingStrategy: node {self.node_id} is another node of this cluster, and "
                "this version runs work on the caller's node only (sending it to another node comes with "
                "spillback); pass soft=True to run here")


__all__ = ["PlacementGroupSchedulingStrategy", "NodeAffinitySchedulingStrategy"]
