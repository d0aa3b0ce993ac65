// Float64 reference for rope.h ("rotate_half" pairing i ↔ i + D/2), on contiguous
// (B, T, n_heads, D) tensors, with the angles computed here in double from theta (independent of
// RopeTable):  θ_i = theta^(−2i/D), angle = (pos_offset + t)·θ_i.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Overwrites out.
void RopeForwardReference(double* out,        // (B, T, n_heads, D)
                          const double* inp,  // (B, T, n_heads, D)
                          int B, int T, int n_heads, int D, double theta, int pos_offset);

// Overwrites dinp with the gradient of Σ out·dout with respect to inp.
void RopeBackwardReference(double* dinp,        // (B, T, n_heads, D)
                           const double* dout,  // (B, T, n_heads, D)
                           int B, int T, int n_heads, int D, double theta, int pos_offset);

// The exact angle p·θ_i of the reference, for checking RopeTable.
double RopeAngleReference(int pos, int i, int D, double theta);

}  // namespace dstrain::kernels
