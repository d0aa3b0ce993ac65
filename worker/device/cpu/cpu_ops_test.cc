// CpuOps is a dispatcher: each test runs an operation through it and the kernel it should pick
// directly, and wants the same bits (the kernels' own tests hold them to float64 references).
// Then the argument checks and the sticky error every backend shares.
#include "worker/device/cpu/cpu_ops.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/adamw/adamw.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_bf16.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/crossentropy/crossentropy.h"
#include "kernels/encoder/encoder.h"
#include "kernels/gelu/gelu.h"
#include "kernels/gqa/gqa_reference.h"
#include "kernels/layernorm/layernorm.h"
#include "kernels/matmul/matmul.h"
#include "kernels/residual/residual.h"
#include "kernels/rmsnorm/rmsnorm_reference.h"
#include "kernels/rope/rope_reference.h"
#include "kernels/swiglu/swiglu_reference.h"

namespace dstrain::device {
namespace {

namespace k = ::dstrain::kernels;
using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> x(n);
  for (float& v : x) v = u(rng);
  return x;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  k::FloatToHalf(DType::kBF16, h.data(), x.data(), static_cast<int64_t>(x.size()));
  return h;
}

View F(std::vector<float>& x, tensor::Shape shape) { return View(x.data(), DType::kF32, shape); }
View H(std::vector<uint16_t>& x, tensor::Shape shape, DType t = DType::kBF16) {
  return View(x.data(), t, shape);
}
View I(std::vector<int32_t>& x, tensor::Shape shape) { return View(x.data(), DType::kI32, shape); }

bool Same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class CpuOpsTest : public ::testing::Test {
 protected:
  tensor::CpuAllocator alloc_;
  CpuOps ops_{&alloc_};
};

TEST_F(CpuOpsTest, DescribesItselfOnTheCpu) {
  EXPECT_TRUE(ops_.device().is_cpu());
  EXPECT_TRUE(ops_.host_accessible());
  EXPECT_EQ(ops_.NativeStream(Stream::kComm), nullptr);
  EXPECT_THAT(ops_.Describe(), HasSubstr("cpu ("));
}

TEST_F(CpuOpsTest, LinearPicksTheKernelForEachWeightTypeAndPrecision) {
  const int64_t M = 6, K = 20, N = 12;
  auto inp = Random(M * K, 1), w = Random(N * K, 2), b = Random(N, 3), dout = Random(M * N, 4);
  auto w16 = ToBf16(w);
  for (int mode = 0; mode < 3; ++mode) {  // f32, bf16 compute on f32 weights, bf16 weights
    SCOPED_TRACE(mode);
    const LinearOptions o{mode == 0 ? DType::kF32 : DType::kBF16};
    const View wv = mode == 2 ? H(w16, {N, K}) : F(w, {N, K});
    std::vector<float> out(M * N), want(M * N);
    ops_.LinearForward(F(out, {M, N}), F(inp, {M, K}), wv, F(b, {N}), o);
    if (mode == 0) k::MatmulForward(want.data(), inp.data(), w.data(), b.data(), M, K, N);
    if (mode == 1) k::MatmulForwardBf16(want.data(), inp.data(), w.data(), b.data(), M, K, N);
    if (mode == 2) k::MatmulForwardBf16(want.data(), inp.data(), w16.data(), b.data(), M, K, N);
    EXPECT_TRUE(Same(out, want));
    std::vector<float> dinp(M * K), dw(N * K, 0.5f), db(N, 0.25f);
    std::vector<float> wdinp(M * K), wdw(N * K, 0.5f), wdb(N, 0.25f);
    ops_.LinearBackward(F(dinp, {M, K}), F(dw, {N, K}), F(db, {N}), F(dout, {M, N}), F(inp, {M, K}),
                        wv, o);
    if (mode == 0) {
      k::MatmulBackward(wdinp.data(), wdw.data(), wdb.data(), dout.data(), inp.data(), w.data(), M,
                        K, N);
    } else if (mode == 1) {
      k::MatmulBackwardBf16(wdinp.data(), wdw.data(), wdb.data(), dout.data(), inp.data(), w.data(),
                            M, K, N);
    } else {
      k::MatmulBackwardBf16(wdinp.data(), wdw.data(), wdb.data(), dout.data(), inp.data(),
                            w16.data(), M, K, N);
    }
    EXPECT_TRUE(Same(dinp, wdinp));
    EXPECT_TRUE(Same(dw, wdw));
    EXPECT_TRUE(Same(db, wdb));
  }
  EXPECT_THAT(ops_.status(), IsOk());
}

TEST_F(CpuOpsTest, LinearFusesGeluAndOverwritesFreshGradients) {
  const int64_t M = 5, K = 8, N = 16;
  auto inp = Random(M * K, 5), w = Random(N * K, 6), b = Random(N, 7), dout = Random(M * N, 8);
  std::vector<float> out(M * N), pre(M * N), want_pre(M * N), want(M * N);
  ops_.LinearForward(F(out, {M, N}), F(inp, {M, K}), F(w, {N, K}), F(b, {N}),
                     LinearOptions{DType::kF32, F(pre, {M, N})});
  k::MatmulForward(want_pre.data(), inp.data(), w.data(), b.data(), M, K, N);
  k::GeluForward(want.data(), want_pre.data(), M * N);
  EXPECT_TRUE(Same(pre, want_pre));
  EXPECT_TRUE(Same(out, want));

  // Backward of a layer whose input was gelu(pre_in): dinp is with respect to pre_in. A fresh
  // dweight full of garbage (NaN) is overwritten, neither added to nor read.
  auto pre_in = Random(M * K, 9);
  std::vector<float> dinp(M * K), dw(N * K, NAN), wdinp(M * K), wdw(N * K, 0.f);
  LinearOptions o;
  o.input_gelu = F(pre_in, {M, K});
  o.overwrite_dweight = true;
  ops_.LinearBackward(F(dinp, {M, K}), F(dw, {N, K}), View(), F(dout, {M, N}), F(inp, {M, K}),
                      F(w, {N, K}), o);
  k::MatmulBackward(wdinp.data(), wdw.data(), nullptr, dout.data(), inp.data(), w.data(), M, K, N);
  k::GeluBackward(wdinp.data(), pre_in.data(), wdinp.data(), M * K);
  EXPECT_TRUE(Same(dinp, wdinp));
  EXPECT_TRUE(Same(dw, wdw));
  EXPECT_THAT(ops_.status(), IsOk());
}

// The activations only bf16 products read may be kept in bf16: the producers (LayerNorm,
// attention, the GELU after a linear layer) write the bits of their fp32 results rounded, and
// the linear layers given them in bf16 compute what the fp32 values would give. Refused where
// the products are fp32, and a bf16 out of a linear layer without GELU.
TEST_F(CpuOpsTest, Bf16ActivationsAreTheFp32OnesRounded) {
  ASSERT_TRUE(ops_.bf16_matmul_inputs());
  const int B = 2, T = 7, C = 16, NH = 2, N = 24;
  const int64_t BT = B * T;
  auto x = Random(BT * C, 20), lw = Random(C, 21), lb = Random(C, 22), qkv = Random(BT * 3 * C, 23);
  std::vector<float> ln(BT * C), mean(BT), rstd(BT), mean16(BT), rstd16(BT);
  std::vector<uint16_t> ln16(BT * C);
  ops_.LayerNormForward(F(ln, {B, T, C}), F(mean, {B, T}), F(rstd, {B, T}), F(x, {B, T, C}),
                        F(lw, {C}), F(lb, {C}));
  ops_.LayerNormForward(H(ln16, {B, T, C}), F(mean16, {B, T}), F(rstd16, {B, T}), F(x, {B, T, C}),
                        F(lw, {C}), F(lb, {C}));
  EXPECT_EQ(ln16, ToBf16(ln));
  EXPECT_TRUE(Same(mean16, mean) && Same(rstd16, rstd));

  const int64_t state = ops_.AttentionStateElements(B, T, C, NH);
  std::vector<float> att(BT * C), st(state), st16(state);
  std::vector<uint16_t> att16(BT * C);
  ops_.AttentionForward(F(att, {B, T, C}), F(st, {state}), F(qkv, {B, T, 3 * C}), NH);
  ops_.AttentionForward(H(att16, {B, T, C}), F(st16, {state}), F(qkv, {B, T, 3 * C}), NH);
  EXPECT_EQ(att16, ToBf16(att));
  EXPECT_TRUE(Same(st16, st));

  // The Llama's producers: RMSNorm, grouped-query attention (4 query heads over 2) and SwiGLU.
  std::vector<float> rms(BT * C), r(BT), r16(BT);
  std::vector<uint16_t> rms16(BT * C);
  ops_.RmsNormForward(F(rms, {B, T, C}), F(r, {BT}), F(x, {B, T, C}), F(lw, {C}), 1e-5f);
  ops_.RmsNormForward(H(rms16, {B, T, C}), F(r16, {BT}), F(x, {B, T, C}), F(lw, {C}), 1e-5f);
  EXPECT_EQ(rms16, ToBf16(rms));
  EXPECT_TRUE(Same(r16, r));
  const int GH = 4, GKV = 2, HS = C / GH;
  auto gqkv = Random(BT * (GH + 2 * GKV) * HS, 27);
  const int64_t gstate = ops_.GqaStateElements(B, T, GH, GKV, HS);
  const int64_t gscratch = ops_.GqaScratchElements(B, T, GH, GKV, HS);
  std::vector<float> gout(BT * C), gst(gstate), gst16(gstate), gs(std::max<int64_t>(gscratch, 1));
  std::vector<uint16_t> gout16(BT * C);
  const View gqkv_v = F(gqkv, {B, T, (GH + 2 * GKV) * HS});
  const View scratch_v = gscratch > 0 ? F(gs, {gscratch}) : View();
  ops_.GqaAttentionForward(F(gout, {B, T, C}), F(gst, {gstate}), scratch_v, gqkv_v, GH, GKV);
  ops_.GqaAttentionForward(H(gout16, {B, T, C}), F(gst16, {gstate}), scratch_v, gqkv_v, GH, GKV);
  EXPECT_EQ(gout16, ToBf16(gout));
  EXPECT_TRUE(Same(gst16, gst));
  auto gu = Random(BT * 2 * N, 28, 4.f);
  std::vector<float> sw(BT * N);
  std::vector<uint16_t> sw16(BT * N);
  ops_.SwigluForward(F(sw, {BT, N}), F(gu, {BT, 2 * N}));
  ops_.SwigluForward(H(sw16, {BT, N}), F(gu, {BT, 2 * N}));
  EXPECT_EQ(sw16, ToBf16(sw));

  // fc with GELU from the bf16 LayerNorm output, and from its fp32 values with bf16 products.
  auto w = Random(N * C, 24), b = Random(N, 25), dout = Random(BT * N, 26);
  auto w16 = ToBf16(w);
  std::vector<float> ln_rounded(BT * C);
  k::HalfToFloat(DType::kBF16, ln_rounded.data(), ln16.data(), BT * C);
  for (bool weight16 : {false, true}) {
    SCOPED_TRACE(weight16 ? "bf16 weight" : "fp32 weight");
    const View wv = weight16 ? H(w16, {N, C}) : F(w, {N, C});
    const LinearOptions bf16{DType::kBF16};
    std::vector<float> pre(BT * N), gelu(BT * N), pre16(BT * N);
    std::vector<uint16_t> gelu16(BT * N);
    ops_.LinearForward(F(gelu, {BT, N}), F(ln_rounded, {BT, C}), wv, F(b, {N}),
                       LinearOptions{DType::kBF16, F(pre, {BT, N})});
    ops_.LinearForward(H(gelu16, {BT, N}), H(ln16, {BT, C}), wv, F(b, {N}),
                       LinearOptions{DType::kBF16, F(pre16, {BT, N})});
    EXPECT_TRUE(Same(pre16, pre));
    EXPECT_EQ(gelu16, ToBf16(gelu));
    std::vector<float> dinp(BT * C), dw(N * C, 0.5f), db(N), dinp16(BT * C), dw16(N * C, 0.5f),
        db16(N);
    ops_.LinearBackward(F(dinp, {BT, C}), F(dw, {N, C}), F(db, {N}), F(dout, {BT, N}),
                        F(ln_rounded, {BT, C}), wv, bf16);
    ops_.LinearBackward(F(dinp16, {BT, C}), F(dw16, {N, C}), F(db16, {N}), F(dout, {BT, N}),
                        H(ln16, {BT, C}), wv, bf16);
    EXPECT_TRUE(Same(dinp16, dinp) && Same(dw16, dw) && Same(db16, db));
  }
  EXPECT_THAT(ops_.status(), IsOk());
  {
    CpuOps ops(&alloc_);
    std::vector<float> out(BT * N);
    ops.LinearForward(F(out, {BT, N}), H(ln16, {BT, C}), F(w, {N, C}), View(), {});
    EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("inp is bf16 but the products are fp32")));
  }
  {
    CpuOps ops(&alloc_);
    std::vector<uint16_t> out16(BT * N);
    ops.LinearForward(H(out16, {BT, N}), H(ln16, {BT, C}), F(w, {N, C}), View(),
                      LinearOptions{DType::kBF16});
    EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("out may be bf16 only after GELU")));
  }
  {
    CpuOps ops(&alloc_);
    auto y = x;  // a bf16 RMSNorm output written over its own fp32 input
    ops.RmsNormForward(View(y.data(), DType::kBF16, {B, T, C}), View(), F(y, {B, T, C}), F(lw, {C}),
                       1e-5f);
    EXPECT_THAT(ops.status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a bf16 out overlaps inp")));
  }
}

TEST_F(CpuOpsTest, LayersMatchTheirKernels) {
  const int B = 2, T = 8, C = 16, NH = 4, V = 30, Vp = 32, maxT = 10;
  const int64_t BT = B * T;
  std::vector<int32_t> tokens(BT);
  for (int64_t i = 0; i < BT; ++i) tokens[i] = static_cast<int32_t>((i * 7) % V);
  auto wte = Random(Vp * C, 10), wpe = Random(maxT * C, 11);
  auto wte16 = ToBf16(wte);
  std::vector<float> enc(BT * C), want(BT * C);
  ops_.EncoderForward(F(enc, {B, T, C}), I(tokens, {B, T}), H(wte16, {Vp, C}), F(wpe, {maxT, C}));
  k::EncoderForwardBf16(want.data(), tokens.data(), wte16.data(), wpe.data(), B, T, C);
  EXPECT_TRUE(Same(enc, want));

  auto lw = Random(C, 12), lb = Random(C, 13);
  std::vector<float> ln(BT * C), mean(BT), rstd(BT), wln(BT * C), wmean(BT), wrstd(BT);
  ops_.LayerNormForward(F(ln, {B, T, C}), F(mean, {B, T}), F(rstd, {B, T}), F(enc, {B, T, C}),
                        F(lw, {C}), F(lb, {C}));
  k::LayerNormForward(wln.data(), wmean.data(), wrstd.data(), enc.data(), lw.data(), lb.data(), BT,
                      C);
  EXPECT_TRUE(Same(ln, wln) && Same(mean, wmean) && Same(rstd, wrstd));

  auto qkv = Random(BT * 3 * C, 14), dout = Random(BT * C, 15);
  std::vector<float> att(ops_.AttentionStateElements(B, T, C, NH)), watt(att.size());
  std::vector<float> out(BT * C), wout(BT * C);
  ops_.AttentionForward(F(out, {B, T, C}), F(att, {static_cast<int64_t>(att.size())}),
                        F(qkv, {B, T, 3 * C}), NH);
  k::AttentionForward(wout.data(), watt.data(), qkv.data(), B, T, C, NH);
  EXPECT_TRUE(Same(out, wout));
  std::vector<float> scratch(ops_.AttentionScratchElements(B, T, C, NH));
  std::vector<float> dqkv(BT * 3 * C), wdqkv(BT * 3 * C);
  ops_.AttentionBackward(F(dqkv, {B, T, 3 * C}), F(scratch, {static_cast<int64_t>(scratch.size())}),
                         F(dout, {B, T, C}), F(qkv, {B, T, 3 * C}),
                         F(att, {static_cast<int64_t>(att.size())}), NH);
  k::AttentionBackward(wdqkv.data(), scratch.data(), dout.data(), qkv.data(), watt.data(), B, T, C,
                       NH);
  EXPECT_TRUE(Same(dqkv, wdqkv));

  auto logits = Random(BT * Vp, 16, 3.f);
  auto wlogits = logits;
  std::vector<float> losses(BT), wlosses(BT);
  ops_.CrossEntropy(F(losses, {BT}), F(logits, {BT, Vp}), I(tokens, {BT}), V, 0.5f);
  k::CrossEntropyForwardBackward(wlosses.data(), wlogits.data(), tokens.data(), BT, V, Vp, 0.5f);
  EXPECT_TRUE(Same(losses, wlosses) && Same(logits, wlogits));
  ASSERT_OK_AND_ASSIGN(const double mean_loss, ops_.MeanLoss(F(losses, {BT})));
  EXPECT_EQ(mean_loss, k::MeanLoss(wlosses.data(), BT));
  EXPECT_THAT(ops_.status(), IsOk());
}

// Under bf16 products attention takes the AMX route where AMX is usable, in both passes and for
// both output types; under f32 products, and on machines without AMX, the f32 kernels.
TEST_F(CpuOpsTest, AttentionProductsFollowTheModelsPrecisionWhereAmxRuns) {
  const int B = 2, T = 40, C = 64, NH = 2;
  const int64_t BT = B * T;
  auto qkv = Random(BT * 3 * C, 30), dout = Random(BT * C, 31);
  const int64_t state = ops_.AttentionStateElements(B, T, C, NH);
  const int64_t scratch_size = ops_.AttentionScratchElements(B, T, C, NH);
  ASSERT_GE(scratch_size, k::AttentionBackwardScratchFloats(B, T, C, NH));
  if (k::AmxUsable()) {
    ASSERT_GE(scratch_size, k::AttentionBackwardBf16ScratchFloats(B, T, C, NH));
  }
  for (DType products : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(products));
    const bool amx = products == DType::kBF16 && k::AmxUsable();
    std::vector<float> out(BT * C), st(state), want(BT * C), want_st(state);
    std::vector<uint16_t> out16(BT * C), want16(BT * C);
    ops_.AttentionForward(F(out, {B, T, C}), F(st, {state}), F(qkv, {B, T, 3 * C}), NH, products);
    ops_.AttentionForward(H(out16, {B, T, C}), F(st, {state}), F(qkv, {B, T, 3 * C}), NH, products);
    if (amx) {
      k::AttentionForwardBf16(want.data(), want_st.data(), qkv.data(), B, T, C, NH,
                              k::TileRoute::kAmx);
      k::AttentionForwardBf16(want16.data(), want_st.data(), qkv.data(), B, T, C, NH,
                              k::TileRoute::kAmx);
    } else {
      k::AttentionForward(want.data(), want_st.data(), qkv.data(), B, T, C, NH);
      k::AttentionForward(want16.data(), want_st.data(), qkv.data(), B, T, C, NH);
    }
    EXPECT_TRUE(Same(out, want));
    EXPECT_EQ(out16, want16);
    EXPECT_TRUE(Same(st, want_st));
    std::vector<float> scratch(scratch_size), dqkv(BT * 3 * C), want_dqkv(BT * 3 * C);
    ops_.AttentionBackward(F(dqkv, {B, T, 3 * C}), F(scratch, {scratch_size}), F(dout, {B, T, C}),
                           F(qkv, {B, T, 3 * C}), F(st, {state}), NH, products);
    if (amx) {
      k::AttentionBackwardBf16(want_dqkv.data(), scratch.data(), dout.data(), qkv.data(),
                               want_st.data(), B, T, C, NH, k::TileRoute::kAmx);
    } else {
      k::AttentionBackward(want_dqkv.data(), scratch.data(), dout.data(), qkv.data(),
                           want_st.data(), B, T, C, NH);
    }
    EXPECT_TRUE(Same(dqkv, want_dqkv));
  }
  EXPECT_THAT(ops_.status(), IsOk());
  // Only f32 and bf16 name a product precision.
  CpuOps ops(&alloc_);
  std::vector<float> out(BT * C), st(state);
  ops.AttentionForward(F(out, {B, T, C}), F(st, {state}), F(qkv, {B, T, 3 * C}), NH, DType::kF16);
  EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("products must be f32 or bf16")));
}

TEST_F(CpuOpsTest, ElementwiseAcrossDtypes) {
  const int64_t n = 100;
  auto x = Random(n, 20), acc = Random(n, 21);
  auto acc16 = ToBf16(acc), x16 = ToBf16(x);
  // acc16 += x (f32) and acc16 += x16: one rounding into bf16 either way.
  auto want16 = acc16;
  k::AccumulateIntoHalf(DType::kBF16, want16.data(), x.data(), n);
  ops_.AddInto(H(acc16, {n}), F(x, {n}));
  EXPECT_EQ(acc16, want16);
  std::vector<float> wide(n);
  k::HalfToFloat(DType::kBF16, wide.data(), x16.data(), n);
  k::AccumulateIntoHalf(DType::kBF16, want16.data(), wide.data(), n);
  ops_.AddInto(H(acc16, {n}), H(x16, {n}));
  EXPECT_EQ(acc16, want16);

  std::vector<uint16_t> f16(n);
  ops_.Convert(H(f16, {n}, DType::kF16), F(x, {n}));
  std::vector<uint16_t> wf16(n);
  k::FloatToHalf(DType::kF16, wf16.data(), x.data(), n);
  EXPECT_EQ(f16, wf16);
  ops_.Fill(H(f16, {n}, DType::kF16), 1.f);
  EXPECT_EQ(f16[n - 1], 0x3C00);  // 1.0 in binary16
  ops_.Scale(F(x, {n}), 0.5);
  EXPECT_EQ(x[3], Random(n, 20)[3] * 0.5f);

  ASSERT_OK_AND_ASSIGN(const double ss, ops_.SumSquares({F(acc, {n}), H(x16, {n})}));
  EXPECT_EQ(ss, k::SumSquares(acc.data(), n) + k::SumSquaresHalf(DType::kBF16, x16.data(), n));
}

TEST_F(CpuOpsTest, AdamWPlainAndMixed) {
  const int64_t n = 64;
  AdamWArgs args;
  args.lr = 1e-2;
  args.weight_decay = 0.1;
  auto p = Random(n, 30), g = Random(n, 31), m = Random(n, 32, 0.1f), v = Random(n, 33, 0.1f);
  for (float& x : v) x = std::abs(x);
  auto wp = p, wm = m, wv = v;
  ops_.AdamW({F(p, {n}), F(g, {n}), F(m, {n}), F(v, {n}), View()}, args);
  k::AdamWUpdate(wp.data(), g.data(), wm.data(), wv.data(), n, args);
  EXPECT_TRUE(Same(p, wp) && Same(m, wm) && Same(v, wv));

  auto g16 = ToBf16(g);
  std::vector<uint16_t> p16(n), wp16(n);
  ops_.AdamW({F(p, {n}), H(g16, {n}), F(m, {n}), F(v, {n}), H(p16, {n})}, args);
  k::AdamWUpdateMixed(wp.data(), g16.data(), wm.data(), wv.data(), wp16.data(), n, args,
                      DType::kBF16);
  EXPECT_TRUE(Same(p, wp));
  EXPECT_EQ(p16, wp16);

  // fp32-accumulated gradients (data_types.grad_accum_dtype "fp32") under bf16: gradients that
  // bf16 holds exactly, given as f32, take bitwise the mixed kernel's step.
  std::vector<float> g_wide(n);
  k::HalfToFloat(DType::kBF16, g_wide.data(), g16.data(), n);
  ops_.AdamW({F(p, {n}), F(g_wide, {n}), F(m, {n}), F(v, {n}), H(p16, {n})}, args);
  k::AdamWUpdateMixed(wp.data(), g16.data(), wm.data(), wv.data(), wp16.data(), n, args,
                      DType::kBF16);
  EXPECT_TRUE(Same(p, wp) && Same(m, wm) && Same(v, wv));
  EXPECT_EQ(p16, wp16);
  EXPECT_THAT(ops_.status(), IsOk());
}

std::vector<double> Wide(const std::vector<float>& x) { return {x.begin(), x.end()}; }

// Largest |got - want| / (abs + rel·|want|); <= 1 means within tolerance.
double Excess(const std::vector<float>& got, const std::vector<double>& want, double abs,
              double rel) {
  double worst = got.size() == want.size() ? 0 : 1e9;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double e = std::fabs(got[i] - want[i]) / (abs + rel * std::fabs(want[i]));
    if (!(e <= worst)) worst = std::isnan(e) ? 1e9 : e;
  }
  return worst;
}

// The Llama layers through Ops against the kernels' float64 references (kernels/*_reference.h).
// Inputs are O(1), so fp32 results sit within a few ulps of them: 1e-5 relative with a 1e-6
// floor (1e-5 for the attention backward's T-long sums of products) leaves room for sums
// of up to C terms without hiding a wrong formula, whose errors are O(1).
TEST_F(CpuOpsTest, LlamaLayersMatchTheFloat64References) {
  {  // RMSNorm: out and rstd overwritten, dinp and dweight accumulated.
    const int64_t N = 6, C = 20;
    auto x = Random(N * C, 30), w = Random(C, 31), dout = Random(N * C, 32);
    auto dinp = Random(N * C, 33), dw = Random(C, 34);
    std::vector<float> out(N * C), rstd(N);
    ops_.RmsNormForward(F(out, {N, C}), F(rstd, {N}), F(x, {N, C}), F(w, {C}), 1e-5f);
    std::vector<double> rout(N * C), rrstd(N), rdinp(N * C), rdw(C);
    const auto xd = Wide(x), wd = Wide(w), dd = Wide(dout);
    k::RmsNormForwardReference(rout.data(), rrstd.data(), xd.data(), wd.data(), N, C, 1e-5);
    k::RmsNormBackwardReference(rdinp.data(), rdw.data(), dd.data(), xd.data(), wd.data(),
                                rrstd.data(), N, C);
    EXPECT_LE(Excess(out, rout, 1e-6, 1e-5), 1);
    EXPECT_LE(Excess(rstd, rrstd, 0, 1e-5), 1);
    std::vector<double> want_dinp(N * C), want_dw(C);
    for (int64_t i = 0; i < N * C; ++i) want_dinp[i] = dinp[i] + rdinp[i];
    for (int64_t i = 0; i < C; ++i) want_dw[i] = dw[i] + rdw[i];
    ops_.RmsNormBackward(F(dinp, {N, C}), F(dw, {C}), F(dout, {N, C}), F(x, {N, C}), F(w, {C}),
                         F(rstd, {N}));
    EXPECT_LE(Excess(dinp, want_dinp, 1e-6, 1e-5), 1);
    EXPECT_LE(Excess(dw, want_dw, 1e-6, 1e-5), 1);
  }
  {  // RoPE in place on a fused GQA qkv: q and k rotated in one call, v untouched.
    const int B = 2, T = 5, NH = 4, NKV = 2, D = 8, maxT = 7;
    const int64_t W = (NH + 2 * NKV) * D, rot = (NH + NKV) * D;
    const double theta = 500.0;
    std::vector<float> table(maxT * D);
    ops_.RopeTable(F(table, {maxT, D}), theta);
    auto qkv = Random(B * T * W, 35);
    const auto before = qkv;
    ops_.RopeForward(F(qkv, {B, T, W}), F(qkv, {B, T, W}), F(table, {maxT, D}), NH + NKV);
    std::vector<double> packed(B * T * rot), want(B * T * rot);
    for (int64_t r = 0; r < B * T; ++r) {
      for (int64_t c = 0; c < rot; ++c) packed[r * rot + c] = before[r * W + c];
    }
    k::RopeForwardReference(want.data(), packed.data(), B, T, NH + NKV, D, theta, 0);
    std::vector<float> got(B * T * rot);
    for (int64_t r = 0; r < B * T; ++r) {
      for (int64_t c = 0; c < rot; ++c) got[r * rot + c] = qkv[r * W + c];
      for (int64_t c = rot; c < W; ++c) EXPECT_EQ(qkv[r * W + c], before[r * W + c]);
    }
    EXPECT_LE(Excess(got, want, 1e-6, 1e-6), 1);
    // Backward with a position offset: the inverse rotation, into a separate buffer.
    auto dout = Random(B * T * W, 36);
    std::vector<float> dinp(B * T * W, 0.f);
    ops_.RopeBackward(F(dinp, {B, T, W}), F(dout, {B, T, W}), F(table, {maxT, D}), NH + NKV, 2);
    for (int64_t r = 0; r < B * T; ++r) {
      for (int64_t c = 0; c < rot; ++c) packed[r * rot + c] = dout[r * W + c];
    }
    k::RopeBackwardReference(want.data(), packed.data(), B, T, NH + NKV, D, theta, 2);
    for (int64_t r = 0; r < B * T; ++r) {
      for (int64_t c = 0; c < rot; ++c) got[r * rot + c] = dinp[r * W + c];
    }
    EXPECT_LE(Excess(got, want, 1e-6, 1e-6), 1);
  }
  {  // SwiGLU on [gate | up]; the backward in place on the pre-activations.
    const int64_t N = 5, I = 12;
    auto inp = Random(N * 2 * I, 37, 4.f), dout = Random(N * I, 38);
    std::vector<float> out(N * I);
    ops_.SwigluForward(F(out, {N, I}), F(inp, {N, 2 * I}));
    std::vector<double> rout(N * I), rdinp(N * 2 * I);
    const auto id = Wide(inp), dd = Wide(dout);
    k::SwiGluForwardReference(rout.data(), id.data(), N, I);
    k::SwiGluBackwardReference(rdinp.data(), id.data(), dd.data(), N, I);
    EXPECT_LE(Excess(out, rout, 1e-6, 1e-5), 1);
    ops_.SwigluBackward(F(inp, {N, 2 * I}), F(inp, {N, 2 * I}), F(dout, {N, I}));
    EXPECT_LE(Excess(inp, rdinp, 1e-6, 1e-5), 1);
  }
  {  // Grouped-query attention, 4 query heads over 2 kv heads.
    const int B = 2, T = 6, NH = 4, NKV = 2, HS = 8;
    const int64_t C = NH * HS, W = (NH + 2 * NKV) * HS;
    auto qkv = Random(B * T * W, 39), dout = Random(B * T * C, 40);
    std::vector<float> out(B * T * C), state(ops_.GqaStateElements(B, T, NH, NKV, HS));
    std::vector<float> scratch(ops_.GqaScratchElements(B, T, NH, NKV, HS)), dqkv(B * T * W);
    const int64_t S = static_cast<int64_t>(scratch.size());
    ops_.GqaAttentionForward(F(out, {B, T, C}), F(state, {int64_t(state.size())}), F(scratch, {S}),
                             F(qkv, {B, T, W}), NH, NKV);
    ops_.GqaAttentionBackward(F(dqkv, {B, T, W}), F(scratch, {S}), F(dout, {B, T, C}),
                              F(qkv, {B, T, W}), F(state, {int64_t(state.size())}), NH, NKV);
    std::vector<double> rout(B * T * C), ratt(int64_t{B} * NH * T * T), rdqkv(B * T * W);
    const auto qd = Wide(qkv), dd = Wide(dout);
    k::GqaForwardReference(rout.data(), ratt.data(), qd.data(), B, T, NH, NKV, HS);
    k::GqaBackwardReference(rdqkv.data(), dd.data(), qd.data(), ratt.data(), B, T, NH, NKV, HS);
    EXPECT_LE(Excess(out, rout, 1e-6, 1e-5), 1);
    EXPECT_LE(Excess(dqkv, rdqkv, 1e-5, 1e-5), 1);
  }
  EXPECT_THAT(ops_.status(), IsOk());
}

TEST_F(CpuOpsTest, LlamaLayersRefuseBadShapesByName) {
  std::vector<float> a(64), b(64), c(256);
  struct Case {
    std::function<void(Ops&)> call;
    const char* want;
  };
  const Case cases[] = {
      {[&](Ops& o) {
         o.RmsNormForward(F(a, {4, 8}), View(), F(a, {4, 8}), F(b, {6}), 1e-5f);
       },
       "RmsNormForward: inp's last dimension is not weight's C"},
      {[&](Ops& o) {
         o.RmsNormForward(F(a, {4, 8}), View(), F(a, {4, 8}), F(b, {8}), -1.f);
       },
       "eps = -1 is negative"},
      {[&](Ops& o) {
         o.RopeTable(F(a, {8, 7}), 1e4);
       },
       "D = 7 is not even"},
      {[&](Ops& o) {
         o.RopeTable(F(a, {8, 8}), 0);
       },
       "theta = 0"},
      {[&](Ops& o) {
         o.RopeForward(F(a, {1, 4, 16}), F(a, {1, 4, 16}), F(b, {2, 8}), 2);
       },
       "positions [0, 4) are not all in the table's [0, 2)"},
      {[&](Ops& o) {
         o.RopeForward(F(a, {1, 4, 16}), F(a, {1, 4, 16}), F(b, {8, 8}), 3);
       },
       "n_heads = 3 heads of D = 8 do not fit"},
      {[&](Ops& o) {
         o.SwigluForward(F(a, {4, 8}), F(a, {4, 16}));
       },
       "out overlaps inp"},
      {[&](Ops& o) {
         o.SwigluForward(F(b, {4, 8}), F(a, {4, 8}));
       },
       "inp's last dimension is not 2 × out's I"},
      {[&](Ops& o) {
         o.GqaAttentionForward(F(a, {1, 4, 12}), F(b, {64}), View(), F(c, {1, 4, 40}), 3, 2);
       },
       "GqaAttentionForward: NKV = 2 does not divide NH = 3"},
      {[&](Ops& o) {
         o.GqaAttentionForward(F(a, {1, 4, 16}), F(b, {64}), View(), F(c, {1, 4, 40}), 4, 2);
       },
       "qkv"},
  };
  for (const Case& t : cases) {
    CpuOps ops(&alloc_);
    t.call(ops);
    EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(t.want)))
        << t.want;
  }
}

TEST_F(CpuOpsTest, BadArgumentsNameTheOperationAndStick) {
  std::vector<float> a(12), b(10);
  ops_.LayerNormForward(F(a, {3, 4}), View(), View(), F(a, {3, 4}), F(b, {5}), F(b, {5}));
  EXPECT_THAT(ops_.status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("LayerNormForward")));
  // Every later operation is skipped and the first error stays.
  const std::vector<float> before = b;
  ops_.Fill(F(b, {10}), 7.f);
  EXPECT_EQ(b, before);
  EXPECT_THAT(ops_.Synchronize(), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("inp's last dimension is not weight's C")));
}

TEST_F(CpuOpsTest, ChecksDevicesDtypesAndCounts) {
  std::vector<float> a(8), b(8);
  std::vector<uint16_t> h(8);
  {
    CpuOps ops(&alloc_);
    ops.Copy(F(a, {8}), View(b.data(), DType::kF32, {8}, Device::Cuda(0)));
    EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("is not on this operation's device cpu")));
  }
  {
    CpuOps ops(&alloc_);
    ops.Convert(H(h, {8}, DType::kF16), H(h, {8}));
    EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("converts only to or from f32")));
  }
  {
    CpuOps ops(&alloc_);
    ops.AddInto(F(a, {8}), F(b, {4}));
    EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("has 4 elements, expected 8")));
  }
  {
    CpuOps ops(&alloc_);
    ops.LinearForward(F(a, {2, 4}), F(a, {2, 4}), H(h, {2, 4}, DType::kF16), View(), {});
    EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("wrong dtype (f32 or bf16)")));
  }
  {
    CpuOps ops(&alloc_);
    std::vector<uint16_t> g16(8);
    ops.AdamW({F(a, {8}), H(g16, {8}, DType::kF16), F(a, {8}), F(b, {8}), H(h, {8})}, AdamWArgs());
    EXPECT_THAT(ops.status(), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("AdamW")));
  }
}

}  // namespace
}  // namespace dstrain::device
