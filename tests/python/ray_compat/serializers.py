# ray.util.register_serializer: a type pickle cannot handle, written and read with custom functions.
import threading

import prism as ray
from prism.util import deregister_serializer, register_serializer

ray.init(num_cpus=2)


class Connection:
    def __init__(self, host):
        self.host = host
        self.lock = threading.Lock()  # cannot be pickled


try:
    ray.put(Connection("a"))
    raise AssertionError("a lock cannot be pickled without a serializer")
except TypeError:
    pass

register_serializer(Connection, serializer=lambda c: c.host, deserializer=lambda host: Connection(host))
ref = ray.put(Connection("db.local"))


@ray.remote
def host_of(c):
    return type(c).__name__, c.host


assert ray.get(host_of.remote(ref)) == ("Connection", "db.local")
assert ray.get(ref).host == "db.local"
deregister_serializer(Connection)
try:
    ray.put(Connection("b"))
    raise AssertionError("deregistered")
except TypeError:
    pass
print("ok")
ray.shutdown()
