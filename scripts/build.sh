#!/usr/bin/env bash
# Configures and builds prism into ./build (RelWithDebInfo, Ninja, ccache when present).
set -euo pipefail
cd "$(dirname "$0")/.."
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" "$@"
cmake --build build -j "${PRISM_BUILD_JOBS:-2}"
