"""prism: a GPU-centric distributed execution engine, with Ray's Python API.

    import prism as ray
    ray.init()

    @ray.remote
    def square(x):
        return x * x

    print(ray.get([square.remote(i) for i in range(8)]))
"""

import inspect as _inspect

from prism import exceptions
from prism._private.worker import (available_resources, cancel, cluster_resources, get, get_gpu_ids, init,
                                   is_initialized, nodes, put, shutdown, timeline, wait)
from prism.actor import ActorClass, ActorHandle, get_actor, kill
from prism.cross_language import cpp_function
from prism.object_ref import ObjectRef
from prism.remote_function import ObjectRefGenerator, RemoteFunction
from prism import util

__version__ = "0.1.0"


def remote(*args, **options):
    """Makes a function remote: ``@prism.remote`` or ``@prism.remote(num_cpus=2, ...)``."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@prism.remote takes a function, or only keyword options: @prism.remote(num_cpus=1)")

    def decorator(target):
        return _make_remote(target, options)

    return decorator


def _make_remote(target, options):
    if _inspect.isclass(target):
        return ActorClass(target, options)
    return RemoteFunction(target, options)


__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "kill", "get_actor",
    "cluster_resources", "available_resources", "nodes", "get_gpu_ids", "timeline", "ObjectRef", "ObjectRefGenerator",
    "RemoteFunction", "ActorClass", "ActorHandle", "cpp_function", "exceptions", "util",
]
