#!/usr/bin/env bash
# Installs what is missing, checks the formatting, builds, checks the locking with clang's
# thread-safety analysis, and runs every test suite; then builds libprism alone in a Release
# tree, as users build it.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache hits across clones of the tree, also in the pip build that a test makes.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-true}"
bash scripts/install-deps.sh
bash scripts/check-format.sh  # the sources follow .clang-format
bash scripts/build.sh
bash scripts/check-thread-safety.sh build  # clang's -Wthread-safety over the tree
(cd build && ctest --output-on-failure -j "${PRISM_TEST_JOBS:-2}" --timeout 300)
bash scripts/build-release.sh
