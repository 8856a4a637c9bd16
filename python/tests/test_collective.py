"""Collectives from Python on gloo: groups of actors, every operation on NumPy arrays, errors."""

import os
import time

import numpy as np
import pytest

import prism as ray
from prism import collective, exceptions


@pytest.fixture
def cluster():
    ray.init(num_cpus=4)
    yield ray
    ray.shutdown()


@ray.remote
class Member:
    def run(self, name, op, dtype):
        g = collective.get_group(name)
        r, n = g.rank, g.size
        x = (np.arange(10) % 5 + r).astype(dtype)
        if op == "allreduce":
            out = []
            for reduce in ("sum", "prod", "min", "max", "avg"):
                y = x.copy()
                collective.allreduce(y, name, reduce)
                out.append(y)
            return out
        if op == "allgather":
            out = np.zeros(10 * n, dtype=dtype)
            collective.allgather(out, x, name)
            return out
        if op == "reduce_scatter":
            big = np.concatenate([x] * n)
            out = np.zeros(10, dtype=dtype)
            collective.reduce_scatter(out, big, name, "max")
            return out
        if op == "broadcast":
            collective.broadcast(x, 1, name)
            return x
        if op == "reduce":
            collective.reduce(x, 0, name, "min")
            return x
        if op == "sendrecv":
            got = np.zeros(10, dtype=dtype)
            nxt, prv = (r + 1) % n, (r + n - 1) % n
            if r % 2 == 0:
                collective.send(x, nxt, name)
                collective.recv(got, prv, name)
            else:
                collective.recv(got, prv, name)
                collective.send(x, nxt, name)
            return got
        if op == "batch":  # every rank sends first, in one batch with its receive
            got = np.zeros(10, dtype=dtype)
            g.send_recv([("send", x, (r + 1) % n), ("recv", got, (r + n - 1) % n)])
            return got
        collective.barrier(name)
        return x

    def env(self, name):
        collective.get_group(name)
        return {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}

    def try_join(self, name):
        try:
            collective.get_group(name)
            return "joined"
        except exceptions.CollectiveError as e:
            return str(e)

    def try_bad(self, name):
        g = collective.get_group(name)
        said = []
        for bad in (np.zeros(4, dtype=np.uint8), np.zeros(8, dtype=np.float32)[::2], [1, 2]):
            try:
                g.allreduce(bad, "sum")
            except (ValueError, TypeError) as e:
                said.append(str(e))
        try:
            g.allreduce(np.zeros(2, dtype=np.float32), "median")
        except ValueError as e:
            said.append(str(e))
        return said

    def through_dlpack(self, name):
        # A framework's tensor (here a NumPy array seen only through DLPack, as a PyTorch CPU
        # tensor would be): changed in place.
        class Framework:
            def __init__(self, a):
                self.a = a

            def __dlpack__(self, stream=None, max_version=None):
                return self.a.__dlpack__(stream=stream)

            def __dlpack_device__(self):
                return self.a.__dlpack_device__()

        g = collective.get_group(name)
        a = np.full(6, g.rank + 1, dtype=np.float32)
        g.allreduce(Framework(a), "sum")
        return a

    def split(self, parent, name, color, key=0):
        sub = collective.split_group(parent, name, color, key)
        if sub is None:
            return None
        x = np.array([collective.get_group(parent).rank], dtype=np.int64)
        sub.allreduce(x)
        return (sub.rank, sub.size, int(x[0]), collective.get_group(name).rank)

    def join_as(self, name, world, rank):
        return collective.init_group(name, world, rank, "gloo", 10).rank


def test_every_operation_on_three_actors(cluster):
    members = [Member.remote() for _ in range(3)]
    collective.create_group(members, backend="gloo", name="py3")
    x = [(np.arange(10) % 5 + r) for r in range(3)]
    for dtype in (np.float32, np.float64, np.int32, np.int64, np.float16):
        got = ray.get([m.run.remote("py3", "allreduce", dtype) for m in members])
        total = sum(x)
        integer = np.issubdtype(dtype, np.integer)
        want = [total, x[0] * x[1] * x[2], np.minimum.reduce(x), np.maximum.reduce(x),
                np.trunc(total / 3) if integer else total / 3]
        for g in got:
            for op, (have, expect) in enumerate(zip(g, want)):
                np.testing.assert_allclose(have.astype(np.float64), expect.astype(np.float64),
                                           rtol=1e-3 if dtype == np.float16 else 1e-6, err_msg=f"op {op}")
        got = ray.get([m.run.remote("py3", "allgather", dtype) for m in members])
        for g in got:
            np.testing.assert_array_equal(g, np.concatenate(x).astype(dtype))
        got = ray.get([m.run.remote("py3", "reduce_scatter", dtype) for m in members])
        for r, g in enumerate(got):
            np.testing.assert_array_equal(g, np.maximum.reduce(x).astype(dtype))
        got = ray.get([m.run.remote("py3", "broadcast", dtype) for m in members])
        for g in got:
            np.testing.assert_array_equal(g, x[1].astype(dtype))
        got = ray.get([m.run.remote("py3", "reduce", dtype) for m in members])
        np.testing.assert_array_equal(got[0], np.minimum.reduce(x).astype(dtype))
        got = ray.get([m.run.remote("py3", "sendrecv", dtype) for m in members])
        for r, g in enumerate(got):
            np.testing.assert_array_equal(g, x[(r + 2) % 3].astype(dtype))
        got = ray.get([m.run.remote("py3", "batch", dtype) for m in members])
        for r, g in enumerate(got):
            np.testing.assert_array_equal(g, x[(r + 2) % 3].astype(dtype))
        ray.get([m.run.remote("py3", "barrier", dtype) for m in members])


def test_a_framework_tensor_through_dlpack(cluster):
    members = [Member.remote() for _ in range(3)]
    collective.create_group(members, name="dl")
    for got in ray.get([m.through_dlpack.remote("dl") for m in members]):
        np.testing.assert_array_equal(got, np.full(6, 6.0, dtype=np.float32))


def test_members_get_the_torch_distributed_environment(cluster):
    members = [Member.remote() for _ in range(2)]
    collective.create_group(members, name="env")
    envs = ray.get([m.env.remote("env") for m in members])
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert all(e["WORLD_SIZE"] == "2" and e["MASTER_ADDR"] == "127.0.0.1" for e in envs)
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"] and int(envs[0]["MASTER_PORT"]) > 0


def test_ranks_can_declare_the_group_themselves(cluster):
    members = [Member.remote() for _ in range(2)]
    assert ray.get([m.join_as.remote("self", 2, r) for r, m in enumerate(members)]) == [0, 1]


def test_split_group_forms_subgroups_by_color_and_key(cluster):
    members = [Member.remote() for _ in range(4)]
    collective.create_group(members, name="whole")
    ray.get([m.try_join.remote("whole") for m in members])
    got = ray.get([m.split.remote("whole", "pairs", r % 2, -r) for r, m in enumerate(members)])
    assert got == [(1, 2, 2, 1), (1, 2, 4, 1), (0, 2, 2, 0), (0, 2, 4, 0)]
    colors = [0, 0, collective.NO_COLOR, 0]
    got = ray.get([m.split.remote("whole", "three", c) for m, c in zip(members, colors)])
    assert got == [(0, 3, 4, 0), (1, 3, 4, 1), None, (2, 3, 4, 2)]


def test_bad_input_is_a_clear_error(cluster):
    members = [Member.remote() for _ in range(2)]
    with pytest.raises(ValueError, match="backend"):
        collective.create_group(members, backend="mpi", name="bad")
    with pytest.raises(TypeError, match="actor handles"):
        collective.create_group([1, 2], name="bad")
    collective.create_group(members, name="bad")
    with pytest.raises(ValueError, match="exists already"):
        collective.create_group(members, name="bad")
    with pytest.raises(ValueError, match="not a member"):
        collective.get_group("bad")
    said = ray.get([m.try_bad.remote("bad") for m in members])[0]
    assert any("uint8" in s or "format" in s for s in said), said
    assert any("C-contiguous" in s for s in said), said
    assert any("buffer" in s for s in said), said
    assert any("reduce op" in s for s in said), said


def test_a_rank_that_never_joins_is_an_error_within_the_timeout(cluster):
    members = [Member.remote() for _ in range(3)]
    collective.create_group(members, name="absent", timeout=1.5)
    t0 = time.monotonic()
    said = ray.get([m.try_join.remote("absent") for m in members[:2]])
    assert time.monotonic() - t0 < 10
    for s in said:
        assert "collective group 'absent'" in s and "rank 2 did not join" in s, s
    # Destroyed and created again (with all three this time), it works.
    collective.destroy_group("absent")
    collective.create_group(members, name="absent", timeout=10)
    assert ray.get([m.try_join.remote("absent") for m in members]) == ["joined"] * 3
