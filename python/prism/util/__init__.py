"""prism.util, as ray.util: placement groups, scheduling strategies, an actor pool, a queue,
metrics, serializers and the node's address."""

from prism._private.serialization import deregister_serializer, register_serializer
from prism.util.placement_group import (PlacementGroup, get_placement_group, placement_group,
                                        placement_group_table, remove_placement_group)


def get_node_ip_address():
    """The address of the node this process runs on."""
    from prism._private import worker
    return worker.node_ip_address()


def __getattr__(name):
    # Modules with heavier imports load on first use (prism.util.ActorPool, ...).
    if name == "ActorPool":
        from prism.util.actor_pool import ActorPool
        return ActorPool
    if name == "inspect_serializability":
        from prism.util.check_serialize import inspect_serializability
        return inspect_serializability
    if name in ("queue", "metrics", "scheduling_strategies", "actor_pool", "check_serialize"):
        import importlib
        return importlib.import_module(f"prism.util.{name}")
    raise AttributeError(f"module 'prism.util' has no attribute {name!r}")


__all__ = ["PlacementGroup", "placement_group", "remove_placement_group", "get_placement_group",
           "placement_group_table", "get_node_ip_address", "register_serializer", "deregister_serializer",
           "ActorPool", "inspect_serializability"]
