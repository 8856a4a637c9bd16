#!/usr/bin/env bash
# Configures and builds prism into ./build (RelWithDebInfo, Ninja, ccache when present), with
# warnings as errors (the project's own builds; a user's plain cmake build does not force them).
# PRISM_BUILD_TARGETS (space-separated) builds only those targets; extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache hits across clones of the tree (CI builds a fresh clone in another folder each time).
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-true}"
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRISM_WERROR=ON "${launcher[@]}" "$@"
targets=()
for t in ${PRISM_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build build -j "${PRISM_BUILD_JOBS:-2}" "${targets[@]}"
