"""Scheduling strategies for .options(scheduling_strategy=...), as in ray.util.scheduling_strategies."""


class PlacementGroupSchedulingStrategy:
    """Run the task or actor on a placement group's reserved resources, in bundle
    ``placement_group_bundle_index`` (-1: any bundle)."""

    def __init__(self, placement_group, placement_group_bundle_index=-1,
                 placement_group_capture_child_tasks=None):
        if placement_group_capture_child_tasks:
            raise ValueError("placement_group_capture_child_tasks is not supported in this version")
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index


__all__ = ["PlacementGroupSchedulingStrategy"]
