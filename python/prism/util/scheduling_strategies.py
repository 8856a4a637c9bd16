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
    runtime context give it). With ``soft=True`` it may run elsewhere when that node is dead,
    unknown or too small; otherwise it fails there with TaskUnschedulableError."""

    def __init__(self, node_id, soft, _spill_on_unavailable=False, _fail_on_unavailable=False):
        if not isinstance(node_id, str):
            node_id = getattr(node_id, "hex", lambda: node_id)()
        self.node_id = node_id
        self.soft = bool(soft)
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable


__all__ = ["PlacementGroupSchedulingStrategy", "NodeAffinitySchedulingStrategy"]
