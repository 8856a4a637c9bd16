"""A cluster across network namespaces: each node in a namespace of its own, with its own address
on a bridge the test makes (veth pairs), and its own session root, as on separate machines. The
nodes join the head over the bridge; a driver on one node reads a ref owned on another through the
nodes' relays, and sends tasks to the other nodes (SPREAD, node affinity, labels). This needs root (CI runs as root): where namespaces cannot be made the test fails,
unless PRISM_SKIP_NETNS=1 says to skip it (for developers' machines)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

TOOL = os.environ.get("PRISM_TOOL")
pytestmark = pytest.mark.skipif(not TOOL, reason="PRISM_TOOL (the prism tool of the build) is not set")


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


class Lab:
    """A bridge and `n` namespaces on it, node i at 10.213.<k>.<i+1>/24. Removed by close()."""

    def __init__(self, n):
        tag = f"{os.getpid() % 10000}"
        self.bridge = f"pbr{tag}"
        self.names = [f"prism-t{tag}-n{i}" for i in range(n)]
        self.ips = [f"10.213.{os.getpid() % 250}.{i + 1}" for i in range(n)]
        self.roots = [tempfile.mkdtemp(prefix=f"prism-ns{i}-", dir="/tmp") for i in range(n)]
        self.made = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        sh("ip", "link", "set", self.bridge, "up")
        for i, ns in enumerate(self.names):
            sh("ip", "netns", "add", ns)
            self.made.append(("netns", ns))
            host_end = f"pv{tag}n{i}"
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", host_end, "master", self.bridge, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ips[i]}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def env(self, i):
        return dict(os.environ, PRISM_TMPDIR=self.roots[i])

    def run(self, i, *args, **kw):
        return subprocess.run(["ip", "netns", "exec", self.names[i], *args], env=self.env(i), capture_output=True,
                              text=True, **kw)

    def popen(self, i, *args, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.names[i], *args], env=self.env(i), text=True, **kw)

    def close(self):
        for i in range(len(self.names)):
            self.run(i, TOOL, "stop", timeout=60)
        for kind, name in reversed(self.made):
            if kind == "netns":
                sh("ip", "netns", "del", name, check=False)
            else:
                sh("ip", "link", "del", name, check=False)
        for root in self.roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def lab():
    if os.environ.get("PRISM_SKIP_NETNS") == "1":
        pytest.skip("PRISM_SKIP_NETNS=1")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("network namespaces need root and iproute2 (set PRISM_SKIP_NETNS=1 to skip this test)")
    made = Lab(3)
    try:
        yield made
    finally:
        made.close()


def test_nodes_in_namespaces_join_over_the_bridge_and_reach_each_other(lab):
    head = lab.run(0, TOOL, "start", "--head", "--port", "6379", "--node-ip", lab.ips[0], "--num-cpus", "1",
                   "--labels", "zone=a", "--object-store-memory", str(64 << 20), timeout=60)
    assert head.returncode == 0, head.stdout + head.stderr
    address = f"{lab.ips[0]}:6379"
    assert f"cluster address: {address}" in head.stdout
    token = re.search(r"--token (\S+)", head.stdout).group(1)
    # Another machine has no node of this cluster: the token must be given.
    for i in (1, 2):
        missing = lab.run(i, TOOL, "start", "--address", address, "--node-ip", lab.ips[i], timeout=60)
        assert missing.returncode != 0 and "no cluster token" in missing.stderr, missing.stderr
        joined = lab.run(i, TOOL, "start", "--address", address, "--token", token, "--node-ip", lab.ips[i],
                         "--num-cpus", "1", "--labels", f"zone={'abc'[i]}", "--object-store-memory", str(64 << 20),
                         timeout=60)
        assert joined.returncode == 0, joined.stdout + joined.stderr
    # A wrong token from another namespace is refused.
    wrong = lab.run(1, TOOL, "status", "--address", address, "--token", "wrong", timeout=60)
    assert wrong.returncode != 0 and "a wrong cluster token" in wrong.stderr, wrong.stderr

    status = lab.run(2, TOOL, "status", "--json", "--address", address, "--token", token, timeout=60)
    assert status.returncode == 0, status.stderr
    import json
    nodes = json.loads(status.stdout)["nodes"]
    assert sorted(n["ip"] for n in nodes) == sorted(lab.ips)
    assert all(n["alive"] for n in nodes)
    # Each node listens on its own address only: not on the bridge's other addresses, not on lo.
    node1_port = next(n["port"] for n in nodes if n["ip"] == lab.ips[1])
    probe = lab.run(1, sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.socket()
        s.settimeout(2)
        print(s.connect_ex(("127.0.0.1", {node1_port})))
    """), timeout=30)
    assert probe.stdout.strip() not in ("", "0"), "a node listened on loopback too: " + probe.stdout

    # A driver on node 2 owns a value; a driver on node 1 reads it (through both nodes' relays).
    ref_file = os.path.join(lab.roots[2], "ref.pkl")
    owner = lab.popen(2, sys.executable, "-c", textwrap.dedent(f"""
        import os, pickle, sys
        import prism as ray
        ray.init(address={address!r})
        ref = ray.put({{"from": "namespace 2", "values": list(range(3))}})
        with open({ref_file!r} + ".tmp", "wb") as f:
            f.write(pickle.dumps(ref))
        os.rename({ref_file!r} + ".tmp", {ref_file!r})
        sys.stdin.read()
    """), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(400):
            if os.path.exists(ref_file) or owner.poll() is not None:
                break
            time.sleep(0.05)
        assert os.path.exists(ref_file), owner.communicate(timeout=10)
        reader = lab.run(1, sys.executable, "-c", textwrap.dedent(f"""
            import pickle
            import prism as ray
            ray.init(address={address!r})
            import time
            print(ray.get(pickle.loads(open({ref_file!r}, "rb").read()), timeout=20))
            # This node's view of the cluster comes with its reports to the head (every 500 ms).
            for _ in range(100):
                if len(ray.nodes()) == 3:
                    break
                time.sleep(0.05)
            print(sorted(n["NodeManagerAddress"] for n in ray.nodes()))
            # Work goes to the other namespaces' nodes: SPREAD reaches every node, a hard affinity
            # and a label selector pick theirs.
            from prism.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            @ray.remote
            def where(ms):
                time.sleep(ms / 1000)
                return ray.get_runtime_context().get_node_id()

            by_ip = {{n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes()}}
            spread = {{ray.get(r) for r in [where.options(num_cpus=0.5, scheduling_strategy="SPREAD").remote(600)
                                            for _ in range(9)]}}
            print(spread == set(by_ip.values()))
            pinned = NodeAffinitySchedulingStrategy(by_ip[{lab.ips[2]!r}], soft=False)
            print(ray.get(where.options(scheduling_strategy=pinned).remote(0)) == by_ip[{lab.ips[2]!r}])
            print(ray.get(where.options(label_selector={{"zone": "a"}}).remote(0)) == by_ip[{lab.ips[0]!r}])
        """), timeout=120)
        assert reader.returncode == 0, reader.stdout + reader.stderr
        lines = reader.stdout.strip().splitlines()
        assert lines[-5] == "{'from': 'namespace 2', 'values': [0, 1, 2]}", reader.stdout
        assert lines[-4] == str(sorted(lab.ips)), reader.stdout
        assert lines[-3:] == ["True", "True", "True"], reader.stdout + reader.stderr
    finally:
        owner.stdin.close()
        owner.wait(timeout=30)

    # A node that stops leaves the cluster at once.
    stopped = lab.run(2, TOOL, "stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    after = json.loads(lab.run(0, TOOL, "status", "--json", timeout=60).stdout)["nodes"]
    assert [n["alive"] for n in after if n["ip"] == lab.ips[2]] == [False]
