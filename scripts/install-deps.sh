#!/usr/bin/env bash
# Installs the Debian packages prism builds with, if any is missing. Needs root (or sudo).
set -euo pipefail
packages=(
  cmake ninja-build g++ ccache pkg-config clang clang-format iproute2
  libprotobuf-dev protobuf-compiler libabsl-dev libgrpc++-dev protobuf-compiler-grpc
  libasio-dev libmsgpack-cxx-dev libspdlog-dev libcli11-dev nlohmann-json3-dev libdlpack-dev libgloo-dev
  libgtest-dev libgmock-dev
  python3-dev pybind11-dev python3-pytest python3-cloudpickle python3-numpy python3-msgpack
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -q
$sudo_cmd apt-get install -y -q "${missing[@]}"
