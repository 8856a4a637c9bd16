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


def placement_group(bundles, strategy="PACK", name="", lifetime=None, require_nvlink=False):
    """Reserves `bundles` (a list of {"CPU": 1, "GPU": 1, ...}) together. Returns at once; the
    group is created when the node has room for all of them (``pg.wait()``, ``pg.ready()``).
    The group's GPUs are chosen together, as the best-connected set of the node; with
    ``require_nvlink=True`` they must all be joined by NVLink (an InfeasibleError where no such
    set can exist)."""
    worker._check_initialized()
    if lifetime not in (None,):
        raise ValueError("placement groups live with their job in this version (no lifetime='detached')")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}, not {strategy!r}")
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("bundles must be a non-empty list of resource dicts")
    for b in bundles:
        if not isinstance(b, dict) or not b:
            raise ValueError(f"each bundle must be a non-empty dict of resources, not {b!r}")
    pg_id, pg_name, specs = worker.call(_prism.create_placement_group, [dict(b) for b in bundles], strategy, name,
                                        bool(require_nvlink))
    return PlacementGroup(pg_id, pg_name, specs)


def remove_placement_group(pg):
    """Gives its resources back; its actors die and its tasks stop."""
    worker._check_initialized()
    worker.call(_prism.remove_placement_group, pg.id)


def get_placement_group(name):
    worker._check_initialized()
    pg_id, pg_name, specs = worker.call(_prism.get_placement_group, name)
    return PlacementGroup(pg_id, pg_name, specs)
