# Tasks and actor methods that return several objects (Ray's num_returns).
import prism as ray

ray.init(num_cpus=2)


@ray.remote(num_returns=3)
def return_multiple():
    return 0, 1, 2


a, b, c = return_multiple.remote()
assert ray.get([a, b, c]) == [0, 1, 2]
assert ray.get(b) == 1


@ray.remote(num_returns=3)
def return_multiple_as_generator():
    for i in range(3):
        yield i


a, b, c = return_multiple_as_generator.remote()
assert ray.get(c) == 2


@ray.remote
def pair():
    return "x", "y"


refs = pair.options(num_returns=2).remote()
assert isinstance(refs, list) and len(refs) == 2
assert ray.get(refs[1]) == "y"

# A mismatch fails every return object with Ray's message.
bad = pair.options(num_returns=3).remote()
try:
    ray.get(bad[2])
    raise AssertionError("a task that returns 2 values with num_returns=3 must fail")
except ValueError as e:
    assert "Task returned 2 objects, but num_returns=3." in str(e), e

# num_returns=0: the task runs, nothing to get.
assert pair.options(num_returns=0).remote() is None


# The returns are separate objects: each can go to a task of its own.
@ray.remote
def double(x):
    return 2 * x


x, y = pair.options(num_returns=2).remote()
assert ray.get(double.remote(x)) == "xx"


@ray.remote
class Splitter:
    @ray.method(num_returns=2)
    def split(self, s):
        head, _, tail = s.partition(" ")
        return head, tail

    def three(self):
        return 1, 2, 3


s = Splitter.remote()
head, tail = s.split.remote("hello world")
assert ray.get(head) == "hello" and ray.get(tail) == "world"
one, two, three = s.three.options(num_returns=3).remote()
assert ray.get(three) == 3
print("ok")
ray.shutdown()
