"""GPU placement from Python on a simulated node (a topology profile, PRISM_GPU_BACKEND=sim)."""

import os

import pytest

import prism as ray
from prism import exceptions
from prism.util import placement_group
from prism.util.scheduling_strategies import PlacementGroupSchedulingStrategy

# nvlink-pairs-4: GPUs 0-1 and 2-3 are joined by NVLink bridges.
PAIRS = ({0, 1}, {2, 3})


@ray.remote
def binding():
    return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.fixture
def sim_node(monkeypatch):
    monkeypatch.setenv("PRISM_GPU_BACKEND", "sim")
    ray.init(num_cpus=4, gpu_topology="nvlink-pairs-4")
    yield ray
    ray.shutdown()


def test_gpus_come_from_the_topology_and_pairs_stay_together(sim_node):
    assert ray.cluster_resources()["GPU"] == 4
    ids, visible = ray.get(binding.options(num_gpus=2).remote())
    assert set(ids) in PAIRS
    assert visible == ",".join(str(i) for i in ids)
    ids, visible = ray.get(binding.options(num_gpus=1).remote())
    assert visible == str(ids[0])


def test_nvlink_placement_groups(sim_node):
    bundle = {"CPU": 1, "GPU": 1}
    with pytest.raises(exceptions.InfeasibleError, match="NVLink"):
        placement_group([bundle] * 3, require_nvlink=True)
    pg = placement_group([bundle] * 2, require_nvlink=True)
    assert pg.wait(30)
    got = set()
    for i in range(2):
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)
        got |= set(ray.get(binding.options(num_gpus=1, scheduling_strategy=strategy).remote())[0])
    assert got in PAIRS


def test_unknown_topology_is_a_clear_error():
    with pytest.raises(Exception, match="no-such-box"):
        ray.init(num_cpus=1, gpu_topology="no-such-box")
    assert not ray.is_initialized()


@ray.remote
def plus(a, b):
    return a + b


def test_timeline(tmp_path, monkeypatch):
    import json
    ray.init(num_cpus=2, timeline=True)
    try:
        assert ray.get([plus.remote(i, 1) for i in range(3)]) == [1, 2, 3]
        path = ray.timeline(tmp_path / "trace.json")
    finally:
        ray.shutdown()
    events = json.loads(open(path).read())["traceEvents"]
    names = [e["name"] for e in events if e["ph"] == "X"]
    assert names.count("plus") == 3, names


def test_worker_launch_prefix():
    ray.init(num_cpus=1, worker_launch_prefix=["env", "PRISM_TEST_VIA_PREFIX=py"])
    try:
        @ray.remote
        def read():
            return os.environ.get("PRISM_TEST_VIA_PREFIX")
        assert ray.get(read.remote()) == "py"
    finally:
        ray.shutdown()


def test_topology_from_python():
    import json
    from prism import gpu
    assert "h100-sxm-8" in gpu.profiles()
    matrix = gpu.topology("h100-sxm-8")
    assert "NV18" in matrix and "GPU7" in matrix
    assert json.loads(gpu.topology("nvlink-pairs-4", as_json=True))["nvlink"]["matrix"][0][1] == 4
    with pytest.raises(ValueError, match="no-such-box"):
        gpu.topology("no-such-box")


CODE_DIR = os.environ.get("PRISM_TEST_CODE_DIR")
needs_cpp = pytest.mark.skipif(not CODE_DIR, reason="PRISM_TEST_CODE_DIR (the test library of C++ functions) is not set")


@pytest.fixture
def sim_gpus_with_cpp(monkeypatch):
    """Simulated GPUs, and the test library of C++ functions."""
    monkeypatch.setenv("PRISM_GPU_BACKEND", "sim")
    monkeypatch.setenv("PRISM_SIM_DEVICE_MEMORY", "64M")
    ray.init(num_cpus=2, gpu_topology="nvlink-pairs-4", code_search_path=[CODE_DIR])
    yield ray
    ray.shutdown()


@needs_cpp
def test_a_cpp_gpu_tasks_tensor_reaches_numpy_through_dlpack(sim_gpus_with_cpp):
    import numpy as np
    from prism import gpu
    t = ray.get(ray.cpp_function("CrossRange").options(num_gpus=1).remote(10))
    assert isinstance(t, gpu.Tensor)
    assert t.shape == (2, 5) and t.dtype == "float32" and t.nbytes == 40
    assert t.__dlpack_device__() == (1, 0)  # sim devices are host memory (kDLCPU)
    a = np.from_dlpack(t)  # no copy: a view of the device memory, mapped from the worker
    assert a.shape == (2, 5)
    assert a.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    capsule = t.__dlpack__(max_version=(1, 0))
    assert "dltensor_versioned" in repr(capsule)
    del a, t


# ---- device tensors from Python (sim: device memory is host memory, so NumPy stands in for a
# framework; on a GPU the same calls take PyTorch and CuPy tensors) ----

@pytest.fixture
def sim_gpus(monkeypatch):
    monkeypatch.setenv("PRISM_GPU_BACKEND", "sim")
    monkeypatch.setenv("PRISM_SIM_DEVICE_MEMORY", "64M")
    ray.init(num_cpus=2, gpu_topology="nvlink-pairs-4")
    yield ray
    ray.shutdown()


@ray.remote(num_gpus=1)
def make_on_gpu(n):
    import numpy as np
    from prism import gpu
    return gpu.from_dlpack(np.arange(n, dtype=np.float32))  # copied into this task's GPU


@ray.remote(num_gpus=1)
def total(t):
    import numpy as np
    return float(np.from_dlpack(t).sum())


@ray.remote(num_gpus=1)
def pointer_and_total(t):
    import numpy as np
    return t.data_ptr, float(np.from_dlpack(t).sum())


def test_a_framework_tensor_goes_in_and_travels_by_reference(sim_gpus):
    import numpy as np
    from prism import gpu
    t = ray.get(make_on_gpu.remote(10))
    assert isinstance(t, gpu.Tensor) and t.shape == (10,) and t.dtype == "float32"
    assert np.from_dlpack(t).tolist() == list(range(10))
    # Tensors as arguments of Python GPU tasks: a device object made in one worker, read in another.
    assert ray.get(total.remote(make_on_gpu.remote(100))) == sum(range(100))
    # From the driver: a copy into prism's memory, passed by reference (put, or as an argument).
    x = gpu.from_dlpack(np.full((4, 4), 2.5, dtype=np.float64))
    assert x.shape == (4, 4) and x.dtype == "float64"
    assert ray.get(total.remote(x)) == 40.0
    assert ray.get(total.remote(ray.put(x))) == 40.0


class Reexport:
    """A framework's tensor over another producer's memory, handing it on through DLPack (as
    torch.from_dlpack(t) would; NumPy 1.x cannot re-export the read-only views it makes)."""

    def __init__(self, t):
        self.t = t

    def __dlpack__(self, stream=None, max_version=None):
        return self.t.__dlpack__(stream=stream, max_version=max_version)

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


def test_prism_memory_comes_back_without_a_copy(sim_gpus):
    import numpy as np
    from prism import gpu
    t = gpu.from_dlpack(np.arange(6, dtype=np.int64).reshape(2, 3))
    again = gpu.from_dlpack(Reexport(t))  # prism's memory: the same bytes, no copy
    assert again.data_ptr == t.data_ptr
    assert again.shape == (2, 3) and np.from_dlpack(again).tolist() == [[0, 1, 2], [3, 4, 5]]
    other = gpu.from_dlpack(np.arange(6, dtype=np.int64))
    assert other.data_ptr != t.data_ptr  # NumPy's memory: copied in


def test_bad_dlpack_input_is_a_clear_error(sim_gpus):
    import numpy as np
    from prism import gpu
    with pytest.raises(TypeError, match="does not support DLPack"):
        gpu.from_dlpack([1, 2, 3])
    with pytest.raises(ValueError, match="contiguous"):
        gpu.from_dlpack(np.arange(10, dtype=np.float32)[::2])
    assert ray.get(total.remote(gpu.from_dlpack(np.ones(3, dtype=np.float32)))) == 3.0  # still works


@needs_cpp
def test_a_python_tensor_goes_to_a_cpp_gpu_task(sim_gpus_with_cpp):
    import numpy as np
    from prism import gpu
    x = gpu.from_dlpack(np.arange(8, dtype=np.float32))
    assert ray.get(ray.cpp_function("CrossSum").options(num_gpus=1).remote(x)) == 28.0


@ray.remote(num_gpus=1)
def make_here(n, marker):
    import numpy as np
    from prism import gpu
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    return gpu.from_dlpack(np.ones(n, dtype=np.float32))


def _wait_gone(pid):
    import time
    for _ in range(400):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.025)
    return False


def test_a_killed_producers_tensors_are_rebuilt(sim_gpus, tmp_path):
    import signal
    import numpy as np
    marker = tmp_path / "producer"
    x = make_here.remote(1000, str(marker))
    assert ray.get(total.remote(x)) == 1000.0
    producer = int(marker.read_text())
    marker.unlink()
    os.kill(producer, signal.SIGKILL)
    assert _wait_gone(producer)
    assert ray.get(total.remote(x), timeout=60) == 1000.0  # its task ran again
    assert int(marker.read_text()) != producer
    assert np.from_dlpack(ray.get(x, timeout=60)).sum() == 1000.0
    # Without retries there is no lineage: the tensor is lost with its producer.
    y = make_here.options(max_retries=0).remote(10, str(marker))
    assert ray.get(total.remote(y)) == 10.0
    producer = int(marker.read_text())
    os.kill(producer, signal.SIGKILL)
    assert _wait_gone(producer)
    with pytest.raises(ray.exceptions.ObjectLostError):
        ray.get(total.remote(y), timeout=60)


@ray.remote(num_gpus=1)
class GpuHolder:
    def make(self, n):
        import numpy as np
        from prism import gpu
        return gpu.from_dlpack(np.arange(n, dtype=np.float32))

    def total(self, t):
        import numpy as np
        return float(np.from_dlpack(t).sum())

    def gpus(self):
        return ray.get_gpu_ids()


def test_a_tensor_moves_to_a_gpu_its_consumer_does_not_see(sim_gpus):
    # Each actor holds a whole GPU of its own: the tensor goes from one to the other through a
    # pair group of the collectives, not an IPC mapping.
    a, b = GpuHolder.remote(), GpuHolder.remote()
    assert set(ray.get(a.gpus.remote())).isdisjoint(ray.get(b.gpus.remote()))
    t = a.make.remote(1000)
    assert ray.get(b.total.remote(t)) == sum(range(1000))
    assert ray.get([b.total.remote(a.make.remote(10)), a.total.remote(b.make.remote(20))]) == [45.0, 190.0]


@ray.remote(num_gpus=1)
class Ranked:
    def gpu(self):
        return ray.get_gpu_ids()[0]

    def rank(self, name):
        from prism import collective
        return collective.get_group(name).rank


def test_group_ranks_can_follow_the_gpu_topology(sim_gpus):
    from prism import collective
    members = [Ranked.remote() for _ in range(4)]
    gpus = ray.get([m.gpu.remote() for m in members])
    declared = [members[gpus.index(g)] for g in (0, 2, 1, 3)]  # each NVLink pair split
    collective.create_group(declared, name="ring", order="topology")
    ranks = ray.get([m.rank.remote("ring") for m in declared])
    gpu_at = {r: g for r, g in zip(ranks, (0, 2, 1, 3))}
    assert gpu_at[0] == 0
    hops = [frozenset((gpu_at[r], gpu_at[(r + 1) % 4])) for r in range(4)]
    assert hops.count(frozenset((0, 1))) + hops.count(frozenset((2, 3))) == 2
    with pytest.raises(ValueError, match="rank order"):
        collective.create_group(declared, name="bad", order="random")
