"""prism.util: placement groups and scheduling strategies, as in ray.util."""

from prism.util.placement_group import (PlacementGroup, get_placement_group, placement_group,
                                        remove_placement_group)

__all__ = ["PlacementGroup", "placement_group", "remove_placement_group", "get_placement_group"]
