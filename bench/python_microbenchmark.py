"""prism's Python microbenchmark: the workloads of `ray microbenchmark`, under the same names.

    PYTHONPATH=build/python python3 bench/python_microbenchmark.py            # prism only
    python3 bench/python_microbenchmark.py --compare --rounds 3               # prism and Ray

With --compare it also runs the same program on Ray, in a virtual environment it creates
(``bench/.ray-venv``, with ``pip install ray``) when PyPI is reachable, and prints both columns
and their ratio. Without Ray it still runs and prints prism's column. With --rounds N the two
engines run one after the other N times (interleaved, so that a machine that slows down for a
while slows both) and each column is the median of its rounds. Every result is checked.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


ONLY = os.environ.get("PRISM_BENCH_ONLY", "")  # set by --only for the child runs


def timeit(name, fn, multiplier=1, min_seconds=1.0):
    """Calls fn until min_seconds passed (at least 3 times); returns (name, rate per second), or
    None for a workload --only leaves out."""
    if ONLY and ONLY not in name:
        return None
    fn()  # warm
    start = time.perf_counter()
    count = 0
    while count < 3 or time.perf_counter() - start < min_seconds:
        fn()
        count += 1
    rate = count * multiplier / (time.perf_counter() - start)
    return name, rate


def run_workloads(ray, is_prism):
    results = []
    ray.init(num_cpus=os.cpu_count())
    time.sleep(3)  # both engines: what they start in the background settles before timing

    @ray.remote
    def small_value():
        return b"ok"

    @ray.remote
    def small_value_arg(x):
        return b"ok"

    @ray.remote
    class Actor:
        def small_value(self):
            return b"ok"

        def small_value_arg(self, x):
            return b"ok"

        def small_value_batch(self, n):
            ray.get([small_value.remote() for _ in range(n)])

    @ray.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

    @ray.remote(num_cpus=0)
    class Client:
        def __init__(self, servers):
            self.servers = servers if isinstance(servers, list) else [servers]

        def small_value_batch(self, n):
            results = []
            for s in self.servers:
                results.extend([s.small_value.remote() for _ in range(n)])
            ray.get(results)

        def small_value_batch_arg(self, n):
            x = ray.put(0)
            results = []
            for s in self.servers:
                results.extend([s.small_value_arg.remote(x) for _ in range(n)])
            ray.get(results)

    value = ray.put(0)
    results.append(timeit("single client get calls", lambda: ray.get(value)))
    results.append(timeit("single client put calls", lambda: ray.put(0)))

    arr = np.ones(100 * 1024 * 1024, dtype=np.int64)  # 800 MB (touched: not the shared zero page)
    results.append(timeit("single client put gigabytes", lambda: ray.put(arr), 8 * 0.1))

    def memcpy():
        np.copyto(dst, arr)

    dst = np.ones_like(arr)
    results.append(timeit("memcpy floor (numpy copy, same array)", memcpy, 8 * 0.1))

    big = ray.put(arr)
    results.append(timeit("single client get gigabytes", lambda: ray.get(big), 8 * 0.1))
    del big

    def get_containing_10k_refs():
        ray.get(ray.put([ray.put(0) for _ in range(10000)]))

    results.append(timeit("single client get object containing 10k refs", get_containing_10k_refs))

    def wait_1k():
        refs = [small_value.remote() for _ in range(1000)]
        ray.wait(refs, num_returns=1000)

    results.append(timeit("single client wait 1k refs", wait_1k))

    ready = [ray.put(i) for i in range(1000)]

    def wait_1k_ready():
        done, pending = ray.wait(ready, num_returns=len(ready))
        assert len(done) == 1000 and not pending

    results.append(timeit("single client wait 1k ready refs", wait_1k_ready))
    del ready

    results.append(timeit("single client tasks sync", lambda: ray.get(small_value.remote())))

    def tasks_async():
        ray.get([small_value.remote() for _ in range(1000)])

    results.append(timeit("single client tasks async", tasks_async, 1000))

    n, m = 1000, 4
    actors = [Actor.remote() for _ in range(m)]

    def multi_client_tasks():
        ray.get([a.small_value_batch.remote(n) for a in actors])

    results.append(timeit("multi client tasks async", multi_client_tasks, n * m))

    a = Actor.remote()
    results.append(timeit("1:1 actor calls sync", lambda: ray.get(a.small_value.remote())))

    def actor_async():
        ray.get([a.small_value.remote() for _ in range(1000)])

    results.append(timeit("1:1 actor calls async", actor_async, 1000))

    a_conc = Actor.options(max_concurrency=16).remote()

    def actor_concurrent():
        ray.get([a_conc.small_value.remote() for _ in range(1000)])

    results.append(timeit("1:1 actor calls concurrent", actor_concurrent, 1000))

    servers = [Actor.remote() for _ in range(m)]
    client = Client.remote(servers)

    def one_to_n():
        ray.get(client.small_value_batch.remote(n))

    results.append(timeit("1:n actor calls async", one_to_n, n * m))

    pairs = [(Actor.remote(), None) for _ in range(m)]
    clients = [Client.remote(s) for s, _ in pairs]

    def n_to_n():
        ray.get([c.small_value_batch.remote(n) for c in clients])

    results.append(timeit("n:n actor calls async", n_to_n, n * m))

    def n_to_n_arg():
        ray.get([c.small_value_batch_arg.remote(n) for c in clients])

    results.append(timeit("n:n actor calls with arg async", n_to_n_arg, n * m))

    aa = AsyncActor.remote()
    results.append(timeit("1:1 async-actor calls sync", lambda: ray.get(aa.small_value.remote())))

    def async_actor_async():
        ray.get([aa.small_value.remote() for _ in range(1000)])

    results.append(timeit("1:1 async-actor calls async", async_actor_async, 1000))

    if is_prism:
        from prism.util import placement_group, remove_placement_group
    else:
        from ray.util import placement_group, remove_placement_group

    def pg_create_remove():
        pgs = [placement_group([{"CPU": 0.001}]) for _ in range(20)]
        for pg in pgs:
            assert pg.wait(30)
        for pg in pgs:
            remove_placement_group(pg)

    results.append(timeit("placement group create/removal", pg_create_remove, 20))

    ray.shutdown()
    return [r for r in results if r is not None]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare", action="store_true", help="also run on Ray (installs it into a venv)")
    parser.add_argument("--engine", choices=["prism", "ray"], default="prism", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; columns are their medians")
    parser.add_argument("--only", default="", help="run only the workloads whose name holds this text")
    args = parser.parse_args()
    if args.only:
        os.environ["PRISM_BENCH_ONLY"] = args.only

    if args.json:
        if args.engine == "ray":
            import ray
            results = run_workloads(ray, False)
        else:
            import prism as ray
            results = run_workloads(ray, True)
        print(json.dumps(results))
        return

    def run_engine(python, engine):
        out = subprocess.run([python, os.path.abspath(__file__), "--engine", engine, "--json"], check=True,
                             capture_output=True, text=True, timeout=3600)
        return json.loads(out.stdout.strip().splitlines()[-1])

    python = None
    if args.compare:
        venv = os.path.join(HERE, ".ray-venv")
        python = os.path.join(venv, "bin", "python")
        try:
            if not os.path.exists(python):
                subprocess.run([sys.executable, "-m", "venv", venv], check=True)
                subprocess.run([python, "-m", "pip", "install", "-q", "ray", "numpy"], check=True, timeout=1800)
        except Exception as e:  # no PyPI: prism's column only
            print(f"(Ray is not available here: {e})", file=sys.stderr)
            python = None
    prism_rounds, ray_rounds = [], []
    for _ in range(max(1, args.rounds)):
        prism_rounds.append(run_engine(sys.executable, "prism"))
        if python:
            try:
                ray_rounds.append(run_engine(python, "ray"))
            except Exception as e:  # Ray failed: prism's column only
                print(f"(Ray failed: {e})", file=sys.stderr)
                python = None

    def medians(rounds):
        by_name = {}
        for r in rounds:
            for name, rate in r:
                by_name.setdefault(name, []).append(rate)
        return {name: sorted(v)[len(v) // 2] for name, v in by_name.items()}

    ours = medians(prism_rounds)
    theirs = medians(ray_rounds) if ray_rounds else {}
    if not args.compare:
        for name, rate in ours.items():
            print(f"{name}: {rate:.2f} per second")
        return
    print(f"{'workload':50s} {'prism':>14s} {'ray':>14s} {'ratio':>7s}   ({len(prism_rounds)} round(s))")
    for name, rate in ours.items():
        r = theirs.get(name)
        ratio = f"{rate / r:6.2f}x" if r else "      -"
        print(f"{name:50s} {rate:14.2f} {r if r else float('nan'):14.2f} {ratio}")


if __name__ == "__main__":
    main()
