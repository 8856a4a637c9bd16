#!/usr/bin/env bash
# Installs what is missing, builds what the seed example needs (libprism, the prism tool that
# runs the embedded node daemon, and the example), and runs it on the embedded default cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
PRISM_BUILD_TARGETS="square prism_tool" bash scripts/build.sh >/dev/null
./build/bin/square
