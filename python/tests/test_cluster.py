"""A standalone daemon joined from Python, detached actors across drivers, worker output,
owner death, actor call retries."""

import os
import re
import subprocess
import sys
import tempfile
import textwrap

import pytest

import prism as ray
from prism import exceptions

TOOL = os.environ.get("PRISM_TOOL")


def run_driver(code, env=None):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120, env=env or dict(os.environ))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.skipif(not TOOL, reason="PRISM_TOOL (the prism tool of the build) is not set")
def test_detached_actor_outlives_its_driver_on_a_standalone_daemon():
    # A private session root (short: socket paths are limited to 107 bytes).
    root = tempfile.mkdtemp(prefix="prism-py-", dir="/tmp")
    env = dict(os.environ, PRISM_TMPDIR=root)
    subprocess.run([TOOL, "start", "--head", "--port", "0", "--node-ip", "127.0.0.1", "--num-cpus", "2"], env=env, check=True, capture_output=True)
    try:
        first = run_driver("""
            import prism as ray
            ray.init(address="auto", namespace="keepers")

            @ray.remote
            class Keeper:
                def __init__(self):
                    self.total = 0

                def add(self, x):
                    self.total += x
                    return self.total

            k = Keeper.options(name="keeper", lifetime="detached").remote()
            print(ray.get(k.add.remote(5)))
        """, env)
        assert first.strip().splitlines()[-1] == "5"
        second = run_driver("""
            import prism as ray
            ray.init(address="auto", namespace="keepers")
            k = ray.get_actor("keeper")
            print(ray.get(k.add.remote(1)))
            ray.kill(k)
        """, env)
        assert second.strip().splitlines()[-1] == "6", "the state the first driver left"
        status = subprocess.run([TOOL, "status"], env=env, capture_output=True, text=True, check=True).stdout
        assert "CPU" in status
    finally:
        subprocess.run([TOOL, "stop"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", root])


@pytest.mark.skipif(not TOOL, reason="PRISM_TOOL (the prism tool of the build) is not set")
def test_detached_placement_group_outlives_its_job():
    root = tempfile.mkdtemp(prefix="prism-py-", dir="/tmp")
    env = dict(os.environ, PRISM_TMPDIR=root)
    subprocess.run([TOOL, "start", "--head", "--port", "0", "--node-ip", "127.0.0.1", "--num-cpus", "2"], env=env, check=True, capture_output=True)
    try:
        run_driver("""
            import prism as ray
            from prism.util import placement_group
            ray.init(address="auto")
            kept = placement_group([{"CPU": 1}], name="kept", lifetime="detached")
            gone = placement_group([{"CPU": 1}], name="gone")
            assert kept.wait(30) and gone.wait(30)
        """, env)
        out = run_driver("""
            import prism as ray
            from prism.util import get_placement_group, placement_group_table, remove_placement_group
            ray.init(address="auto")
            kept = get_placement_group("kept")
            print(placement_group_table(kept)["state"], ray.available_resources()["CPU"])
            try:
                get_placement_group("gone")
                print("gone is still there")
            except Exception:
                print("gone went with its job")
            remove_placement_group(kept)
        """, env)
        assert out.strip().splitlines()[-2:] == ["CREATED 1.0", "gone went with its job"], out
    finally:
        subprocess.run([TOOL, "stop"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", root])


@pytest.mark.skipif(not TOOL, reason="PRISM_TOOL (the prism tool of the build) is not set")
def test_nodes_of_a_two_node_cluster_have_rays_keys():
    root = tempfile.mkdtemp(prefix="prism-py-", dir="/tmp")
    env = dict(os.environ, PRISM_TMPDIR=root)
    head = subprocess.run([TOOL, "start", "--head", "--port", "0", "--node-ip", "127.0.0.1", "--num-cpus", "2",
                           "--labels", "zone=a"], env=env, check=True, capture_output=True, text=True).stdout
    address = re.search(r"cluster address: (\S+)", head).group(1)
    try:
        subprocess.run([TOOL, "start", "--address", address, "--node-ip", "127.0.0.1", "--num-cpus", "1",
                        "--resources", '{"disk": 2}', "--labels", "zone=b"], env=env, check=True, capture_output=True)
        out = run_driver("""
            import prism as ray
            ray.init(address="auto")
            nodes = ray.nodes()
            assert len(nodes) == 2, nodes
            head, other = nodes
            for n in nodes:
                assert n["Alive"] and n["NodeManagerAddress"] == "127.0.0.1", n
                assert n["NodeManagerPort"] > 0 and "NodeID" in n and "Resources" in n, n
            assert head["Labels"] == {"zone": "a"} and other["Labels"] == {"zone": "b"}, nodes
            assert "node:__internal_head__" in head["Resources"], head
            assert "node:__internal_head__" not in other["Resources"], other
            assert other["Resources"]["disk"] == 2.0 and other["Resources"]["CPU"] == 1.0, other
            assert ray.cluster_resources()["CPU"] == 3.0
            assert ray.cluster_resources()["node:127.0.0.1"] == 2.0
            print(other["NodeManagerPort"] != head["NodeManagerPort"])
        """, env)
        assert out.strip().splitlines()[-1] == "True", out
    finally:
        subprocess.run([TOOL, "stop"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", root])


@pytest.mark.skipif(not TOOL, reason="PRISM_TOOL (the prism tool of the build) is not set")
def test_a_ref_owned_on_one_node_is_read_by_a_driver_on_another():
    # The owner runs on node B; the borrower, on the head, reaches it through the nodes' relays.
    root = tempfile.mkdtemp(prefix="prism-py-", dir="/tmp")
    env = dict(os.environ, PRISM_TMPDIR=root)
    head = subprocess.run([TOOL, "start", "--head", "--port", "0", "--node-ip", "127.0.0.1", "--num-cpus", "1"],
                          env=env, check=True, capture_output=True, text=True).stdout
    address = re.search(r"cluster address: (\S+)", head).group(1)
    joined = subprocess.run([TOOL, "start", "--address", address, "--node-ip", "127.0.0.1", "--num-cpus", "1"],
                            env=env, check=True, capture_output=True, text=True).stdout
    node_b = re.search(r"session: (\S+)", joined).group(1)
    ref_file = os.path.join(root, "ref.pkl")
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import pickle, sys
        import prism as ray
        ray.init(address={node_b!r})
        ref = ray.put({{"from": "node B", "values": list(range(5))}})
        with open({ref_file!r} + ".tmp", "wb") as f:
            f.write(pickle.dumps((ref, ray.get_runtime_context().get_job_id())))
        import os
        os.rename({ref_file!r} + ".tmp", {ref_file!r})
        sys.stdin.read()  # lives until the test is done
    """)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            if os.path.exists(ref_file) or owner.poll() is not None:
                break
            import time
            time.sleep(0.05)
        assert os.path.exists(ref_file), owner.communicate(timeout=10)
        out = run_driver(f"""
            import pickle
            import prism as ray
            ray.init(address="auto")
            ref, owner_job = pickle.loads(open({ref_file!r}, "rb").read())
            # Drivers on different nodes get different job ids (so their objects' ids differ).
            print(owner_job != ray.get_runtime_context().get_job_id())
            print(ray.get(ref, timeout=10))
        """, env)
        assert out.strip().splitlines()[-2:] == ["True", "{'from': 'node B', 'values': [0, 1, 2, 3, 4]}"], out
    finally:
        owner.stdin.close()
        owner.wait(timeout=30)
        subprocess.run([TOOL, "stop"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", root])


def test_worker_output_reaches_the_driver_with_its_prefix():
    out = run_driver("""
        import prism as ray
        ray.init(num_cpus=1)

        @ray.remote
        def hello():
            print("hello from a task")
            return 1

        @ray.remote
        class Talker:
            def say(self):
                print("hi from an actor")
                return 1

        ray.get(hello.remote())
        talker = Talker.remote()  # kept: an actor without handles ends at once, its output may be cut
        ray.get(talker.say.remote())
        import time
        time.sleep(1)  # output travels apart from results (through the daemon): let it arrive
        ray.shutdown()
    """)
    assert re.search(r"^\(hello pid=\d+\) hello from a task$", out, re.M), out
    assert re.search(r"^\(Talker pid=\d+\) hi from an actor$", out, re.M), out


@ray.remote
class Owner:
    def make(self):
        return [ray.put("owned by the actor")]

    def pid(self):
        return os.getpid()


@ray.remote
class Fragile:
    def __init__(self, marker):
        self.marker = marker

    def work(self):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(3)  # the first attempt kills the actor's process
        return "done"


@ray.remote
def square(x):
    return x * x


def test_owner_death_and_actor_call_retries(cluster):
    o = Owner.remote()
    [ref] = ray.get(o.make.remote())
    ray.kill(o)
    with pytest.raises(exceptions.OwnerDiedError):
        ray.get(ref, timeout=30)
    with tempfile.TemporaryDirectory() as d:
        f = Fragile.options(max_restarts=1, max_task_retries=1).remote(os.path.join(d, "m"))
        assert ray.get(f.work.remote(), timeout=60) == "done", "retried after the restart"
    assert ray.get(square.options(scheduling_strategy="SPREAD").remote(3)) == 9


def test_plain_functions_have_no_remote(cluster):
    def plain(x):
        return x

    with pytest.raises(AttributeError, match="remote"):
        plain.remote(1)


CODE_DIR = os.environ.get("PRISM_TEST_CODE_DIR")


@pytest.mark.skipif(not CODE_DIR, reason="PRISM_TEST_CODE_DIR (the test library of C++ functions) is not set")
def test_python_calls_cpp_functions_by_name():
    ray.init(num_cpus=2, code_search_path=[CODE_DIR])
    try:
        assert ray.get(ray.cpp_function("CrossSquare").remote(7)) == 49
        assert ray.get(ray.cpp_function("CrossGreet").remote("prism")) == "hello prism"
        assert ray.get(ray.cpp_function("CrossStats").remote([1.5, 2.5])) == {"count": 2.0, "sum": 4.0}
        with pytest.raises(ValueError, match="NoSuchFunction"):
            ray.get(ray.cpp_function("NoSuchFunction").remote(1))
        with pytest.raises(ValueError):
            ray.get(ray.cpp_function("CrossSquare").remote("not a number"))
        with pytest.raises(TypeError):
            ray.cpp_function("CrossSquare").remote(object())
    finally:
        ray.shutdown()
