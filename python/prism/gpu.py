"""prism's GPU layer from Python: topology (the node's, or a profile's) and device tensors.

GPU tasks and actors (``@prism.remote(num_gpus=...)``) see their devices through
``CUDA_VISIBLE_DEVICES``, which prism sets when their worker starts, so PyTorch and CuPy use them
as they are.

A ``prism.gpu.Tensor`` is a device object: it stays in device memory, in the process that made
it, and travels as a reference (task arguments, results, ``put``, values for C++ functions) that
another process on the node maps through CUDA IPC. It goes to NumPy, PyTorch or CuPy through
DLPack without a copy (``torch.from_dlpack(t)``, ``numpy.from_dlpack(t)``; simulated devices are
host memory); ``t.__dlpack__(stream=s)`` makes the consumer's stream ``s`` wait for the tensor's
work instead of the host. The other way, ``prism.gpu.from_dlpack(x)`` takes a framework's tensor
in: the same memory when it is prism's (a view of a prism tensor), else a copy into prism's device
memory (the GPU of the task, or the tensor's own), which the producer orders through DLPack's
stream argument.
"""

from prism import _prism
from prism._private.worker import call


Tensor = _prism.Tensor


def from_dlpack(tensor):
    """A framework's tensor (anything with ``__dlpack__``: PyTorch, CuPy, NumPy) as a
    ``prism.gpu.Tensor`` that tasks can pass on by reference. Raises TypeError for an object
    without DLPack, ValueError for memory prism cannot take (a strided view: make it contiguous)."""
    return call(_prism.Tensor.from_dlpack, tensor)


def topology(profile=None, as_json=False):
    """The topology matrix (like ``nvidia-smi topo -m``, with bandwidths) of a shipped profile or
    a JSON file, or of this machine when ``profile`` is None; the profile's JSON with ``as_json``."""
    return call(_prism.topology, profile or "", bool(as_json))


def profiles():
    """The names of the shipped topology profiles."""
    return list(_prism.topology_profiles())


__all__ = ["Tensor", "from_dlpack", "topology", "profiles"]
