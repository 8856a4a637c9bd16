#!/usr/bin/env bash
# Configures and builds prism into ./build (RelWithDebInfo, Ninja, ccache when present), with
# warnings as errors (the project's own builds; a user's plain cmake build does not force them).
# PRISM_BUILD_TARGETS (space-separated) builds only those targets; extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compiler-cache.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRISM_WERROR=ON "${launcher[@]}" "$@"
targets=()
for t in ${PRISM_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build build -j "${PRISM_BUILD_JOBS:-2}" "${targets[@]}"
