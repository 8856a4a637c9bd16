#!/usr/bin/env bash
# Installs what is missing, builds, and runs the seed example on the embedded default cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh >/dev/null
./build/bin/square
