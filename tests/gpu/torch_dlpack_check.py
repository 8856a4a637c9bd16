"""PyTorch tensors in and out of prism through DLPack, on a real GPU (bench/gpu_check.sh runs it
where PyTorch and a GPU are; CI has neither). Exits non-zero on the first wrong result."""

import sys

import torch

import prism
from prism import gpu


@prism.remote(num_gpus=1)
def total(t):
    import torch
    return float(torch.from_dlpack(t).sum())  # the task's stream waits for the tensor's work


@prism.remote(num_gpus=1)
def make(n):
    import torch
    from prism import gpu
    x = torch.arange(n, device="cuda", dtype=torch.float32)
    return gpu.from_dlpack(x)  # copied into prism's memory, after torch's work (DLPack stream)


def main():
    if not torch.cuda.is_available():
        print("torch dlpack check: no GPU for PyTorch here")
        return 1
    prism.init(num_cpus=2)
    try:
        ones = torch.ones(1000, device="cuda")
        t = gpu.from_dlpack(ones)  # the driver's copy, by reference to a GPU task
        assert prism.get(total.remote(t)) == 1000.0
        made = prism.get(make.remote(100))  # made in a worker, mapped here through CUDA IPC
        view = torch.from_dlpack(made)
        assert view.is_cuda and float(view.sum()) == 4950.0
        again = gpu.from_dlpack(torch.from_dlpack(t))  # prism's memory: no copy
        assert again.data_ptr == t.data_ptr, (again.data_ptr, t.data_ptr)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):  # torch hands its current stream to __dlpack__
            assert float(torch.from_dlpack(made).sum()) == 4950.0
        assert prism.get(total.remote(made)) == 4950.0  # a worker's tensor to another task
    finally:
        prism.shutdown()
    print("torch dlpack check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
