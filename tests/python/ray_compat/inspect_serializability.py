# Finding what cannot be serialized, as in Ray Core's serialization troubleshooting guide
# (ray.util.inspect_serializability).
import io
import threading

import prism as ray
from prism.util import inspect_serializability

ray.init(num_cpus=2)

lock = threading.Lock()


def test():
    print(lock)


report = io.StringIO()
serializable, failures = inspect_serializability(test, name="test", print_file=report)
print(report.getvalue())
assert not serializable
assert len(failures) == 1
failure = next(iter(failures))
assert failure.obj is lock and failure.name == "lock" and failure.parent is test
assert "!!! FAIL" in report.getvalue() and "lock" in report.getvalue()


# The lock held by an object, one attribute down.
class Holder:
    def __init__(self):
        self.name = "holder"
        self.guard = threading.Lock()


holder = Holder()
serializable, failures = inspect_serializability(holder, name="holder", print_file=io.StringIO())
assert not serializable
assert {f.name for f in failures} == {"guard"}
assert next(iter(failures)).path == ("holder", "guard")

# What pickles is reported as such.
assert inspect_serializability(lambda x: x + 1, print_file=io.StringIO()) == (True, set())


# Fixing it: make the lock inside the function; the task then runs.
def fixed():
    inner = threading.Lock()
    return inner.locked()


assert inspect_serializability(fixed, print_file=io.StringIO())[0]
assert ray.get(ray.remote(fixed).remote()) is False

ray.shutdown()
print("inspect_serializability: ok")
