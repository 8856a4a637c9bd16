"""Calling C++ remote functions from Python by name: ``prism.cpp_function("Square").remote(3)``.

The function runs in the generic C++ worker, which loads the shared libraries of the folders
given to ``prism.init(code_search_path=[...])``. Arguments travel as msgpack (numbers, strings,
bytes, lists, tuples, dicts, None, bools) and must convert to the C++ parameters; the result
comes back as the matching Python value.
"""

import msgpack

from prism import _prism
from prism._private import serialization, worker
from prism.object_ref import ObjectRef
from prism.remote_function import _check_options, core_options


class CppFunction:
    def __init__(self, name, options=None):
        if not isinstance(name, str) or not name:
            raise TypeError("cpp_function takes the registered name of a C++ function")
        self._name = name
        self._options = dict(options or {})
        _check_options(self._options)

    def options(self, **options):
        merged = dict(self._options)
        merged.update(options)
        return CppFunction(self._name, merged)

    def remote(self, *args):
        worker._check_initialized()
        packed = []
        for a in args:
            if isinstance(a, ObjectRef):
                raise TypeError("a C++ function takes values, not ObjectRefs, in this version")
            try:
                data = msgpack.packb(a, use_bin_type=True, default=serialization.msgpack_default)
            except Exception as e:
                raise TypeError(f"cannot pass {type(a).__name__} to C++ function {self._name}: {e}") from None
            packed.append(("value", len(data), [(0, data)], []))
        options = core_options(self._options)
        options["runtime"] = "cpp"
        options.setdefault("name", self._name)
        return ObjectRef(worker.call(_prism.submit_task, self._name, packed, options))

    def __repr__(self):
        return f"cpp_function({self._name!r})"


def cpp_function(name):
    """A C++ remote function (registered with PRISM_REMOTE in a library of the code search path)."""
    return CppFunction(name)
