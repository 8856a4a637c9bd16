"""prism's GPU layer from Python: topology (the node's, or a profile's) and device tensors.

GPU tasks and actors (``@prism.remote(num_gpus=...)``) see their devices through
``CUDA_VISIBLE_DEVICES``, which prism sets when their worker starts, so PyTorch and CuPy use them
as they are. A ``prism.gpu.Tensor`` (what ``get`` returns for a C++ GPU task's ``gpu::Tensor``
result) stays in device memory and goes to NumPy, PyTorch or CuPy through DLPack without a copy:
``torch.from_dlpack(t)``, ``numpy.from_dlpack(t)`` (simulated devices are host memory).
"""

from prism import _prism
from prism._private.worker import call


Tensor = _prism.Tensor


def topology(profile=None, as_json=False):
    """The topology matrix (like ``nvidia-smi topo -m``, with bandwidths) of a shipped profile or
    a JSON file, or of this machine when ``profile`` is None; the profile's JSON with ``as_json``."""
    return call(_prism.topology, profile or "", bool(as_json))


def profiles():
    """The names of the shipped topology profiles."""
    return list(_prism.topology_profiles())


__all__ = ["Tensor", "topology", "profiles"]
