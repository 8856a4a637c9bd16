"""torch.distributed on a prism group: members get RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
when they join, so init_process_group's env:// just works (bench/gpu_check.sh runs it where
PyTorch is; CI has none). Exits non-zero on a wrong result."""

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
    finally:
        prism.shutdown()
    print("torch distributed check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
