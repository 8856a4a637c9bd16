"""prism: a GPU-centric distributed execution engine, with Ray's Python API.

    import prism as ray
    ray.init()

    @ray.remote
    def square(x):
        return x * x

    print(ray.get([square.remote(i) for i in range(8)]))
"""

import inspect as _inspect


def _check_dependencies():
    """Names what this interpreter lacks, instead of a bare ModuleNotFoundError deep inside."""
    import glob
    import importlib.util
    import os
    import sys
    import sysconfig
    missing = [m for m in ("cloudpickle", "msgpack") if importlib.util.find_spec(m) is None]
    if missing:
        debian = " ".join("python3-" + m for m in missing)
        raise ImportError(
            f"prism needs the Python package(s) {', '.join(missing)}, which this interpreter ({sys.executable}, "
            f"Python {sys.version.split()[0]}) cannot import: install them with `{sys.executable} -m pip install "
            f"{' '.join(missing)}`, or run Debian's /usr/bin/python3 with `apt-get install {debian}` "
            f"(scripts/install-deps.sh installs those)")
    here = os.path.dirname(os.path.abspath(__file__))
    built = glob.glob(os.path.join(here, "_prism*.so"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    if built and not any(b.endswith(suffix) or b.endswith("_prism.so") for b in built):
        raise ImportError(
            f"prism's binding module here ({os.path.basename(built[0])}) was built for another Python than this "
            f"one ({sys.executable}, Python {sys.version.split()[0]}, which loads '*{suffix}'): run the Python "
            "it was built for (the build uses /usr/bin/python3 unless told otherwise), or build it for this one "
            "(`pip install ./python` in this interpreter's environment)")


_check_dependencies()

from prism import exceptions  # noqa: E402 - after the dependency check
from prism._private.worker import (available_resources, cancel, cluster_resources, get, get_gpu_ids, init,  # noqa: E402
                                   is_initialized, nodes, put, shutdown, timeline, wait)
from prism.actor import ActorClass, ActorHandle, get_actor, kill, method  # noqa: E402
from prism.cross_language import cpp_function  # noqa: E402
from prism.object_ref import ObjectRef  # noqa: E402
from prism.remote_function import DynamicObjectRefGenerator, ObjectRefGenerator, RemoteFunction  # noqa: E402
from prism.runtime_context import get_runtime_context  # noqa: E402
from prism import runtime_env  # noqa: E402
from prism import util  # noqa: E402
from prism import actor  # noqa: E402

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


def __getattr__(name):
    if name == "dag":  # (loaded on first use)
        import importlib
        return importlib.import_module("prism.dag")
    raise AttributeError(f"module 'prism' has no attribute {name!r}")


__all__ = [
    "get_runtime_context", "method", "DynamicObjectRefGenerator", "runtime_env", "actor",
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "kill", "get_actor",
    "cluster_resources", "available_resources", "nodes", "get_gpu_ids", "timeline", "ObjectRef", "ObjectRefGenerator",
    "RemoteFunction", "ActorClass", "ActorHandle", "cpp_function", "exceptions", "util",
]
