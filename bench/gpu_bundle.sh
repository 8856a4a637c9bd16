#!/usr/bin/env bash
# Packs what bench/gpu_check.sh needs from a CUDA-enabled build into one folder that can travel to
# a GPU machine without prism's development packages (gRPC, protobuf, spdlog...): the GPU test and
# benchmark programs, libprism and the cuda backend (debug info stripped), and the shared libraries
# they need that are not the C/C++ runtime or CUDA's own (those come with the GPU machine).
#
#   bench/gpu_bundle.sh BUILD_DIR OUT_DIR
#   (on the GPU machine)  bash bench/gpu_check.sh --build-dir OUT_DIR --no-build
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: gpu_bundle.sh BUILD_DIR OUT_DIR" >&2; exit 2; }
build="$1"
out="$2"
[ -f "$build/lib/libprism_gpu_cuda.so" ] || {
  echo "gpu_bundle: $build has no lib/libprism_gpu_cuda.so (configure with -DPRISM_WITH_CUDA=ON)" >&2
  exit 1
}
programs=(prism gpu_benchmark gpu_backend_test gpu_test base_test gpu_scheduling_test gpu_tasks_test
          device_objects_test collectives_nccl_test collectives_device_test)
[ -x "$build/bin/nccl_overhead" ] && programs+=(nccl_overhead)  # (where NCCL was found)
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/deps"
for p in "${programs[@]}"; do
  [ -x "$build/bin/$p" ] || { echo "gpu_bundle: $build/bin/$p is not built" >&2; exit 1; }
  objcopy --strip-debug "$build/bin/$p" "$out/bin/$p"
done
for l in "$build"/lib/libprism.so* "$build"/lib/libprism_gpu_cuda.so "$build"/lib/libprism_collective*.so; do
  if [ -L "$l" ]; then cp -P "$l" "$out/lib/"; else objcopy --strip-debug "$l" "$out/lib/$(basename "$l")"; fi
done
# Everything they load, less the C/C++ runtime, CUDA's libraries and prism's own.
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|librt\.|libstdc\+\+|libgcc_s|libz\.|libcuda|libcudart|libcublas|libnccl|libnvidia|libprism)'
for f in "$out"/bin/* "$out"/lib/*.so; do
  ldd "$f" | awk '/=> \// {print $1, $3}'
done | sort -u | while read -r name path; do
  if ! [[ "$name" =~ $skip ]]; then cp -L "$path" "$out/deps/$name"; fi
done
# The Python package and what its binding module needs to be compiled there for that machine's
# Python (bench/gpu_check.sh does it when it finds PyTorch): the headers the binding includes that
# a GPU machine lacks, and the generated protobuf header.
mkdir -p "$out/include" "$out/python"
cp -r python/prism "$out/python/"
rm -f "$out"/python/prism/_prism*.so
c++ -DMSGPACK_NO_BOOST -I core -I "$build/core" -I . -I core/include -I gpu/include -I collectives/include \
    -isystem "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" -std=c++20 -x c++ -M python/src/binding.h |
  tr ' \\' '\n\n' | grep -E '^/usr/include/(asio|msgpack|google|dlpack|absl)' | sort -u |
  while read -r h; do
    mkdir -p "$out/include/$(dirname "${h#/usr/include/}")"
    cp "$h" "$out/include/${h#/usr/include/}"
  done
cp /usr/include/asio.hpp /usr/include/msgpack.hpp "$out/include/"
cp "$build/core/prism.pb.h" "$out/include/"
du -sh "$out"
ls "$out/deps"
