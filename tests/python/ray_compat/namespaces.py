# Namespaces: named actors are found only in their namespace.
import prism as ray

ray.init(num_cpus=2, namespace="colors")


@ray.remote
class Named:
    def who(self):
        return "red"


red = Named.options(name="red").remote()
assert ray.get(ray.get_actor("red").who.remote()) == "red"
assert ray.get(ray.get_actor("red", namespace="colors").who.remote()) == "red"
try:
    ray.get_actor("red", namespace="shapes")
    raise AssertionError("the name must not be found in another namespace")
except ValueError:
    pass
# The same name in another namespace is another actor.
other = Named.options(name="red", namespace="shapes").remote()
assert ray.get(ray.get_actor("red", namespace="shapes").who.remote()) == "red"
try:
    Named.options(name="red").remote()
    raise AssertionError("a name is unique within its namespace")
except ValueError:
    pass
# get_if_exists returns the live one.
again = Named.options(name="red", get_if_exists=True).remote()
assert again == ray.get_actor("red")


@ray.remote
def look_up():
    # Tasks run in their job's namespace.
    return ray.get(ray.get_actor("red").who.remote()), ray.get_runtime_context().namespace


assert ray.get(look_up.remote()) == ("red", "colors")
print("ok")
ray.shutdown()
