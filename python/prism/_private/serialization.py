"""How Python values become bytes for prism and back.

A value is pickled (cloudpickle, so lambdas and functions defined in ``__main__`` travel) and
framed as a msgpack extension (type 2, "Python pickle"), so that a C++ reader sees a value it
cannot decode rather than garbage. ObjectRefs inside a value are pickled as references, and the
handles of those refs are collected while pickling so that the runtime can count them.
"""

import pickle
import struct
import threading

import cloudpickle

_EXT_PYTHON = 2
_HEADER = struct.Struct(">BIb")  # msgpack ext 32: 0xc9, length, type

_local = threading.local()


def nested_refs():
    """The list collecting the handles of refs being pickled on this thread (None if none)."""
    return getattr(_local, "nested", None)


def serialize(value):
    """Returns (bytes, [handles of the refs inside])."""
    outer = getattr(_local, "nested", None)
    _local.nested = []
    try:
        body = cloudpickle.dumps(value, protocol=5)
        nested = _local.nested
    finally:
        _local.nested = outer
    return _HEADER.pack(0xC9, len(body), _EXT_PYTHON) + body, nested


def deserialize(data):
    view = memoryview(data)
    if len(view) < _HEADER.size or view[0] != 0xC9 or view[5] != _EXT_PYTHON:
        raise TypeError("this object was not written by Python (values of C++ tasks cannot be read "
                        "from Python in this version)")
    return pickle.loads(view[_HEADER.size:])
