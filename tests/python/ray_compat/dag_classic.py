# Lazy task graphs, as in Ray Core's "Ray DAG API" guide (ray.dag): function chains, shared
# nodes, InputNode and its parts, actors and their methods, several outputs.
import prism as ray
from prism.dag import InputNode, MultiOutputNode

ray.init(num_cpus=2)


# Ray DAG with functions: a chain, each node executable as a root.
@ray.remote
def func(src, inc=1):
    return src + inc


a_ref = func.bind(1, inc=2)
assert ray.get(a_ref.execute()) == 3  # 1 + 2 = 3
b_ref = func.bind(a_ref, inc=3)
assert ray.get(b_ref.execute()) == 6  # (1 + 2) + 3 = 6
c_ref = func.bind(b_ref, inc=a_ref)
assert ray.get(c_ref.execute()) == 9  # ((1 + 2) + 3) + (1 + 2) = 9


# A diamond: the shared node runs once per execute().
@ray.remote
class Tally:
    def __init__(self):
        self.n = 0

    def hit(self):
        self.n += 1
        return self.n

    def count(self):
        return self.n


tally = Tally.remote()


@ray.remote
def source(tally, x):
    ray.get(tally.hit.remote())
    return x


@ray.remote
def add(x, y):
    return x + y


top = source.bind(tally, 5)
diamond = add.bind(func.bind(top, inc=1), func.bind(top, inc=2))
assert ray.get(diamond.execute()) == 13  # (5 + 1) + (5 + 2)
assert ray.get(tally.count.remote()) == 1
assert ray.get(diamond.execute()) == 13
assert ray.get(tally.count.remote()) == 2


# Ray DAG with classes and class methods.
@ray.remote
class Actor:
    def __init__(self, init_value):
        self.i = init_value

    def inc(self, x):
        self.i += x

    def get(self):
        return self.i


a1 = Actor.bind(10)  # Instantiate Actor with init_value 10.
val = a1.get.bind()  # ClassMethod that returns value from get() from the actor created.
assert ray.get(val.execute()) == 10


@ray.remote
def combine(x, y):
    return x + y


a2 = Actor.bind(10)  # Instantiate another Actor with init_value 10.
a1.inc.bind(2)  # Call inc() on the actor created with increment of 2.
a1.inc.bind(4)  # Call inc() on the actor created with increment of 4.
a2.inc.bind(6)  # Call inc() on the actor created with increment of 6.

# Combine outputs from a1.get() and a2.get()
dag = combine.bind(a1.get.bind(), a2.get.bind())

# a1 +  a2 + inc(2) + inc(4) + inc(6)
# 10 + (10 + ( 2   +    4    +   6)) = 32
assert ray.get(dag.execute()) == 32
# Each execute() makes its actors anew: the same result again.
assert ray.get(dag.execute()) == 32


# Ray DAG with custom InputNode.
@ray.remote
def a(user_input):
    return user_input * 2


@ray.remote
def b(user_input):
    return user_input + 1


@ray.remote
def c(x, y):
    return x + y


with InputNode() as dag_input:
    a_ref = a.bind(dag_input)
    b_ref = b.bind(dag_input)
    dag = c.bind(a_ref, b_ref)

#   a(2)  +   b(2)  = c
# (2 * 2) + (2 + 1)
assert ray.get(dag.execute(2)) == 7

#   a(3)  +   b(3)  = c
# (3 * 2) + (3 + 1)
assert ray.get(dag.execute(3)) == 10


# Parts of the input: index, key, attribute; and MultiOutputNode.
@ray.remote
def f(input):
    return input + 1


with InputNode() as input_data:
    dag = MultiOutputNode([f.bind(input_data["x"]), f.bind(input_data["y"])])

refs = dag.execute({"x": 1, "y": 2})
assert ray.get(refs) == [2, 3]

with InputNode() as inp:
    dag = MultiOutputNode([f.bind(inp[0]), f.bind(inp[1]), f.bind(inp.scale)])
assert ray.get(dag.execute(10, 20, scale=30)) == [11, 21, 31]

# Nodes nested in lists and dicts are replaced by their refs (which arrive as refs, as with
# .remote()).


@ray.remote
def total(items, extra):
    return sum(ray.get(items)) + ray.get(extra["v"])


with InputNode() as inp:
    dag = total.bind([f.bind(inp), f.bind(inp)], {"v": f.bind(inp)})
assert ray.get(dag.execute(1)) == 6


# Reusing a live actor: bind its methods on the handle.
@ray.remote
class Worker:
    def __init__(self):
        self.forwarded = 0

    def forward(self, input_data: int):
        self.forwarded += 1
        return input_data + 1

    def num_forwarded(self):
        return self.forwarded


worker = Worker.remote()

with InputNode() as input_data:
    dag = MultiOutputNode([worker.forward.bind(input_data)])

# Actors are reused. The DAG definition doesn't include actor creation.
assert ray.get(dag.execute(1)) == [2]
assert ray.get(dag.execute(2)) == [3]
assert ray.get(dag.execute(3)) == [4]
assert ray.get(worker.num_forwarded.remote()) == 3


# A ClassNode with two methods bound, both in one graph: one actor serves both.
@ray.remote
class Model:
    def __init__(self, weight):
        self.weight = weight
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.weight * x

    def calls_so_far(self):
        return self.calls


with InputNode() as inp:
    model = Model.bind(3)
    out = model.forward.bind(inp)
    calls = model.calls_so_far.bind()
    dag = MultiOutputNode([out, calls])
assert ray.get(dag.execute(7)) == [21, 1]

ray.shutdown()
print("dag_classic: ok")
