#!/usr/bin/env bash
# Clang's thread-safety analysis over prism's own code: each translation unit of core/, the
# collectives and the GPU layer (the CUDA backend aside) is parsed with clang (-fsyntax-only)
# with the flags of the build tree's compile_commands.json, and any -Wthread-safety finding
# fails the check. The annotations are in base/thread_annotations.h; the mutexes, base/mutex.h.
# Usage: scripts/check-thread-safety.sh [build-dir] (default: build; configure it first).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
clang="${CLANG:-$(command -v clang++ || true)}"
if [ -z "$clang" ]; then
  echo "check-thread-safety: clang++ is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
[ -f "$build/compile_commands.json" ] || { echo "check-thread-safety: no $build/compile_commands.json" >&2; exit 1; }
list=$(mktemp)
trap 'rm -f "$list"' EXIT
python3 - "$build/compile_commands.json" "$PWD" "$clang" > "$list" <<'PY'
import json, shlex, sys
commands, root, clang = sys.argv[1], sys.argv[2], sys.argv[3]
seen = set()
for e in json.load(open(commands)):
    f = e["file"]
    rel = f[len(root) + 1:] if f.startswith(root + "/") else None
    if rel is None or not rel.endswith(".cc") or f in seen:
        continue
    if not rel.startswith(("core/", "collectives/", "gpu/")) or rel.startswith("gpu/cuda/"):
        continue
    seen.add(f)
    args = shlex.split(e["command"])
    if args[0].endswith("ccache"):
        args = args[1:]
    out, skip = [clang], False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD", "-Werror") or a.startswith("-W"):
            continue
        out.append(a)
    out += ["-fsyntax-only", "-Wno-everything", "-Wthread-safety", "-Wthread-safety-beta", "-Werror=thread-safety",
            "-Werror=thread-safety-beta"]
    # One line per unit: its directory, then the command (run by the shell below).
    print(shlex.quote(e["directory"]) + " " + " ".join(shlex.quote(a) for a in out))
PY
count=$(wc -l < "$list")
echo "check-thread-safety: $count translation units with $("$clang" --version | head -1)"
status=0
xargs -P "${PRISM_CHECK_JOBS:-2}" -I{} -d '\n' sh -c 'set -- {}; dir=$1; shift; cd "$dir" && exec "$@"' < "$list" || status=$?
if [ $status -ne 0 ]; then
  echo "check-thread-safety: findings above (or a unit clang cannot parse)" >&2
  exit 1
fi
echo "check-thread-safety: no findings"
