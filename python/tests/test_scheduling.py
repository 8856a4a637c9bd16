"""Streaming tasks, placement groups and cluster resources from Python."""

import time

import pytest

import prism as ray
from prism import exceptions
from prism.util import placement_group, remove_placement_group, get_placement_group
from prism.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@ray.remote(num_returns="streaming")
def count(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError("ran dry")
        yield i


@ray.remote
def gpu_ids():
    return ray.get_gpu_ids()


@ray.remote
def one():
    return 1


def test_streaming_task(cluster):
    gen = count.remote(100)
    first = next(gen)
    assert ray.get(first) == 0
    assert [ray.get(r) for r in gen] == list(range(1, 100))
    gen = count.remote(5, fail_at=3)
    refs = list(gen)
    assert [ray.get(r) for r in refs[:3]] == [0, 1, 2]
    with pytest.raises(ValueError, match="ran dry"):
        ray.get(refs[3])
    with pytest.raises(TypeError, match="generator"):
        ray.remote(num_returns="streaming")(lambda: 1).remote()


def test_cluster_resources(cluster):
    total = ray.cluster_resources()
    assert total["CPU"] == 2
    assert ray.available_resources()["CPU"] <= 2
    nodes = ray.nodes()
    assert len(nodes) == 1 and nodes[0]["Alive"]
    assert ray.get_gpu_ids() == []


def test_placement_groups(cluster):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK", name="pair")
    assert pg.wait(30)
    assert ray.get(pg.ready(), timeout=30) is True
    assert get_placement_group("pair") == pg
    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
    assert ray.get(one.options(scheduling_strategy=strategy).remote()) == 1
    # All of the node's CPUs are in the group: a task outside it waits.
    outside = one.remote()
    ready, _ = ray.wait([outside], timeout=0.5)
    assert ready == []
    remove_placement_group(pg)
    assert ray.get(outside, timeout=30) == 1
    with pytest.raises(exceptions.InfeasibleError):
        placement_group([{"CPU": 100}])
    with pytest.raises(ValueError):
        placement_group([{"CPU": 1}], strategy="NEAR")
    with pytest.raises(ValueError):
        placement_group([])


def test_gpus():
    ray.init(num_cpus=2, num_gpus=2)
    try:
        assert ray.cluster_resources()["GPU"] == 2
        assert ray.get(gpu_ids.options(num_gpus=2).remote()) == [0, 1]
        assert len(ray.get(gpu_ids.options(num_gpus=0.5).remote())) == 1
    finally:
        ray.shutdown()
