// Float64 reference for gqa.h, written directly with the kv-head mapping (query head h reads kv
// head h / (NH / NKV)) on the fused (B, T, (NH + 2·NKV)·HS) layout: the textbook per-head loops,
// independent of kernels/attention.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Overwrites out (B, T, NH·HS) and all of att (B, NH, T, T) (0 above the diagonal).
void GqaForwardReference(double* out, double* att, const double* qkv, int B, int T, int NH, int NKV,
                         int HS);

// Overwrites dqkv (B, T, (NH + 2·NKV)·HS); att as GqaForwardReference left it.
void GqaBackwardReference(double* dqkv, const double* dout, const double* qkv, const double* att,
                          int B, int T, int NH, int NKV, int HS);

}  // namespace dstrain::kernels
