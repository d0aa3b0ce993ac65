#!/usr/bin/env bash
# Checks the CUDA kernels on a machine with an NVIDIA GPU, in a few minutes (one H100: well under
# 5): builds with CUDA, runs every test tagged "gpu" with its output streamed, then runs
# kernel_bench, which times each kernel at GPT-2 124M shapes and compares it with a float64 CPU
# reference. The benchmark's table is the last thing printed.
#
#   tools/gpu_check.sh            # from anywhere in the checkout
#   tools/gpu_check.sh --quick    # 5 timed launches per kernel instead of 20
#
# Exit status: 0 when the build, every GPU test (none may skip: a skip here means the GPU was not
# usable) and every kernel check pass.
set -uo pipefail
cd "$(dirname "$0")/.."

bench_flags=()
if [[ "${1:-}" == "--quick" ]]; then bench_flags=(--quick); fi

tools/install_deps.sh || { echo "gpu_check: dependency installation failed"; exit 1; }
if [[ ! -x "${CUDA_PATH:-/usr/local/cuda}/bin/nvcc" ]]; then
  echo "gpu_check: no CUDA toolkit at ${CUDA_PATH:-/usr/local/cuda}"
  exit 1
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi

status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "=== build (CUDA) ==="
bazel build //kernels/cuda_common/bench:kernel_bench || { echo "gpu_check: build failed"; exit 1; }

echo "=== GPU tests ==="
# --build_tests_only: only the tests the filter keeps are built; streamed output runs them one
# at a time, which the GPU tests want anyway ("exclusive").
bazel test //... --test_tag_filters=gpu --build_tests_only --test_output=streamed \
  --test_summary=short 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}
# One line per test case ends in its time, "(N ms)"; gtest's summaries do not.
count() { grep -cE "^\[ *$1 *\] .*\([0-9]+ ms\)\$" "$log" || true; }
passed_tests=$(count OK)
failed_tests=$(count FAILED)
skipped=$(count SKIPPED)
if [[ $test_status -ne 0 ]]; then status=1; fi
if [[ $skipped -ne 0 ]]; then
  echo "gpu_check: $skipped GPU test cases skipped: no usable CUDA device?"
  status=1
fi

echo "GPU tests: ${passed_tests} passed, ${failed_tests} failed, ${skipped} skipped (bazel exit ${test_status})"
echo "=== kernel_bench ==="
bin="$(bazel info bazel-bin 2>/dev/null)/kernels/cuda_common/bench/kernel_bench"
"$bin" "${bench_flags[@]}" || status=1
exit $status
