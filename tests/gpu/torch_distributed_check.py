"""torch.distributed on a prism group: members get RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
when they join, so init_process_group's env:// just works; and PyTorch tensors straight into
prism's collectives (a CUDA tensor on an nccl group, a CPU one on gloo). bench/gpu_check.sh runs it
where PyTorch is; CI has none. Exits non-zero on a wrong result."""

import sys

import prism
from prism import collective


@prism.remote
class Trainer:
    def step(self):
        import torch
        import torch.distributed as dist
        group = collective.get_group("torch")  # joins: the environment is set
        dist.init_process_group(backend="gloo")  # env://
        t = torch.full((4,), float(group.rank + 1))
        dist.all_reduce(t)
        dist.destroy_process_group()
        return t.tolist()


def main():
    prism.init(num_cpus=4)
    try:
        trainers = [Trainer.remote() for _ in range(3)]
        collective.create_group(trainers, backend="gloo", name="torch")
        results = prism.get([t.step.remote() for t in trainers], timeout=120)
        assert all(r == [6.0] * 4 for r in results), results
        import torch
        if torch.cuda.is_available():  # a 1-rank nccl group in the driver, on a CUDA tensor
            g = collective.init_group("cuda1", 1, 0, "nccl")
            x = torch.arange(8.0, device="cuda") * 2
            g.allreduce(x, "sum")
            g.allreduce(x, "avg")
            assert x.tolist() == [2.0 * i for i in range(8)], x
            collective.destroy_group("cuda1")
        g = collective.init_group("cpu1", 1, 0, "gloo")  # and a CPU tensor on gloo
        y = torch.ones(5, dtype=torch.float64)
        g.allreduce(y, "max")
        assert y.tolist() == [1.0] * 5, y
        collective.destroy_group("cpu1")
    finally:
        prism.shutdown()
    print("torch distributed check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
