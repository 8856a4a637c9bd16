"""prism.cluster_utils.Cluster (Ray's ray.cluster_utils.Cluster): nodes on this machine, joined,
listed, removed gracefully or killed, and nothing left behind."""

import os
import time

import pytest

import prism
from prism.cluster_utils import Cluster

pytestmark = pytest.mark.skipif(not os.environ.get("PRISM_TOOL"), reason="PRISM_TOOL is not set")


def wait_until(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_three_node_cluster_joins_lists_and_loses_nodes():
    saved = os.environ.get("PRISM_TMPDIR")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "labels": {"zone": "a"},
                                                            "heartbeat_ms": 100, "node_dead_after_ms": 800})
    try:
        b = cluster.add_node(num_cpus=2, resources={"ssd": 1}, labels={"zone": "b"})
        c = cluster.add_node(num_cpus=1, object_store_memory=64 << 20)
        cluster.wait_for_nodes()
        assert cluster.address == cluster.head_node.address
        assert [n.is_head for n in cluster.list_all_nodes()] == [True, False, False]

        prism.init(address=cluster.address)
        nodes = prism.nodes()
        assert len(nodes) == 3 and all(n["Alive"] for n in nodes)
        by_id = {n["NodeID"]: n for n in nodes}
        assert by_id[b.node_id]["Labels"] == {"zone": "b"}
        assert by_id[b.node_id]["Resources"]["ssd"] == 1.0
        assert by_id[b.node_id]["NodeManagerPort"] == b.node_manager_port
        assert by_id[cluster.head_node.node_id]["Labels"] == {"zone": "a"}
        assert prism.cluster_resources()["CPU"] == 4.0

        # A graceful removal: the node leaves at once, with why.
        cluster.remove_node(b)
        assert not b.alive()
        gone = {n["NodeID"]: n for n in prism.nodes()}[b.node_id]
        assert gone["Alive"] is False and "stopped" in gone["DeathReason"]
        # A killed node: dead once silent for 800 ms.
        cluster.remove_node(c, allow_graceful=False)
        assert wait_until(lambda: not {n["NodeID"]: n for n in prism.nodes()}[c.node_id]["Alive"])
        cause = {n["NodeID"]: n for n in prism.nodes()}[c.node_id]["DeathReason"]
        assert "not heard from" in cause, cause
        assert prism.cluster_resources()["CPU"] == 1.0
        prism.shutdown()
    finally:
        head = cluster.head_node
        cluster.shutdown()
    assert head is not None and not head.alive()
    assert os.environ.get("PRISM_TMPDIR") == saved


def test_tasks_go_to_the_node_their_affinity_labels_or_resources_name_and_spread():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "labels": {"zone": "a"}})
    try:
        other = cluster.add_node(num_cpus=2, resources={"ssd": 1}, labels={"zone": "b"})
        third = cluster.add_node(num_cpus=2, labels={"zone": "c"})
        prism.init(address=cluster.address)
        from prism.exceptions import TaskUnschedulableError
        from prism.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @prism.remote
        def where(ms=0):
            import time
            time.sleep(ms / 1000)
            return prism.get_runtime_context().get_node_id()

        here = prism.get_runtime_context().get_node_id()
        for node in (here, other.node_id, third.node_id):
            assert prism.get(where.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()) == node
        assert prism.get(where.options(resources={"ssd": 1}).remote()) == other.node_id
        assert prism.get(where.options(label_selector={"zone": "c"}).remote()) == third.node_id
        assert prism.get(where.options(label_selector={"zone": "!in(a,c)"}).remote()) == other.node_id
        with pytest.raises(TypeError, match="label_selector"):
            where.options(label_selector={"zone": 3}).remote()
        # (Once the earlier tasks' idle leases went back: SPREAD takes the next node with room.)
        import time
        for _ in range(200):
            if prism.available_resources().get("CPU") == prism.cluster_resources()["CPU"]:
                break
            time.sleep(0.05)
        spread = {prism.get(r) for r in [where.options(num_cpus=0.5, scheduling_strategy="SPREAD").remote(600)
                                         for _ in range(12)]}
        assert spread == {here, other.node_id, third.node_id}

        # A node that is gone: hard fails with why, soft runs elsewhere.
        cluster.remove_node(third)
        with pytest.raises(TaskUnschedulableError, match="not a live node"):
            prism.get(where.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(third.node_id, soft=False)).remote())
        assert prism.get(where.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(third.node_id, soft=True)).remote()) != third.node_id
        prism.shutdown()
    finally:
        cluster.shutdown()


def test_actor_handles_made_on_another_node_are_called_from_the_driver():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        other = cluster.add_node(num_cpus=2, labels={"zone": "b"})
        prism.init(address=cluster.address)

        @prism.remote
        class Counter:
            def __init__(self):
                self.n = 0

            def add(self, k):
                self.n += k
                return self.n, prism.get_runtime_context().get_node_id()

        @prism.remote
        def make():
            # Created by a task on the other node: the actor lives there, its record in that
            # node's daemon.
            c = Counter.options(lifetime="detached").remote()
            prism.get(c.add.remote(1))
            return [c]

        [counter] = prism.get(make.options(label_selector={"zone": "b"}).remote())
        assert prism.get(counter.add.remote(2)) == (3, other.node_id)
        assert prism.get([counter.add.remote(1) for _ in range(3)])[-1] == (6, other.node_id)

        # Pinned elsewhere directly, an actor dies with why (it runs on its creator's node).
        from prism.exceptions import RayActorError
        from prism.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        away = Counter.options(scheduling_strategy=NodeAffinitySchedulingStrategy(other.node_id, soft=False)).remote()
        with pytest.raises(RayActorError, match="creator's node"):
            prism.get(away.add.remote(1))

        # The node that keeps its record goes: calls fail with why, they do not hang.
        cluster.remove_node(other)
        with pytest.raises(RayActorError):
            prism.get(counter.add.remote(1), timeout=30)
        prism.shutdown()
    finally:
        cluster.shutdown()


def test_what_tasks_print_on_another_node_reaches_the_driver():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        other = cluster.add_node(num_cpus=1, labels={"zone": "b"})
        script = f"""
import time
import prism
prism.init(address={cluster.address!r})

@prism.remote
def shout():
    print("hello from zone b")
    return prism.get_runtime_context().get_node_id()

print("ran on", prism.get(shout.options(label_selector={{"zone": "b"}}).remote()))
time.sleep(0.5)  # output travels apart from the result
prism.shutdown()
"""
        import subprocess
        import sys
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"ran on {other.node_id}" in run.stdout, run.stdout
        lines = [line for line in run.stdout.splitlines() if line.endswith("hello from zone b")]
        assert lines, run.stdout + run.stderr
        assert "ip=127.0.0.1)" in lines[0], lines[0]  # labelled with the node it came from
    finally:
        cluster.shutdown()


def test_a_working_dir_is_unpacked_on_the_node_that_runs_the_task(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        other = cluster.add_node(num_cpus=1, labels={"zone": "b"})
        (tmp_path / "data.txt").write_text("shipped")
        (tmp_path / "helper_mod.py").write_text("VALUE = 42\n")
        prism.init(address=cluster.address, runtime_env={"working_dir": str(tmp_path)})

        @prism.remote
        def read():
            import os
            import helper_mod
            return open("data.txt").read(), helper_mod.VALUE, os.getcwd()

        text, value, cwd = prism.get(read.options(label_selector={"zone": "b"}).remote())
        assert (text, value) == ("shipped", 42)
        # That node's own copy, unpacked in its session from the control service's table.
        assert cwd.startswith(os.path.join(other.session_dir, "runtime_resources", "working_dir_")), cwd
        text, value, cwd = prism.get(read.remote())
        assert text == "shipped" and cwd.startswith(cluster.head_node.session_dir), cwd
        prism.shutdown()
    finally:
        cluster.shutdown()


def test_a_python_driver_on_a_node_other_than_the_head_runs_tasks():
    # Its functions go into the head's key-value table (through its node), and its workers read
    # them from there.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        other = cluster.add_node(num_cpus=1)
        prism.init(address=other.session_dir)

        @prism.remote
        def square(x):
            return x * x, prism.get_runtime_context().get_node_id()

        values = prism.get([square.remote(i) for i in range(5)])
        assert [v for v, _ in values] == [0, 1, 4, 9, 16]
        assert {node for _, node in values} == {other.node_id}
        prism.shutdown()
    finally:
        cluster.shutdown()


def test_bad_node_arguments_are_refused():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        with pytest.raises(TypeError, match="unknown argument"):
            cluster.add_node(num_cpu=1)
        with pytest.raises(RuntimeError, match="did not start"):
            cluster.add_node(resources={"GPU": 1})  # GPUs come from num_gpus
        assert cluster.worker_nodes == set()
        assert [n["alive"] for n in cluster.nodes()] == [True]
    finally:
        cluster.shutdown()
    with pytest.raises(ValueError):
        Cluster(connect=True)
