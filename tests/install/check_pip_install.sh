#!/usr/bin/env bash
# `pip install ./python` into a fresh virtual environment, then the README's Python snippet runs
# there with `import prism as ray`, and the `prism` command works. Exits 77 (skipped) when PyPI,
# which pip needs for the build backend, cannot be reached.
set -euo pipefail
src="$1"
python="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv --system-site-packages "$work/venv"
if ! "$work/venv/bin/pip" download -q --no-deps -d "$work/probe" "scikit-build-core>=0.8" >/dev/null 2>&1; then
  echo "PyPI is not reachable: skipping the pip install check"
  exit 77
fi
"$work/venv/bin/pip" install -q "$src/python"
cd "$work"
out="$("$work/venv/bin/python" - <<'PY'
import prism as ray
ray.init()

@ray.remote
def square(x):
    return x * x

refs = [square.remote(i) for i in range(8)]
print(ray.get(refs))
PY
)"
echo "$out"
[ "$(echo "$out" | tail -n 1)" = "[0, 1, 4, 9, 16, 25, 36, 49]" ]
"$work/venv/bin/prism" --help >/dev/null
echo "pip install ./python: ok"
