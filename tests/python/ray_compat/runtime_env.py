# runtime_env: env_vars and working_dir for a job, and per task.
import os
import tempfile

import prism as ray

work = tempfile.mkdtemp()
with open(os.path.join(work, "helper_module.py"), "w") as f:
    f.write("VALUE = 'from the working dir'\n")
with open(os.path.join(work, "data.txt"), "w") as f:
    f.write("42")
os.makedirs(os.path.join(work, "big"))
with open(os.path.join(work, "big", "skip.bin"), "w") as f:
    f.write("x")

ray.init(num_cpus=2, runtime_env={"working_dir": work, "env_vars": {"JOB_VAR": "job"}, "excludes": ["big"]})


@ray.remote
def inspect_env():
    import helper_module  # importable: the working dir is on sys.path
    return (helper_module.VALUE, open("data.txt").read(), os.path.exists("big"), os.environ.get("JOB_VAR"),
            os.environ.get("TASK_VAR"))


assert ray.get(inspect_env.remote()) == ("from the working dir", "42", False, "job", None)
value = ray.get(inspect_env.options(runtime_env={"env_vars": {"TASK_VAR": "task"}}).remote())
assert value == ("from the working dir", "42", False, "job", "task"), value


@ray.remote(runtime_env={"env_vars": {"JOB_VAR": "actor"}})
class Reader:
    def var(self):
        return os.environ["JOB_VAR"]


assert ray.get(Reader.remote().var.remote()) == "actor"

try:
    inspect_env.options(runtime_env={"pip": ["requests"]}).remote()
    raise AssertionError("pip environments are refused with a clear error")
except ValueError as e:
    assert "pip" in str(e)
print("ok")
ray.shutdown()
