"""ObjectRef: a future for a value a task returns or ``put`` stored."""

from prism import _prism
from prism._private import serialization


def _rebuild(binary, socket_path, worker_id, node_id):
    # A ref arriving inside a value: this process borrows it from its owner.
    return ObjectRef(_prism.make_ref(binary, socket_path, worker_id, node_id))


class ObjectRef:
    """A reference to an immutable object. Copies and pickles refer to the same object, which
    lives while some ref to it does (in any process)."""

    __slots__ = ("_handle", "__weakref__")

    def __init__(self, handle):
        self._handle = handle

    def hex(self):
        return self._handle.hex()

    def binary(self):
        return self._handle.binary()

    def __repr__(self):
        return f"ObjectRef({self.hex()})"

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and self.binary() == other.binary()

    def __hash__(self):
        return hash(self.binary())

    def __reduce__(self):
        nested = serialization.nested_refs()
        if nested is not None:
            nested.append(self._handle)
        socket_path, worker_id, node_id = self._handle.owner()
        return _rebuild, (self.binary(), socket_path, worker_id, node_id)
