"""Compiler flags shared by the CPU kernel libraries."""

# -fopenmp must be on each kernel's own compile line: Bazel does not propagate copts from
# @system//:openmp to dependents (it propagates only its linkopts), and without the flag the
# `#pragma omp` lines compile silently to serial code.
#
# -ffp-contract=off: GCC fuses a*b + c into an FMA by default in C++ (even with -std=c++17), where
# the target has FMA. The kernels spell out every fused multiply-add (MulAdd in simd.h), so the
# rounding is decided by the source, identical on every compiler, and matches references such as
# PyTorch's AdamW to the ulp.
KERNEL_COPTS = [
    "-fopenmp",
    "-ffp-contract=off",
]
