"""Several nodes of one cluster on this machine, for tests and experiments: Ray's
``ray.cluster_utils.Cluster``.

Each node is a ``prism start`` daemon with its own session folder and cluster port on 127.0.0.1.
The nodes' session folders go under a private root, which this process (and its children) use for
as long as the cluster lives ($PRISM_TMPDIR), so ``prism.init(address=cluster.address)`` and
``address="auto"`` find its head, and nothing of another prism of this user is touched::

    from prism.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=4, resources={"ssd": 1}, labels={"zone": "b"})
    cluster.wait_for_nodes()
    prism.init(address=cluster.address)
    ...
    cluster.remove_node(worker)
    cluster.shutdown()
"""

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

__all__ = ["Cluster", "ClusterNode"]


def _tool():
    from prism import _prism
    return os.environ.get("PRISM_TOOL") or _prism.tool_path()


class ClusterNode:
    """A node of a Cluster: its id, address and session folder, and its daemon's pid."""

    def __init__(self, node_id, address, session_dir, pid, is_head):
        self.node_id = node_id
        self.unique_id = node_id
        self.address = address
        self.node_ip_address = address.rsplit(":", 1)[0]
        self.node_manager_port = int(address.rsplit(":", 1)[1])
        self.session_dir = session_dir
        self.pid = pid
        self.is_head = is_head

    def alive(self):
        """Whether the node's daemon process still runs (an exited one nobody reaped does not)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def __repr__(self):
        return f"ClusterNode(node_id={self.node_id!r}, address={self.address!r}, head={self.is_head})"


class Cluster:
    """A cluster of nodes on this machine (Ray's ``Cluster``)."""

    def __init__(self, initialize_head=False, connect=False, head_node_args=None, shutdown_at_exit=True):
        if connect and not initialize_head:
            raise ValueError("connect=True needs initialize_head=True")
        self._root = tempfile.mkdtemp(prefix="prism-cluster-", dir="/tmp")
        self._saved_tmpdir = os.environ.get("PRISM_TMPDIR")
        os.environ["PRISM_TMPDIR"] = self._root
        self._token = None
        self.head_node = None
        self.worker_nodes = set()
        self._shut_down = False
        self._connected = False
        if shutdown_at_exit:
            atexit.register(self.shutdown)
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()

    @property
    def address(self):
        """The head's "IP:PORT" (what prism.init(address=...) and other nodes take)."""
        if self.head_node is None:
            raise RuntimeError("the cluster has no head yet (add_node() starts it)")
        return self.head_node.address

    gcs_address = address

    def connect(self, namespace=None):
        """Connects this process as a driver to the cluster's head."""
        import prism
        prism.init(address=self.address, namespace=namespace)
        self._connected = True

    def add_node(self, wait=True, **node_args):
        """Starts a node (the head, first). Arguments as Ray's: ``num_cpus``, ``num_gpus``,
        ``resources`` (a dict), ``labels`` (a dict), ``object_store_memory``, ``memory``; and
        prism's ``node_ip`` (default 127.0.0.1), ``heartbeat_ms`` and ``node_dead_after_ms`` (the
        head's). With ``wait``, returns once the head lists the node alive."""
        args = [_tool(), "start", "--node-ip", node_args.pop("node_ip", "127.0.0.1"), "--port", "0"]
        head = self.head_node is None
        args += ["--head"] if head else ["--address", self.address, "--token", self._token]
        flags = {"num_cpus": "--num-cpus", "num_gpus": "--num-gpus", "object_store_memory": "--object-store-memory",
                 "memory": "--memory", "heartbeat_ms": "--heartbeat-ms", "node_dead_after_ms": "--node-dead-after-ms",
                 "gpu_topology": "--gpu-topology", "log_level": "--log-level"}
        for key, flag in flags.items():
            value = node_args.pop(key, None)
            if value is not None:
                args += [flag, str(int(value) if isinstance(value, float) and value.is_integer() else value)]
        resources = node_args.pop("resources", None)
        if resources:
            args += ["--resources", json.dumps(dict(resources))]
        labels = node_args.pop("labels", None)
        if labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        if node_args:
            raise TypeError(f"add_node() got unknown argument(s): {', '.join(sorted(node_args))}")
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"the node did not start: {out.stderr.strip() or out.stdout.strip()}")
        pid = int(re.search(r"started \(pid (\d+)\)", out.stdout).group(1))
        session = re.search(r"session: (\S+)", out.stdout).group(1)
        if head:
            self._token = re.search(r"--token (\S+)", out.stdout).group(1)
        entry = self._own_entry(session)
        node = ClusterNode(entry["node_id"], f"{entry['ip']}:{entry['port']}", session, pid, head)
        if head:
            self.head_node = node
        else:
            self.worker_nodes.add(node)
            if wait:
                self._wait_alive({node.node_id}, timeout=30)
        return node

    def remove_node(self, node, allow_graceful=True):
        """Stops a node: gracefully (it leaves the cluster at once), or by SIGKILL (the head declares
        it dead once it has been silent long enough)."""
        if allow_graceful:
            subprocess.run([_tool(), "stop", "--address", node.session_dir], capture_output=True, timeout=60)
        else:
            try:
                os.kill(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(500):
            if not node.alive():
                break
            time.sleep(0.01)
        if node is self.head_node:
            self.head_node = None
        else:
            self.worker_nodes.discard(node)

    def list_all_nodes(self):
        """The head first, then the other nodes."""
        return ([self.head_node] if self.head_node else []) + sorted(self.worker_nodes, key=lambda n: n.pid)

    def nodes(self):
        """The cluster's nodes as the head lists them (``prism status --json``), dead ones included."""
        out = subprocess.run([_tool(), "status", "--json", "--address", self.address, "--token", self._token],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"the head did not answer: {out.stderr.strip()}")
        return json.loads(out.stdout)["nodes"]

    def wait_for_nodes(self, timeout=30):
        """Waits until the head lists every node this Cluster started (and did not remove) alive."""
        self._wait_alive({n.node_id for n in self.list_all_nodes()}, timeout)

    def shutdown(self):
        """Disconnects this process (if connected) and stops every node."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._connected:
            import prism
            prism.shutdown()
        for node in list(self.worker_nodes) + ([self.head_node] if self.head_node else []):
            self.remove_node(node)
        if self._saved_tmpdir is None:
            os.environ.pop("PRISM_TMPDIR", None)
        else:
            os.environ["PRISM_TMPDIR"] = self._saved_tmpdir
        shutil.rmtree(self._root, ignore_errors=True)

    @staticmethod
    def _own_entry(session):
        """A node's own entry (the first of its status), read through its session folder."""
        out = subprocess.run([_tool(), "status", "--json", "--address", session], capture_output=True, text=True,
                             timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"the node of {session} did not answer: {out.stderr.strip()}")
        return json.loads(out.stdout)["nodes"][0]

    def _wait_alive(self, want, timeout):
        deadline = time.monotonic() + timeout
        while True:
            alive = {n["node_id"] for n in self.nodes() if n["alive"]}
            if want <= alive:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(want - alive)} node(s) did not come up within {timeout} s")
            time.sleep(0.05)
