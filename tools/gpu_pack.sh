#!/usr/bin/env bash
# Packs the GPU checks for a machine that has a GPU but no Bazel and no Debian -dev packages (a
# lent, offline GPU box): builds every test tagged "gpu", kernel_bench, the `dstrain` CLI and the
# training benchmark here with CUDA, copies the binaries and the shared libraries they need (our
# own and Debian's, not glibc, not the CUDA toolkit's, not the driver's) into DIR with the GPU
# benchmark's scripts and the end-to-end checks (tests/integration/gpu/gpu_e2e.sh with the demo
# job and corpus), and writes DIR/run.sh, which runs them all there against that machine's CUDA
# runtime, cuBLAS and NCCL.
#
#   tools/gpu_pack.sh DIR        # here: build and pack (DIR is replaced; also DIR.tar.xz)
#   DIR/run.sh [--quick]         # there: every GPU test, the end-to-end checks, kernel_bench,
#                                # then bench/gpu (GPT-2 124M against the machine's PyTorch;
#                                # skipped with --quick)
#
# The CUDA libraries stay behind on purpose: cuBLAS and NCCL alone are ~1 GB, and a GPU machine
# has them (the toolkit's lib64, or the nvidia-* Python wheels next to PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 1 ]]; then
  echo "usage: tools/gpu_pack.sh DIR" >&2
  exit 2
fi
dest=$1

targets=$(bazel query 'attr(tags, "gpu", tests(//...))' 2>/dev/null)
tools="//kernels/cuda_common/bench:kernel_bench //client/cli:dstrain //bench/train_throughput:dstrain_bench"
bazel build $targets $tools
bin=$(bazel info bazel-bin 2>/dev/null)

rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib" "$dest/lib/fallback" "$dest/bench"
cp bench/gpu/gpu_bench.sh bench/gpu/torch_gpu_bench.py "$dest/bench/"
mkdir -p "$dest/e2e"
cp tests/integration/gpu/gpu_e2e.sh deploy/local/demo/shakespeare.json \
  deploy/local/demo/tinyshakespeare.txt "$dest/e2e/"
binaries=()
for t in $targets $tools; do
  path=${t#//}
  path=${path/://}
  cp "$bin/$path" "$dest/bin/"
  binaries+=("$bin/$path")
done

# Libraries the dynamic loader resolves here, minus those the GPU machine brings itself.
keep_out='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libcuda\.so|libnvidia|libcudart|libcublas|libnccl)'
for b in "${binaries[@]}"; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ $name =~ $keep_out ]]; then continue; fi
  # The C++ runtime is used from the GPU machine when it has one (any newer one serves us).
  if [[ $name =~ ^(libstdc\+\+|libgcc_s) ]]; then sub=fallback/; else sub=; fi
  cp -L "$path" "$dest/lib/$sub$name"
done

cat >"$dest/run.sh" <<'EOF'
#!/usr/bin/env bash
# Written by tools/gpu_pack.sh: runs the packed GPU tests and kernel_bench on this machine.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bench_flags=()
if [[ "${1:-}" == "--quick" ]]; then bench_flags=(--quick); fi

# The CUDA runtime, cuBLAS and NCCL: the toolkit's, else the nvidia-* wheels beside PyTorch.
cuda_dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null || true)
wheel_dirs=$(find /usr /opt /root -xdev -type d -path '*site-packages/nvidia/*/lib' 2>/dev/null | sort || true)
libpath=$here/lib
for d in $cuda_dirs $wheel_dirs; do libpath=$libpath:$d; done
for lib in libstdc++.so.6 libgcc_s.so.1; do
  ldconfig -p | grep -q "$lib " || { libpath=$libpath:$here/lib/fallback; break; }
done
export LD_LIBRARY_PATH=$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
  found=$(for d in ${libpath//:/ }; do [[ -e $d/$lib ]] && echo "$d/$lib"; done | head -1)
  echo "gpu run: $lib -> ${found:-MISSING}"
done
command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

export TEST_TMPDIR=${TMPDIR:-/tmp}/dstrain_gpu_tests
mkdir -p "$TEST_TMPDIR"
status=0 passed=0 failed=0 skipped=0 broken=()
for t in "$here"/bin/*_test; do
  name=$(basename "$t")
  echo "=== $name ==="
  log=$TEST_TMPDIR/$name.log
  timeout 150 "$t" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # One line per test case ends in its time, "(N ms)"; gtest's summaries do not.
  p=$(grep -cE '^\[ *OK *\] .*\([0-9]+ ms\)$' "$log" || true)
  f=$(grep -cE '^\[ *FAILED *\] .*\([0-9]+ ms\)$' "$log" || true)
  s=$(grep -cE '^\[ *SKIPPED *\] .*\([0-9]+ ms\)$' "$log" || true)
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
  if [[ $rc -ne 0 ]]; then status=1; broken+=("$name (exit $rc)"); fi
done
if [[ $skipped -ne 0 ]]; then
  echo "gpu run: $skipped GPU test cases skipped: no usable CUDA device?"
  status=1
fi
echo "GPU tests: $passed passed, $failed failed, $skipped skipped${broken:+; failing binaries: ${broken[*]}}"
echo "=== end to end: training on this GPU against the CPU (tests/integration/gpu) ==="
"$here/e2e/gpu_e2e.sh" "$here/bin/dstrain" "$here/bin/dstrain" "$here/e2e/tinyshakespeare.txt" \
  "$here/e2e/shakespeare.json" || status=1
echo "=== kernel_bench ==="
"$here/bin/kernel_bench" "${bench_flags[@]}" || status=1
if [[ "${1:-}" != "--quick" ]]; then
  echo "=== bench/gpu: GPT-2 124M, dstrain against PyTorch ==="
  "$here/bench/gpu_bench.sh" "${GPU_BENCH_ROUNDS:-1}" "$here/bin/dstrain_bench" || status=1
fi
exit $status
EOF
chmod +x "$dest/run.sh"
# Symbols are not needed there; without them, and compressed, the pack fits what a device call
# carries (tens of MB): DIR.tar.xz unpacks to DIR.
strip --strip-unneeded "$dest"/bin/* "$dest"/lib/*.so* "$dest"/lib/fallback/* 2>/dev/null || true
tar -C "$(dirname "$dest")" -cJf "$dest.tar.xz" "$(basename "$dest")"
du -sh "$dest" "$dest.tar.xz"
