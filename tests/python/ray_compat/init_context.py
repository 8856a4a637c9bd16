# ray.init() returns a context: address_info, dashboard_url, and use as a context manager.
import os

import prism as ray

with ray.init(num_cpus=2, namespace="docs", include_dashboard=False) as context:
    info = context.address_info
    assert os.path.isdir(info["session_dir"]), info
    assert info["node_id"] == ray.get_runtime_context().get_node_id()
    assert context["session_dir"] == info["session_dir"]
    assert context.dashboard_url is None  # no dashboard yet
    assert ray.get_runtime_context().namespace == "docs"

    @ray.remote
    def hello():
        return "hello"

    assert ray.get(hello.remote()) == "hello"
assert not ray.is_initialized()

try:
    ray.init(no_such_argument=1)
    raise AssertionError("unknown init() arguments must be refused")
except TypeError as e:
    assert "no_such_argument" in str(e)
print("ok")
