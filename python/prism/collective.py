"""Collectives from Python: communicator groups over actors, as ``ray.util.collective`` has them.

From the driver, ``create_group(actors, backend="gloo", name="g")`` makes ``actors[i]`` rank ``i``;
inside each actor, ``get_group("g")`` joins (or every rank calls ``init_group(name, world_size,
rank)`` itself). Operations work in place on NumPy arrays (host memory, gloo) and on
``prism.gpu.Tensor`` (sim devices on gloo; CUDA memory on nccl, queued on the tensor's stream)::

    import numpy as np
    from prism import collective

    @prism.remote
    class Worker:
        def step(self):
            grad = np.ones(1024, dtype=np.float32)
            collective.get_group("g").allreduce(grad, op="avg")
            return grad

    workers = [Worker.remote() for _ in range(4)]
    collective.create_group(workers, backend="gloo", name="g")
    prism.get([w.step.remote() for w in workers])

Every operation has the group's timeout: a rank that never joins, dies or stalls raises
``CollectiveError`` (naming the group and the rank) on the others instead of hanging; a failed
group is then broken until ``destroy_group`` and a new ``create_group``. Joining sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, so ``torch.distributed.
init_process_group()`` (its ``env://`` default) works in the members.
"""

import os

from prism import _prism
from prism._private.worker import call



class Group:
    """One rank's membership of a group. Operations block until done on this rank (gloo) or are
    queued on the tensor's stream (nccl); arrays are changed in place."""

    def __init__(self, native):
        self._g = native

    name = property(lambda self: self._g.name)
    rank = property(lambda self: self._g.rank)
    size = property(lambda self: self._g.size)
    backend = property(lambda self: self._g.backend)

    def allreduce(self, tensor, op="sum"):
        call(self._g.allreduce, tensor, op)

    def allgather(self, output, tensor):
        call(self._g.allgather, output, tensor)

    def reduce_scatter(self, output, tensor, op="sum"):
        call(self._g.reduce_scatter, output, tensor, op)

    def broadcast(self, tensor, src_rank=0):
        call(self._g.broadcast, tensor, int(src_rank))

    def reduce(self, tensor, dst_rank=0, op="sum"):
        call(self._g.reduce, tensor, int(dst_rank), op)

    def send(self, tensor, dst_rank):
        call(self._g.send, tensor, int(dst_rank))

    def recv(self, tensor, src_rank):
        call(self._g.recv, tensor, int(src_rank))

    def send_recv(self, ops):
        """Sends and receives issued together, done together (``batch_isend_irecv``): ``ops`` is a
        list of ``("send", tensor, dst_rank)`` and ``("recv", tensor, src_rank)``."""
        call(self._g.send_recv, [(str(k), t, int(p)) for k, t, p in ops])

    def barrier(self):
        call(self._g.barrier)

    def __repr__(self):
        return f"prism.collective.Group({self.name!r}, rank {self.rank} of {self.size}, {self.backend})"


def _joined(native):
    os.environ.update(_prism.collective_env())  # (torch.distributed reads os.environ)
    return Group(native)


def create_group(actors, backend="gloo", name="default", timeout=30.0, order="given"):
    """Declares group ``name``: ``actors[i]`` is rank ``i``; each joins on its first
    ``get_group(name)``. ``backend`` is "gloo" (host memory) or "nccl" (CUDA device memory).
    ``order="topology"``: the ranks follow the node's GPU topology instead (a ring with NVLink
    and PCIe-switch neighbours adjacent; ``actors[0]`` stays rank 0), for actors holding a GPU
    each."""
    ids = []
    for a in actors:
        ref = getattr(a, "_ref", None)
        if ref is None:
            raise TypeError(f"create_group takes actor handles, not {type(a).__name__}")
        ids.append(ref.id)
    call(_prism.collective_declare, ids, str(backend), str(name), float(timeout), str(order))


def get_group(name="default"):
    """This actor's membership of group ``name`` (joining it on first use)."""
    return _joined(call(_prism.collective_get, str(name)))


def init_group(name, world_size, rank, backend="gloo", timeout=30.0):
    """Joins group ``name`` as ``rank`` of ``world_size``; every rank calls it."""
    return _joined(call(_prism.collective_init, str(name), int(world_size), int(rank), str(backend), float(timeout)))


NO_COLOR = -1


def split_group(parent, name, color, key=0):
    """Splits group ``parent`` as ``ncclCommSplit`` does: every rank of ``parent`` calls it; the
    ranks passing the same ``color`` (>= 0) form a subgroup, here named ``name``, ranked by
    ``key`` and then by their rank in ``parent``. A rank passing ``NO_COLOR`` joins none and gets
    None."""
    native = call(_prism.collective_split, str(parent), str(name), int(color), int(key))
    return None if native is None else Group(native)


def destroy_group(name="default"):
    """Leaves group ``name`` here and removes its declaration, so it can be created again."""
    call(_prism.collective_destroy, str(name))


def is_group_initialized(name="default"):
    """Whether this process is a member of group ``name`` now."""
    return bool(_prism.collective_in_group(str(name)))


def allreduce(tensor, group_name="default", op="sum"):
    """In place: ``tensor`` = ``op`` over the ranks (sum, prod, min, max, avg)."""
    get_group(group_name).allreduce(tensor, op)


def allgather(output, tensor, group_name="default"):
    """``output`` (size * len(tensor) elements) = every rank's ``tensor``, in rank order."""
    get_group(group_name).allgather(output, tensor)


def reduce_scatter(output, tensor, group_name="default", op="sum"):
    """``output`` = ``op`` over the ranks of this rank's block of ``tensor``."""
    get_group(group_name).reduce_scatter(output, tensor, op)


def broadcast(tensor, src_rank=0, group_name="default"):
    get_group(group_name).broadcast(tensor, src_rank)


def reduce(tensor, dst_rank=0, group_name="default", op="sum"):
    """In place on ``dst_rank``: ``op`` over the ranks."""
    get_group(group_name).reduce(tensor, dst_rank, op)


def send(tensor, dst_rank, group_name="default"):
    get_group(group_name).send(tensor, dst_rank)


def recv(tensor, src_rank, group_name="default"):
    get_group(group_name).recv(tensor, src_rank)


def send_recv(ops, group_name="default"):
    """Sends and receives issued together (see ``Group.send_recv``)."""
    get_group(group_name).send_recv(ops)


def barrier(group_name="default"):
    get_group(group_name).barrier()


__all__ = ["Group", "create_group", "get_group", "init_group", "split_group", "NO_COLOR", "destroy_group", "send_recv", "is_group_initialized",
           "allreduce", "allgather", "reduce_scatter", "broadcast", "reduce", "send", "recv", "barrier"]
