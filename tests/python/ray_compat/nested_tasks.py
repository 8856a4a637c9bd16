# A binary tree of tasks of depth 7, each waiting in ray.get on its children, on 2 CPUs: tasks blocked in
# get give their CPU back and do not count against the worker pool's cap, so it finishes.
import prism as ray

ray.init(num_cpus=2)


@ray.remote
def tree(depth):
    if depth == 0:
        return 1
    return sum(ray.get([tree.remote(depth - 1), tree.remote(depth - 1)]))


assert ray.get(tree.remote(7), timeout=300) == 128
print("ok")
ray.shutdown()
