"""How Python values become bytes for prism and back.

A value is pickled with protocol 5 (cloudpickle, so lambdas and functions defined in
``__main__`` travel). Buffers that support out-of-band pickling (numpy arrays, anything exposing
``PickleBuffer``) are not copied into the pickle stream: they are laid out after it, each aligned
to 64 bytes, and written with one copy straight into the object store; reading them back gives
read-only arrays that point into the store, with no copy.

The frame is a msgpack extension (type 2, "Python value"), so that a C++ reader sees a value it
cannot decode rather than garbage:

    c9 <body length: u32 BE> 02        msgpack ext 32 header (6 bytes)
    01                                 format version
    <buffer count: u32 LE> <pickle length: u64 LE>
    (<offset: u64 LE> <length: u64 LE>) per buffer, offsets from the frame's start
    pickle stream, then each buffer at its offset (zero padding between)

ObjectRefs inside a value are pickled as references; the handles of those refs are collected
while pickling so that the runtime can count them.
"""

import io
import pickle
import struct
import threading

import cloudpickle

_EXT_PYTHON = 2
_EXT = struct.Struct(">BIb")        # msgpack ext 32: 0xc9, length, type
_HEAD = struct.Struct("<BIQ")       # version, buffer count, pickle length
_ENTRY = struct.Struct("<QQ")       # offset, length
_VERSION = 1
_ALIGN = 64

_local = threading.local()


def nested_refs():
    """The list collecting the handles of refs being pickled on this thread (None if none)."""
    return getattr(_local, "nested", None)


def _view(buffer):
    return memoryview(buffer)


def _tensor(descriptor):
    from prism import _prism
    return _prism.unpack_tensor(descriptor)


def _tensor_type():
    from prism import _prism
    return _prism.Tensor


def msgpack_default(obj):
    """msgpack's `default` for values going to C++: a device tensor as its extension (type 3)."""
    if type(obj) is _tensor_type():
        import msgpack
        from prism import _prism
        return msgpack.ExtType(_EXT_TENSOR, _prism.pack_tensor(obj))
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


# Serializers registered in this process (prism.util.register_serializer): type -> (serializer,
# deserializer). The deserializer travels with each value (by cloudpickle), so readers need no
# registration of their own.
_custom = {}


def register_serializer(cls, *, serializer, deserializer):
    """Values of type `cls` (exactly) written by this process are written as
    ``serializer(value)`` and read back as ``deserializer(that)``, as Ray's
    ``ray.util.register_serializer``; it takes precedence over the type's own pickling."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer takes a class, not {cls!r}")
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("serializer and deserializer must be callables")
    _custom[cls] = (serializer, deserializer)


def deregister_serializer(cls):
    """Undoes register_serializer(cls) in this process."""
    _custom.pop(cls, None)


def _custom_value(deserializer, serialized):
    return deserializer(serialized)


class _Pickler(cloudpickle.CloudPickler):
    """cloudpickle, plus memoryviews (anything with the buffer protocol can be put as one): their
    bytes travel out of band like a numpy array's and come back as a read-only memoryview."""

    def reducer_override(self, obj):
        custom = _custom.get(type(obj)) if _custom else None
        if custom is not None:
            return _custom_value, (custom[1], custom[0](obj))
        if type(obj) is memoryview:
            flat = obj.cast("B") if obj.c_contiguous else memoryview(obj.tobytes())
            return _view, (pickle.PickleBuffer(flat),)
        if type(obj) is _tensor_type():
            # A device tensor travels as its descriptor; the reader maps (or shares) its memory.
            from prism import _prism
            return _tensor, (_prism.pack_tensor(obj),)
        return super().reducer_override(obj)


# Values of these exact types hold no refs, no buffers and no code: the C pickler writes the
# same stream cloudpickle would, without a pickler object, a buffer callback or the thread's
# ref collection (a small call's result, the common case, in a few hundred nanoseconds).
_PLAIN = frozenset((bytes, str, int, float, bool, type(None)))
_PLAIN_HEAD = _EXT.size + _HEAD.size


def _serialize_plain(value):
    stream = pickle.dumps(value, protocol=5)
    size = _PLAIN_HEAD + len(stream)
    head = _EXT.pack(0xC9, size - _EXT.size, _EXT_PYTHON) + _HEAD.pack(_VERSION, 0, len(stream))
    return size, [(0, head), (_PLAIN_HEAD, stream)], []


def serialize(value):
    """Returns (size, [(offset, buffer)], [handles of the refs inside]): the frame's size and
    its parts, for the runtime to write in place."""
    if type(value) in _PLAIN:  # (pickle never asks reducer_override, so _custom, about these)
        return _serialize_plain(value)
    outer = getattr(_local, "nested", None)
    _local.nested = []
    buffers = []

    def out_of_band(pb):
        try:
            buffers.append(pb.raw())
        except BufferError:  # not contiguous: in the stream
            return True
        return False

    try:
        out = io.BytesIO()
        _Pickler(out, protocol=5, buffer_callback=out_of_band).dump(value)
        stream = out.getvalue()
        nested = _local.nested
    finally:
        _local.nested = outer
    head_size = _EXT.size + _HEAD.size + _ENTRY.size * len(buffers)
    at = head_size + len(stream)
    entries = []
    for b in buffers:
        at = (at + _ALIGN - 1) // _ALIGN * _ALIGN
        entries.append((at, b.nbytes))
        at += b.nbytes
    size = at
    head = bytearray(_EXT.pack(0xC9, size - _EXT.size, _EXT_PYTHON))
    head += _HEAD.pack(_VERSION, len(buffers), len(stream))
    for offset, length in entries:
        head += _ENTRY.pack(offset, length)
    parts = [(0, bytes(head)), (head_size, stream)]
    parts += [(offset, b) for (offset, _), b in zip(entries, buffers)]
    return size, parts, nested


def to_bytes(size, parts):
    """The frame as one bytes object (for tests and small values)."""
    out = bytearray(size)
    for offset, b in parts:
        mv = memoryview(b).cast("B")
        out[offset:offset + mv.nbytes] = mv
    return bytes(out)


_EXT_TENSOR = 3  # a prism device tensor (gpu::Tensor): a descriptor the runtime maps


def _ext_hook(code, data):
    if code == _EXT_TENSOR:
        from prism import _prism
        return _prism.unpack_tensor(bytes(data))
    import msgpack
    return msgpack.ExtType(code, data)


def deserialize(data):
    """Reads a frame (bytes, or a buffer pinned in the store: arrays then point into it)."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    if len(view) < _EXT.size + _HEAD.size or view[0] != 0xC9 or view[5] != _EXT_PYTHON:
        # A value written by C++ (msgpack): numbers, strings, binary, lists, maps, nil, bools.
        import msgpack
        try:
            return msgpack.unpackb(view, raw=False, strict_map_key=False, ext_hook=_ext_hook)
        except Exception as e:
            raise TypeError(f"cannot read this object: it is neither a Python value nor plain msgpack ({e})") from None
    version, count, stream_len = _HEAD.unpack_from(view, _EXT.size)
    if version != _VERSION:
        raise TypeError(f"unknown value format version {version}")
    at = _EXT.size + _HEAD.size
    buffers = []
    for _ in range(count):
        offset, length = _ENTRY.unpack_from(view, at)
        at += _ENTRY.size
        buffers.append(view[offset:offset + length])
    return pickle.loads(view[at:at + stream_len], buffers=buffers)
