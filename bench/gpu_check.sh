#!/usr/bin/env bash
# The real-GPU check in one go: builds prism with the cuda backend, runs the `gpu`-labelled
# tests and the GPU benchmark, and ends in a short table. CI runs it with --backend sim (on the
# existing build), so the pipeline cannot rot where no GPU is.
#
#   bench/gpu_check.sh                         # on a GPU machine: build into build-gpu, cuda
#   bench/gpu_check.sh --build-dir B --no-build  # use a build made elsewhere (bench/gpu_bundle.sh)
#   bench/gpu_check.sh --backend sim --build-dir build --no-build   # what CI runs
set -uo pipefail
cd "$(dirname "$0")/.."
backend=cuda
build_dir=build-gpu
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend="$2"; shift 2 ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$backend" in cuda|sim) ;; *) echo "gpu_check: --backend is cuda or sim" >&2; exit 2 ;; esac

if [ "$build" = 1 ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPRISM_WITH_CUDA=ON \
        -DPRISM_BUILD_EXAMPLES=OFF >"$build_dir.configure.log" 2>&1 || { cat "$build_dir.configure.log"; exit 1; }
  cmake --build "$build_dir" -j "$(nproc)" || exit 1
fi
bin="$build_dir/bin"
# A bundle (bench/gpu_bundle.sh) brings the shared libraries a bare GPU machine lacks.
# Its lib/ comes first too: the programs' run paths name the folder they were built in.
if [ -d "$build_dir/deps" ]; then
  abs="$(cd "$build_dir" && pwd)"
  export LD_LIBRARY_PATH="$abs/lib:$abs/deps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
[ -x "$bin/gpu_benchmark" ] || { echo "gpu_check: no $bin/gpu_benchmark (build first)" >&2; exit 1; }

declare -a rows
status=0
run() {  # run NAME COMMAND...: records passed/failed
  local name="$1"; shift
  local log; log="$(mktemp)"
  if "$@" >"$log" 2>&1; then
    local count; count="$(grep -o '^\[==========\] [0-9]* tests\? from' "$log" | tail -1 | grep -o '[0-9][0-9]*' | head -1)"
    rows+=("$(printf '%-34s %s' "$name" "passed${count:+ ($count tests)}")")
  else
    rows+=("$(printf '%-34s %s' "$name" "FAILED")")
    tail -40 "$log"
    status=1
  fi
  cat "$log" >>"$build_dir/gpu_check.log"
  rm -f "$log"
}
: >"$build_dir/gpu_check.log"

if [ "$backend" = cuda ]; then
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no GPU here (nvidia-smi finds none); run with --backend sim to check the pipeline" >&2
    exit 1
  fi
  nvidia-smi -L
  "$bin/prism" topology || true
  # What ctest -L gpu runs, program by program (so a build carried to another path runs too).
  run "backend suite on cuda" timeout 180 "$bin/gpu_backend_test" --gtest_filter='*/cuda'
  run "GPU tasks and actors (e2e, cuda)" timeout 180 env PRISM_TEST_GPU_BACKEND=cuda "$bin/gpu_tasks_test"
  run "device objects (e2e, cuda)" timeout 180 env PRISM_TEST_GPU_BACKEND=cuda "$bin/device_objects_test"
  if [ -x "$bin/collectives_nccl_test" ]; then
    run "collectives: nccl, 1-rank group" timeout 180 "$bin/collectives_nccl_test" --gtest_filter='*OneRank*'
    run "collectives: typed suite on nccl" timeout 300 env PRISM_TEST_GPU_BACKEND=cuda "$bin/collectives_device_test"
  fi
  if [ -x "$bin/nccl_overhead" ]; then
    run "collectives: nccl per-call overhead" bash -c "timeout 120 '$bin/nccl_overhead' | tee '$build_dir/nccl_overhead.txt'"
  fi
  # These must run, not skip: "no CUDA device" means the cuda backend did not find the GPU.
  if grep -q "no CUDA device" "$build_dir/gpu_check.log"; then
    rows+=("$(printf '%-34s %s' "gpu tests skipped" "FAILED (the cuda backend saw no device)")")
    status=1
  fi
  # PyTorch tensors in and out through DLPack, where PyTorch is. A carried bundle has no binding
  # module for this machine's Python: it is compiled here from the bundle's headers.
  if python3 -c "import torch" 2>/dev/null; then
    pydir="$build_dir/python"
    ext="$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    if [ ! -f "$pydir/prism/_prism$ext" ] && [ -d "$build_dir/include" ]; then
      run "Python binding for $(python3 -V 2>&1)" c++ -O1 -shared -fPIC -fvisibility=hidden -std=c++20 \
        -DMSGPACK_DEFAULT_API_VERSION=3 -DMSGPACK_NO_BOOST -I core -I . -I core/include -I gpu/include \
        -I collectives/include -isystem "$build_dir/include" $(python3 -m pybind11 --includes) python/src/*.cc \
        -o "$pydir/prism/_prism$ext" -L"$build_dir/lib" -lprism -lprism_collective -L"$build_dir/deps" \
        -l:libprotobuf.so.32
    fi
    run "PyTorch tensors through DLPack" env PYTHONPATH="$pydir" timeout 180 python3 tests/gpu/torch_dlpack_check.py
    run "torch.distributed on a prism group" env PYTHONPATH="$pydir" timeout 180 python3 tests/gpu/torch_distributed_check.py
  fi
  export PRISM_GPU_BACKEND=sim PRISM_SIM_DEVICE_MEMORY=256M
  run "GPU scheduling and tasks (sim)" bash -c "'$bin/gpu_scheduling_test' && '$bin/gpu_tasks_test'"
  unset PRISM_GPU_BACKEND PRISM_SIM_DEVICE_MEMORY
else
  export PRISM_GPU_BACKEND=sim PRISM_SIM_DEVICE_MEMORY=256M
  run "backend suite on sim" "$bin/gpu_backend_test" --gtest_filter='*/sim'
  run "sim adversarial checks, topology" "$bin/gpu_test"
  run "placement on every profile" "$bin/base_test" --gtest_filter='*Placement*'
  run "GPU scheduling (e2e)" "$bin/gpu_scheduling_test"
  run "GPU tasks and actors (e2e)" "$bin/gpu_tasks_test"
fi
bench_log="$build_dir/gpu_benchmark.txt"
if PRISM_SIM_DEVICE_MEMORY=1G timeout 300 "$bin/gpu_benchmark" --backend "$backend" >"$bench_log" 2>&1; then
  rows+=("$(printf '%-34s %s' "gpu_benchmark --backend $backend" "ran (correctness checked)")")
else
  rows+=("$(printf '%-34s %s' "gpu_benchmark --backend $backend" "FAILED")")
  status=1
fi
cat "$bench_log"
echo
echo "## gpu_check ($backend) on $(hostname), $(date -u +%Y-%m-%d)"
printf '%-34s %s\n' "check" "result"
for r in "${rows[@]}"; do echo "$r"; done
grep -E "^64 MiB|^256 MiB|events are|consumer process|raw CUDA|PyTorch" "$bench_log" | sed 's/^/  /'
if [ -f "$build_dir/nccl_overhead.txt" ]; then grep -E "median overhead" "$build_dir/nccl_overhead.txt" | sed 's/^/  /'; fi
exit $status
