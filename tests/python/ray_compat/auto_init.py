# Ray Core's first example, without ray.init(): the first remote call starts a local cluster.
import prism as ray


@ray.remote
def f(x):
    return x * x


futures = [f.remote(i) for i in range(4)]
print(ray.get(futures))
assert ray.get(futures) == [0, 1, 4, 9]
assert ray.is_initialized()

# init() after the implicit start needs ignore_reinit_error, as in Ray.
try:
    ray.init()
    raise AssertionError("a second init() must fail")
except RuntimeError:
    pass
ctx = ray.init(ignore_reinit_error=True)
assert ctx is not None

# ray.put and ray.get work the same way after a shutdown: put starts the cluster again.
ray.shutdown()
assert not ray.is_initialized()
ref = ray.put({"a": 1})
assert ray.get(ref) == {"a": 1}
ray.shutdown()
