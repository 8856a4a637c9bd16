"""Placement groups: bundles of resources reserved together, as in ray.util.placement_group."""

from prism import _prism
from prism._private import worker

_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroup:
    """A reserved group of bundles; tasks and actors go into it with
    ``scheduling_strategy=PlacementGroupSchedulingStrategy(pg, bundle_index)``."""

    def __init__(self, pg_id, name, bundles):
        self.id = pg_id
        self.name = name
        self.bundle_specs = [dict(b) for b in bundles]

    @property
    def bundle_count(self):
        return len(self.bundle_specs)

    def wait(self, timeout_seconds=30):
        """True once its bundles are reserved; False if `timeout_seconds` passed first."""
        return worker.call(_prism.wait_placement_group, self.id, int(timeout_seconds * 1000))

    def ready(self):
        """An ObjectRef that becomes ready (True) once the group is created: a task that needs
        nothing runs in its first bundle, as in Ray."""
        from prism.remote_function import RemoteFunction
        from prism.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        return RemoteFunction(_ready, {"num_cpus": 0, "scheduling_strategy": PlacementGroupSchedulingStrategy(
            self, placement_group_bundle_index=0)}).remote()

    def __repr__(self):
        return f"PlacementGroup(id={self.id}, bundles={self.bundle_specs})"

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


def _ready():
    return True


def placement_group(bundles, strategy="PACK", name="", lifetime=None, require_nvlink=False, _max_cpu_fraction_per_node=None):
    """Reserves `bundles` (a list of {"CPU": 1, "GPU": 1, ...}) together. Returns at once; the
    group is created when the node has room for all of them (``pg.wait()``, ``pg.ready()``).
    ``lifetime="detached"`` keeps it after its job ends, until removed. The group's GPUs are
    chosen together, as the best-connected set of the node; with ``require_nvlink=True`` they
    must all be joined by NVLink (an InfeasibleError where no such set can exist)."""
    worker._check_initialized()
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', not {lifetime!r}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}, not {strategy!r}")
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("bundles must be a non-empty list of resource dicts")
    for b in bundles:
        if not isinstance(b, dict) or not b:
            raise ValueError(f"each bundle must be a non-empty dict of resources, not {b!r}")
    pg_id, pg_name, specs = worker.call(_prism.create_placement_group, [dict(b) for b in bundles], strategy, name,
                                        bool(require_nvlink), lifetime == "detached")
    return PlacementGroup(pg_id, pg_name, specs)


def placement_group_table(placement_group=None):
    """The cluster's placement groups as Ray's table: {id: {"placement_group_id", "name",
    "bundles": {index: {...}}, "bundles_to_node_id", "strategy", "state", "stats"}}, or one
    group's entry when `placement_group` is given."""
    worker._check_initialized()
    node = worker.call(_prism.runtime_context)["node_id"]
    table = {}
    for g in worker.call(_prism.placement_groups):
        state = g["state"]
        table[g["id"]] = {
            "placement_group_id": g["id"],
            "name": g["name"],
            "bundles": {i: dict(b) for i, b in enumerate(g["bundles"])},
            "bundles_to_node_id": {i: node for i in range(len(g["bundles"]))} if state == "CREATED" else {},
            "strategy": g["strategy"],
            "state": state,
            "job_id": g["job_id"],
            "is_detached": g["detached"],
            "stats": {"scheduling_state": "FINISHED" if state == "CREATED" else state},
        }
    if placement_group is not None:
        entry = table.get(placement_group.id)
        if entry is None:  # removed: Ray still reports it, as REMOVED
            entry = {"placement_group_id": placement_group.id, "name": placement_group.name,
                     "bundles": {i: dict(b) for i, b in enumerate(placement_group.bundle_specs)},
                     "bundles_to_node_id": {}, "strategy": None, "state": "REMOVED", "stats": {}}
        return entry
    return table


def remove_placement_group(pg):
    """Gives its resources back; its actors die and its tasks stop."""
    worker._check_initialized()
    worker.call(_prism.remove_placement_group, pg.id)


def get_placement_group(name):
    worker._check_initialized()
    pg_id, pg_name, specs = worker.call(_prism.get_placement_group, name)
    return PlacementGroup(pg_id, pg_name, specs)
