# Sourced by the scripts in tools/: picks the CUDA configuration for this machine.
# CUDA targets build (and link) whenever the toolkit is at /usr/local/cuda (or $CUDA_PATH);
# without it every CUDA target is skipped with --config=nocuda.
cuda_root="${CUDA_PATH:-/usr/local/cuda}"
if [[ -x "$cuda_root/bin/nvcc" ]]; then
  DSTRAIN_BAZEL_CONFIG=()
else
  DSTRAIN_BAZEL_CONFIG=(--config=nocuda)
fi
