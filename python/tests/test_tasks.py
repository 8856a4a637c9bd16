"""Remote functions, get/put/wait, errors: the Python face of prism's tasks."""

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest

import prism
import prism as ray
from prism import exceptions


@ray.remote
def square(x):
    return x * x


@ray.remote(num_cpus=0.5)
def add(a, b=10):
    return a + b


@ray.remote
def first_of(container):
    # A ref inside a container arrives as a ref; the task can get it.
    return ray.get(container[0])


@ray.remote
def fail(message):
    raise ValueError(message)


@ray.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@ray.remote
def env_var(name):
    return os.environ.get(name)


@ray.remote
def nested(n):
    return sum(ray.get([square.remote(i) for i in range(n)]))


@ray.remote
def die_once(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return "survived"


def test_the_readme_snippet_runs_as_a_script():
    script = textwrap.dedent("""
        import prism as ray
        ray.init()

        @ray.remote
        def square(x):
            return x * x

        refs = [square.remote(i) for i in range(8)]
        print(ray.get(refs))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[0, 1, 4, 9, 16, 25, 36, 49]"


def test_tasks_and_options(cluster):
    assert ray.get([square.remote(i) for i in range(8)]) == [0, 1, 4, 9, 16, 25, 36, 49]
    assert ray.get(add.remote(1)) == 11
    assert ray.get(add.remote(1, b=2)) == 3
    assert ray.get(add.options(num_cpus=1, name="adder").remote(2, 3)) == 5
    assert ray.is_initialized()


def test_refs_as_arguments(cluster):
    r = square.remote(3)
    assert ray.get(square.remote(r)) == 81, "a top-level ref is resolved to its value"
    p = ray.put(7)
    assert ray.get(first_of.remote([p])) == 7, "a ref in a container travels as a ref"
    assert ray.get(add.remote(p, b=r)) == 16, "keyword refs are resolved too"


def test_put_and_get_values(cluster):
    values = [None, 1, "text", {"a": [1, 2]}, (1, 2), b"\x00" * 10, list(range(1000))]
    assert ray.get([ray.put(v) for v in values]) == values
    big = np.arange(4 << 20, dtype=np.float64)  # 32 MiB: through the object store
    back = ray.get(ray.put(big))
    assert np.array_equal(back, big)
    assert ray.get(square.remote(np.float64(3.0))) == 9.0


def test_nested_tasks(cluster):
    assert ray.get(nested.remote(10)) == sum(i * i for i in range(10))


def test_get_timeout_and_wait(cluster):
    slow = sleep_then.remote(3, "slow")
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(slow, timeout=0.1)
    # (Another resource shape: tasks of one shape may queue behind the slow one on its worker.)
    fast = [sleep_then.options(num_cpus=0.5).remote(0, i) for i in range(3)]
    ray.get(fast)
    ready, not_ready = ray.wait(fast + [slow], num_returns=3, timeout=5)
    assert ready == fast, "ready refs keep the order they were given in"
    assert not_ready == [slow]
    ready, not_ready = ray.wait([slow], timeout=0)
    assert ready == [] and not_ready == [slow]
    assert ray.get(slow) == "slow"


def test_errors_carry_the_remote_exception(cluster):
    with pytest.raises(ValueError) as info:
        ray.get(fail.remote("bad input"))
    err = info.value
    assert isinstance(err, exceptions.RayTaskError)
    assert isinstance(err, exceptions.PrismTaskError)
    assert "bad input" in str(err)
    assert "Traceback" in str(err) and "raise ValueError" in str(err), "the remote traceback is shown"
    # The runtime still works.
    assert ray.get(square.remote(2)) == 4


def test_bad_input_fails_clearly(cluster):
    with pytest.raises(TypeError, match="Remote functions cannot be called directly"):
        square(3)
    with pytest.raises(TypeError):
        ray.get(3)
    with pytest.raises(TypeError):
        ray.get([square.remote(1), 3])
    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot pickle an argument"):
        square.remote(lock)
    with pytest.raises(TypeError, match="square"):
        square.remote(1, 2)
    with pytest.raises(ValueError, match="unknown task option"):
        square.options(num_cpu=1)
    with pytest.raises(ValueError):
        ray.get(square.options(num_cpus=-1).remote(1))
    with pytest.raises(exceptions.InfeasibleError):
        ray.get(square.options(num_cpus=64).remote(1))


def test_runtime_env_vars(cluster):
    assert ray.get(env_var.options(runtime_env={"env_vars": {"MY_TEST_VAR": "42"}}).remote("MY_TEST_VAR")) == "42"
    assert ray.get(env_var.remote("MY_TEST_VAR")) is None


def test_worker_crash_and_retry(cluster):
    with tempfile.TemporaryDirectory() as d:
        assert ray.get(die_once.options(max_retries=1).remote(os.path.join(d, "a"))) == "survived"
        with pytest.raises(exceptions.WorkerCrashedError):
            ray.get(die_once.options(max_retries=0).remote(os.path.join(d, "b")))


def test_cancel(cluster):
    blocker = [sleep_then.remote(5, i) for i in range(2)]  # both CPUs busy
    queued = sleep_then.remote(0, "never")
    ray.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=30)
    running = blocker[0]
    ray.cancel(running, force=True)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(running, timeout=30)


def test_the_first_call_starts_a_cluster():
    assert not prism.is_initialized()
    assert prism.get(square.remote(3)) == 9  # no init(): a local cluster starts, as in Ray
    assert prism.is_initialized()
    with pytest.raises(RuntimeError, match="already"):
        prism.init()
    assert prism.init(ignore_reinit_error=True) is not None
    prism.shutdown()
    prism.shutdown()  # twice is fine
    assert not prism.is_initialized()
    prism.init(num_cpus=1)
    with pytest.raises(RuntimeError, match="already"):
        prism.init()
    prism.shutdown()


@ray.remote
def total(array):
    return float(array.sum()), bool(array.flags.writeable)


@ray.remote
def double(array):
    return array * 2


def test_numpy_arrays_travel_through_the_store_without_copies(cluster):
    from prism import _prism
    big = np.ones(256 << 20, dtype=np.uint8)  # 256 MiB
    ref = ray.put(big)
    back = ray.get(ref)
    assert back.nbytes == big.nbytes and back[0] == 1 and back[-1] == 1
    assert _prism.in_object_store(back.ctypes.data, back.nbytes), "the result's buffer lies in the store"
    assert not back.flags.writeable, "values in the store are read-only"
    s, writeable = ray.get(total.remote(ref))
    assert s == float(big.nbytes) and not writeable, "the worker reads it in place too"
    doubled = ray.get(double.remote(np.arange(10, dtype=np.int64)))
    assert doubled.tolist() == [2 * i for i in range(10)]
    del back, ref
    mixed = {"a": np.zeros((3, 4), dtype=np.float32), "b": [np.arange(5)], "c": "text"}
    out = ray.get(ray.put(mixed))
    assert out["a"].shape == (3, 4) and out["b"][0].tolist() == [0, 1, 2, 3, 4] and out["c"] == "text"
    fortran = np.asfortranarray(np.arange(12).reshape(3, 4))
    assert np.array_equal(ray.get(ray.put(fortran)), fortran)
    strided = np.arange(20)[::2]
    assert np.array_equal(ray.get(ray.put(strided)), strided)


def test_buffer_protocol_objects_travel_as_memoryviews(cluster):
    from prism import _prism
    data = bytearray(range(256)) * (1 << 16)  # 16 MiB
    view = ray.get(ray.put(memoryview(data)))
    assert isinstance(view, memoryview) and view.readonly
    assert bytes(view[:4]) == b"\x00\x01\x02\x03" and view.nbytes == len(data)
    address = np.frombuffer(view, dtype=np.uint8).ctypes.data
    assert _prism.in_object_store(address, view.nbytes), "it points into the store"
    shaped = memoryview(np.arange(12, dtype=np.int32).reshape(3, 4))
    back = ray.get(ray.put(shaped))
    assert bytes(back) == bytes(shaped)
    assert ray.get(ray.put(bytearray(b"abc"))) == bytearray(b"abc")


def test_plain_values_take_the_short_way_and_read_back_alike(cluster):
    # bytes, str, numbers, bools and None skip the general pickler (which never calls a custom
    # reducer for them either): the frame must be the one it writes, and the value must come
    # back with its type.
    from prism._private import serialization

    values = [b"ok", "h\u00e9llo", 0, -5, 2**70, 3.5, True, None, b"x" * 100_000]
    for value in values:
        size, parts, nested = serialization.serialize(value)
        general = serialization._PLAIN
        serialization._PLAIN = frozenset()
        try:
            size2, parts2, _ = serialization.serialize(value)
        finally:
            serialization._PLAIN = general
        frame = serialization.to_bytes(size, parts)
        assert frame == serialization.to_bytes(size2, parts2) and nested == []
        back = serialization.deserialize(frame)
        assert back == value and type(back) is type(value)
    assert ray.get(square.remote(7)) == 49 and ray.get(ray.put("s")) == "s"
