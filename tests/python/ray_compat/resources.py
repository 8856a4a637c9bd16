# ray.cluster_resources() / ray.available_resources() / ray.nodes(), shaped as Ray's.
import prism as ray

ray.init(num_cpus=2, resources={"special": 3})
total = ray.cluster_resources()
assert total["CPU"] == 2.0 and isinstance(total["CPU"], float)
assert total["special"] == 3.0
assert total["memory"] > 0 and total["object_store_memory"] > 0
ip = ray.util.get_node_ip_address()
assert total["node:" + ip] == 1.0 and total["node:__internal_head__"] == 1.0
free = ray.available_resources()
assert free["CPU"] == 2.0


@ray.remote(resources={"special": 3})
def hold():
    return ray.available_resources().get("special", 0.0)


assert ray.get(hold.remote()) == 0.0  # all of it taken: left out, as in Ray
(node,) = ray.nodes()
assert node["Alive"] and node["alive"] and node["NodeManagerAddress"] == ip
assert node["Resources"]["CPU"] == 2.0
assert node["NodeID"] == ray.get_runtime_context().get_node_id()
print("ok")
ray.shutdown()
