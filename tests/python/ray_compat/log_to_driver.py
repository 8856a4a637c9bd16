# ray.init(log_to_driver=False): what workers print does not reach the driver.
import subprocess
import sys
import textwrap

program = textwrap.dedent("""
    import time
    import prism as ray
    ray.init(num_cpus=1, log_to_driver={flag})

    @ray.remote
    def shout():
        print("from the worker")
        return 1

    ray.get(shout.remote())
    time.sleep(1)  # lines travel apart from results: give them a moment before shutting down
    ray.shutdown()
""")
on = subprocess.run([sys.executable, "-c", program.format(flag=True)], capture_output=True, text=True, timeout=120)
off = subprocess.run([sys.executable, "-c", program.format(flag=False)], capture_output=True, text=True, timeout=120)
assert on.returncode == 0 and off.returncode == 0, (on.stderr, off.stderr)
assert "from the worker" in on.stdout, on.stdout
assert "from the worker" not in off.stdout + off.stderr, off.stdout
print("ok")
