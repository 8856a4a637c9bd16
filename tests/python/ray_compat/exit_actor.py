# ray.actor.exit_actor() and sys.exit() end the actor for good; calls then raise RayActorError.
import sys

import prism as ray

ray.init(num_cpus=2)


@ray.remote(max_restarts=3)
class Actor:
    def exit(self):
        ray.actor.exit_actor()

    def exit_with_sys(self):
        sys.exit(0)

    def ping(self):
        return "pong"


for how in ("exit", "exit_with_sys"):
    actor = Actor.remote()
    assert ray.get(actor.ping.remote()) == "pong"
    try:
        ray.get(getattr(actor, how).remote())
        raise AssertionError("the call that exits must raise RayActorError")
    except ray.exceptions.RayActorError as e:
        assert "exit" in str(e), e
    try:
        ray.get(actor.ping.remote())
        raise AssertionError("an actor that exited is not restarted")
    except ray.exceptions.RayActorError:
        pass

try:
    ray.actor.exit_actor()
    raise AssertionError("exit_actor() outside an actor must fail")
except TypeError:
    pass
print("ok")
ray.shutdown()
