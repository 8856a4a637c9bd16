"""What runs where: ``prism.get_runtime_context()``, as Ray's runtime context."""

from prism import _prism
from prism._private import execution
from prism._private import worker


class _Id(str):
    """An id as Ray's deprecated properties return it: a hex string with ``.hex()``."""

    def hex(self):
        return str(self)


class RuntimeContext:
    """The ids of the job, node, worker, task and actor this code runs in, what it holds, and its
    namespace. Read it where it is used: in a task it describes that task."""

    def _info(self):
        worker._check_initialized()
        return _prism.runtime_context()

    def get_job_id(self):
        """This job's id (hex)."""
        return self._info()["job_id"]

    def get_node_id(self):
        """The id (hex) of the node this process runs on."""
        return self._info()["node_id"]

    def get_worker_id(self):
        """This process's worker id (hex)."""
        return self._info()["worker_id"]

    def get_task_id(self):
        """The running task's id (hex), or None in a driver outside tasks."""
        return execution.current_task_id() or self._info()["task_id"] or None

    def get_actor_id(self):
        """The id (hex) of the actor this process hosts, or None."""
        return self._info()["actor_id"] or None

    def get_actor_name(self):
        """The name of the actor this process hosts, or None (an unnamed actor, or no actor)."""
        return self._info()["actor_name"] or None

    @property
    def current_actor(self):
        """A handle to the actor this code runs in (it keeps the actor alive while held)."""
        worker._check_initialized()
        return execution.current_actor_handle()

    def get_assigned_resources(self):
        """What the running task (or this actor) holds: {"CPU": 1.0, "GPU": 1.0, ...}."""
        return {k: v for k, v in self._info()["resources"].items() if v > 0}

    def get_accelerator_ids(self):
        """The accelerators the running task (or this actor) holds, as Ray gives them:
        {"GPU": ["0", ...]}."""
        return {"GPU": [str(g) for g in self._info()["gpu_ids"]]}

    def get_placement_group_id(self):
        """The placement group the running task (or this actor) was placed in, or None."""
        return execution.current_placement_group_id()

    @property
    def namespace(self):
        """This job's namespace (the one named actors are looked up in)."""
        worker._check_initialized()
        return worker.job_config()["namespace"]

    def get_namespace(self):
        return self.namespace

    @property
    def was_current_actor_reconstructed(self):
        """True in an actor that was restarted (its process died and max_restarts allowed another)."""
        return self._info()["actor_restarts"] > 0

    @property
    def runtime_env(self):
        """This job's runtime environment, as prism applied it."""
        worker._check_initialized()
        return dict(worker.job_config().get("runtime_env") or {})

    def get_runtime_env_string(self):
        import json
        return json.dumps(self.runtime_env)

    # Ray's older properties: ids with .hex().
    @property
    def job_id(self):
        return _Id(self.get_job_id())

    @property
    def node_id(self):
        return _Id(self.get_node_id())

    @property
    def task_id(self):
        t = self.get_task_id()
        return None if t is None else _Id(t)

    @property
    def actor_id(self):
        a = self.get_actor_id()
        return None if a is None else _Id(a)

    @property
    def gcs_address(self):
        return worker.session_dir()

    def get(self):
        """The ids as a dict (Ray's older form)."""
        info = self._info()
        out = {"job_id": _Id(info["job_id"]), "node_id": _Id(info["node_id"]), "namespace": self.namespace}
        if info["task_id"]:
            out["task_id"] = _Id(info["task_id"])
        if info["actor_id"]:
            out["actor_id"] = _Id(info["actor_id"])
        return out


_context = RuntimeContext()


def get_runtime_context():
    """The runtime context of the calling code (Ray's ``ray.get_runtime_context()``)."""
    return _context


__all__ = ["RuntimeContext", "get_runtime_context"]
