#!/usr/bin/env bash
# Builds libprism (and the prism tool, which runs its node daemon) alone in a Release tree
# (./build-release), as a user's plain `cmake -DCMAKE_BUILD_TYPE=Release` build does: no tests,
# benchmarks or examples, and warnings not turned into errors. CI runs it so that such a build
# keeps working.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compiler-cache.sh
start=$(date +%s)
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DPRISM_BUILD_TESTS=OFF \
  -DPRISM_BUILD_BENCH=OFF -DPRISM_BUILD_EXAMPLES=OFF "${launcher[@]}" "$@" >/dev/null
cmake --build build-release -j "${PRISM_BUILD_JOBS:-2}" --target prism_core prism_tool
echo "build-release: libprism and the prism tool built in $(( $(date +%s) - start )) s"
