# retry_exceptions: application errors are retried up to max_retries times.
import os
import tempfile

import prism as ray

ray.init(num_cpus=2)
counter_dir = tempfile.mkdtemp()


def count_run(name):
    """How many runs came before this one (a file per task, shared by its runs)."""
    path = os.path.join(counter_dir, name)
    n = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))
    return n


def runs(name):
    return int(open(os.path.join(counter_dir, name)).read())


@ray.remote(max_retries=3, retry_exceptions=True)
def flaky(name):
    n = count_run(name)
    if n < 2:
        raise ConnectionError(f"attempt {n} failed")
    return n


assert ray.get(flaky.remote("a")) == 2  # failed twice, then succeeded


@ray.remote(max_retries=1, retry_exceptions=True)
def always_fails(name):
    count_run(name)
    raise RuntimeError("no luck")


try:
    ray.get(always_fails.remote("b"))
    raise AssertionError("it must fail once its retries are spent")
except RuntimeError:
    pass
assert runs("b") == 2  # the first run and one retry


# Only the listed exception types are retried.
@ray.remote(max_retries=5, retry_exceptions=[ConnectionError])
def picky(name):
    count_run(name)
    raise KeyError("not retried")


try:
    ray.get(picky.remote("c"))
except KeyError:
    pass
assert runs("c") == 1


# Without retry_exceptions an error is not retried.
@ray.remote
def once(name):
    count_run(name)
    raise ValueError("x")


try:
    ray.get(once.remote("d"))
except ValueError:
    pass
assert runs("d") == 1
print("ok")
ray.shutdown()
