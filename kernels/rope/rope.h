// Rotary position embeddings (RoPE, Su et al. 2021) in the Llama convention of Hugging Face's
// LlamaRotaryEmbedding / apply_rotary_pos_emb, "rotate_half": within each head of head_dim = D
// values, dimension i is paired with dimension i + D/2 (NOT with i + 1 as in the paper and
// Meta's reference code, which interleave the pairs; the two differ by a fixed permutation of the
// q/k projection rows, so checkpoints converted for Hugging Face use this one). For a token at
// position p and 0 <= i < D/2:
//   θ_i = theta^(−2i/D)                        (theta = rope_theta: 10000 for Llama 1/2, 5e5 for 3)
//   out[i]       = x[i]·cos(p·θ_i) − x[i + D/2]·sin(p·θ_i)
//   out[i + D/2] = x[i + D/2]·cos(p·θ_i) + x[i]·sin(p·θ_i)
// i.e. out = x·cos + rotate_half(x)·sin with rotate_half(x) = [−x[D/2:], x[:D/2]]. Positions are
// pos_offset + t for t = 0 .. T−1 (pos_offset = 0 in training; a KV cache would pass the number
// of tokens already seen). No scaling variants (Llama 3.1's "rope_scaling" is not implemented).
//
// Backward: the rotation is orthogonal, so the gradient is the inverse rotation (angle −p·θ_i):
//   dinp[i] = dout[i]·cos + dout[i + D/2]·sin,   dinp[i + D/2] = dout[i + D/2]·cos − dout[i]·sin.
//
// cos/sin table: computed once per (max_pos, D, theta) by RopeTable, in float64 (θ_i by pow, the
// angle p·θ_i and its cos and sin all in double) and rounded once to fp32, so every entry is within
// 0.5 ulp of the exact value (≤ 2^-25 ≈ 3e-8 absolute; rope_test checks it). Computing the angle
// in fp32, as Hugging Face does (inv_freq and p·inv_freq in fp32), costs up to ~p·2^-24 radians:
// rope_test records cos errors of 3e-4 .. 6e-4 for p < 8192 that way, thousands of times
// more than all the other rounding of this kernel. So the kernels match HF's math, not its
// rounding of the angles. Row p of the table holds D floats: the D/2 cosines, then the D/2 sines.
// Measured rotation error vs float64 (rope_test, |x| < 1, p < 4096, every ISA): ≤ 1.4e-7
// absolute.
//
// Layout: q (B, T, NH, D) and k (B, T, NKV, D) as the attention kernels keep them inside the
// fused qkv projection — head h of token (b, t) at (b·T + t)·stride + h·D, stride = 3C for
// kernels/attention's (B, T, 3C), (NH + 2·NKV)·D for kernels/gqa's fused layout. Each call rotates
// the first n_heads·D floats of every token row; since the k heads follow the q heads, one call
// with n_heads = NH + NKV rotates q and k together, leaving v alone. out may alias inp exactly
// (same pointer and stride), so in place on the qkv buffer works.
//
// Precision: fp32 (rmsnorm.h, "Precision"). Contracts: both functions OVERWRITE their output's
// n_heads·D leading floats per row; nothing else in a row is read or written. Element-wise, rows
// split across threads: bitwise identical for any thread count.
// REQUIRES (checked, abort): D even and > 0, 0 <= pos_offset, pos_offset + T <= max_pos, strides
// >= n_heads·D.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Floats of a table for positions [0, max_pos): max_pos·head_dim.
int64_t RopeTableFloats(int max_pos, int head_dim);

// Fills table (RopeTableFloats(max_pos, head_dim)) as described above.
void RopeTable(float* table, int max_pos, int head_dim, double theta);

void RopeForward(float* out,  // (B, T, n_heads, head_dim) in rows of out_stride floats
                 int64_t out_stride,
                 const float* inp,  // (B, T, n_heads, head_dim) in rows of inp_stride floats
                 int64_t inp_stride,
                 const float* table,  // from RopeTable(table, max_pos, head_dim, theta)
                 int max_pos, int B, int T, int n_heads, int head_dim, int pos_offset);

// The gradient with respect to RopeForward's input: dinp overwritten.
void RopeBackward(float* dinp,  // (B, T, n_heads, head_dim) in rows of dinp_stride floats
                  int64_t dinp_stride,
                  const float* dout,  // (B, T, n_heads, head_dim) in rows of dout_stride floats
                  int64_t dout_stride, const float* table, int max_pos, int B, int T, int n_heads,
                  int head_dim, int pos_offset);

}  // namespace dstrain::kernels
