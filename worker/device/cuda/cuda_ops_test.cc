// CudaOps against CpuOps, operation by operation, on the same inputs: the CUDA kernels' own tests
// hold them to float64 references, so here each result must agree with the CPU backend's within
// what different summation orders allow (stated per check), and element-wise results to the bit.
// Built twice: on a GPU (skips without one) and on the CUDA simulator.
#include "worker/device/cuda/cuda_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "worker/device/cpu/cpu_ops.h"

namespace dstrain::device {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using tensor::Shape;
using ::testing::HasSubstr;

std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> x(n);
  for (float& v : x) v = u(rng);
  return x;
}

// Largest |a - b| / (abs + rel·|b|) over the elements; <= 1 means within tolerance.
double Excess(const std::vector<float>& a, const std::vector<float>& b, double abs, double rel) {
  double worst = a.size() == b.size() ? 0 : 1e9;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double e = std::fabs(double(a[i]) - b[i]) / (abs + rel * std::fabs(b[i]));
    if (!(e <= worst)) worst = std::isnan(e) ? 1e9 : e;
  }
  return worst;
}

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DT_SKIP_WITHOUT_CUDA_DEVICE();
    auto ops = CudaOps::Create({});
    ASSERT_THAT(ops, IsOk());
    gpu_ = std::move(*ops);
  }

  // A device tensor holding `host` (f32, or rounded to `dtype`).
  tensor::Tensor Up(const std::vector<float>& host, Shape shape, DType dtype = DType::kF32) {
    auto t = tensor::Tensor::Empty(gpu_->allocator(), dtype,
                                   std::vector<int64_t>(shape.begin(), shape.end()),
                                   tensor::MemoryCategory::kOther);
    EXPECT_THAT(t, IsOk());
    auto staging = tensor::Tensor::Empty(gpu_->allocator(), DType::kF32, {t->numel()},
                                         tensor::MemoryCategory::kOther);
    gpu_->CopyFromHost(staging->view(), host.data());
    gpu_->Convert(t->view(), staging->view());
    return std::move(*t);
  }
  std::vector<float> Down(const tensor::Tensor& t) {
    auto wide = tensor::Tensor::Empty(gpu_->allocator(), DType::kF32, {t.numel()},
                                      tensor::MemoryCategory::kOther);
    gpu_->Convert(wide->view(), t.view());
    std::vector<float> host(t.numel());
    gpu_->CopyToHost(host.data(), wide->view());
    EXPECT_THAT(gpu_->status(), IsOk());
    return host;
  }
  tensor::Tensor UpTokens(const std::vector<int32_t>& ids, Shape shape) {
    auto t = tensor::Tensor::Empty(gpu_->allocator(), DType::kI32,
                                   std::vector<int64_t>(shape.begin(), shape.end()),
                                   tensor::MemoryCategory::kOther);
    gpu_->CopyFromHost(t->view(), ids.data());
    return std::move(*t);
  }
  static View F(std::vector<float>& x, Shape s) { return View(x.data(), DType::kF32, s); }

  std::unique_ptr<CudaOps> gpu_;
  tensor::CpuAllocator cpu_alloc_;
  CpuOps cpu_{&cpu_alloc_};
};

TEST_F(CudaOpsTest, DescribesAndPlacesItsMemory) {
  EXPECT_TRUE(gpu_->device().is_cuda());
  EXPECT_FALSE(gpu_->host_accessible());
  EXPECT_NE(gpu_->NativeStream(Stream::kCompute), nullptr);
  EXPECT_THAT(gpu_->Describe(), HasSubstr("cuda:0"));
}

// Linear layers in fp32 and on bf16 operands (fp32 weights rounded, and bf16 weights), with the
// GELU epilogues and a fresh (overwritten) dweight. A length-K fp32 dot product of terms <= 1
// differs between summation orders by well under K·2^-23 ≈ 1e-7·K.
TEST_F(CudaOpsTest, LinearLayersAgreeWithTheCpu) {
  const int64_t M = 12, K = 40, N = 24;
  auto inp = Random(M * K, 1), w = Random(N * K, 2), b = Random(N, 3), dout = Random(M * N, 4);
  auto pre_in = Random(M * K, 5);
  for (int mode = 0; mode < 3; ++mode) {  // fp32; bf16 compute on fp32 weights; bf16 weights
    SCOPED_TRACE(mode);
    const DType compute = mode == 0 ? DType::kF32 : DType::kBF16;
    const DType wtype = mode == 2 ? DType::kBF16 : DType::kF32;
    std::vector<float> w_cpu = w;
    std::vector<uint16_t> w16(N * K);
    tensor::Tensor d_inp = Up(inp, {M, K}), d_w = Up(w, {N, K}, wtype), d_b = Up(b, {N});
    tensor::Tensor d_out = Up(std::vector<float>(M * N), {M, N});
    tensor::Tensor d_pre = Up(std::vector<float>(M * N), {M, N});
    View cpu_w = F(w_cpu, {N, K});
    if (wtype == DType::kBF16) {
      cpu_.Convert(View(w16.data(), DType::kBF16, {N, K}), cpu_w);
      cpu_w = View(w16.data(), DType::kBF16, {N, K});
    }
    LinearOptions fwd{compute};
    std::vector<float> out(M * N), pre(M * N);
    fwd.output_gelu = F(pre, {M, N});
    cpu_.LinearForward(F(out, {M, N}), F(inp, {M, K}), cpu_w, F(b, {N}), fwd);
    fwd.output_gelu = d_pre.view();
    gpu_->LinearForward(d_out.view(), d_inp.view(), d_w.view(), d_b.view(), fwd);
    EXPECT_LE(Excess(Down(d_pre), pre, 1e-5 * K, 0), 1);
    EXPECT_LE(Excess(Down(d_out), out, 1e-5 * K, 0), 1);

    LinearOptions bwd{compute};
    bwd.overwrite_dweight = true;
    std::vector<float> dinp(M * K), dw(N * K, 1e30f), db(N, 0.5f);
    bwd.input_gelu = F(pre_in, {M, K});
    cpu_.LinearBackward(F(dinp, {M, K}), F(dw, {N, K}), F(db, {N}), F(dout, {M, N}), F(inp, {M, K}),
                        cpu_w, bwd);
    tensor::Tensor d_dinp = Up(std::vector<float>(M * K), {M, K});
    tensor::Tensor d_dw = Up(std::vector<float>(N * K, 1e30f), {N, K});
    tensor::Tensor d_db = Up(std::vector<float>(N, 0.5f), {N});
    tensor::Tensor d_dout = Up(dout, {M, N}), d_pre_in = Up(pre_in, {M, K});
    bwd.input_gelu = d_pre_in.view();
    gpu_->LinearBackward(d_dinp.view(), d_dw.view(), d_db.view(), d_dout.view(), d_inp.view(),
                         d_w.view(), bwd);
    EXPECT_LE(Excess(Down(d_dinp), dinp, 1e-5 * N, 0), 1);
    EXPECT_LE(Excess(Down(d_dw), dw, 1e-5 * M, 0), 1);
    EXPECT_LE(Excess(Down(d_db), db, 1e-5 * M, 0), 1);
  }
  EXPECT_THAT(gpu_->status(), IsOk());
}

TEST_F(CudaOpsTest, ModelLayersAgreeWithTheCpu) {
  const int B = 2, T = 8, C = 16, NH = 2, V = 30, Vp = 32, maxT = 10;
  const int64_t BT = B * T;
  std::vector<int32_t> tokens(BT);
  for (int64_t i = 0; i < BT; ++i) tokens[i] = static_cast<int32_t>((i * 7) % V);
  tensor::Tensor d_tokens = UpTokens(tokens, {B, T});
  View cpu_tokens(tokens.data(), DType::kI32, {B, T});
  auto wte = Random(Vp * C, 10), wpe = Random(maxT * C, 11);

  // The encoder adds two numbers: bitwise equal, with a bf16 table too.
  for (DType wt : {DType::kF32, DType::kBF16}) {
    std::vector<float> enc(BT * C), wte_cpu = wte;
    std::vector<uint16_t> wte16(Vp * C);
    View cw = F(wte_cpu, {Vp, C});
    if (wt == DType::kBF16) {
      cpu_.Convert(View(wte16.data(), DType::kBF16, {Vp, C}), cw);
      cw = View(wte16.data(), DType::kBF16, {Vp, C});
    }
    cpu_.EncoderForward(F(enc, {B, T, C}), cpu_tokens, cw, F(wpe, {maxT, C}));
    tensor::Tensor d_enc = Up(std::vector<float>(BT * C), {B, T, C});
    tensor::Tensor d_wte = Up(wte, {Vp, C}, wt), d_wpe = Up(wpe, {maxT, C});
    gpu_->EncoderForward(d_enc.view(), d_tokens.view(), d_wte.view(), d_wpe.view());
    EXPECT_EQ(Down(d_enc), enc);
  }

  // LayerNorm: C-long sums in another order (~1e-6 relative).
  auto x = Random(BT * C, 12), lw = Random(C, 13), lb = Random(C, 14);
  std::vector<float> ln(BT * C), mean(BT), rstd(BT);
  cpu_.LayerNormForward(F(ln, {B, T, C}), F(mean, {B, T}), F(rstd, {B, T}), F(x, {B, T, C}),
                        F(lw, {C}), F(lb, {C}));
  tensor::Tensor d_x = Up(x, {B, T, C}), d_lw = Up(lw, {C}), d_lb = Up(lb, {C});
  tensor::Tensor d_ln = Up(std::vector<float>(BT * C), {B, T, C});
  tensor::Tensor d_mean = Up(std::vector<float>(BT), {B, T}),
                 d_rstd = Up(std::vector<float>(BT), {B, T});
  gpu_->LayerNormForward(d_ln.view(), d_mean.view(), d_rstd.view(), d_x.view(), d_lw.view(),
                         d_lb.view());
  EXPECT_LE(Excess(Down(d_ln), ln, 1e-5, 1e-5), 1);
  EXPECT_LE(Excess(Down(d_rstd), rstd, 0, 1e-5), 1);

  // Attention: T-long softmax sums and products (~1e-6).
  auto qkv = Random(BT * 3 * C, 15), dout = Random(BT * C, 16);
  std::vector<float> att(cpu_.AttentionStateElements(B, T, C, NH)), out(BT * C);
  cpu_.AttentionForward(F(out, {B, T, C}), F(att, {int64_t(att.size())}), F(qkv, {B, T, 3 * C}),
                        NH);
  tensor::Tensor d_qkv = Up(qkv, {B, T, 3 * C}), d_out = Up(std::vector<float>(BT * C), {B, T, C});
  tensor::Tensor d_att = Up(std::vector<float>(gpu_->AttentionStateElements(B, T, C, NH)),
                            {gpu_->AttentionStateElements(B, T, C, NH)});
  gpu_->AttentionForward(d_out.view(), d_att.view(), d_qkv.view(), NH);
  EXPECT_LE(Excess(Down(d_out), out, 1e-5, 1e-5), 1);
  std::vector<float> scratch(cpu_.AttentionScratchElements(B, T, C, NH)), dqkv(BT * 3 * C);
  cpu_.AttentionBackward(F(dqkv, {B, T, 3 * C}), F(scratch, {int64_t(scratch.size())}),
                         F(dout, {B, T, C}), F(qkv, {B, T, 3 * C}), F(att, {int64_t(att.size())}),
                         NH);
  tensor::Tensor d_dout = Up(dout, {B, T, C}),
                 d_dqkv = Up(std::vector<float>(BT * 3 * C), {B, T, 3 * C});
  gpu_->AttentionBackward(d_dqkv.view(), View(), d_dout.view(), d_qkv.view(), d_att.view(), NH);
  EXPECT_LE(Excess(Down(d_dqkv), dqkv, 1e-5, 1e-4), 1);

  // Cross-entropy over the padded vocabulary, and its mean (the host sums both in row order).
  auto logits = Random(BT * Vp, 17, 3.f);
  std::vector<float> losses(BT), cpu_logits = logits;
  cpu_.CrossEntropy(F(losses, {BT}), F(cpu_logits, {BT, Vp}), cpu_tokens.Reshape({BT}), V, 0.25f);
  tensor::Tensor d_logits = Up(logits, {BT, Vp}), d_losses = Up(std::vector<float>(BT), {BT});
  gpu_->CrossEntropy(d_losses.view(), d_logits.view(), d_tokens.view().Reshape({BT}), V, 0.25f);
  EXPECT_LE(Excess(Down(d_losses), losses, 1e-5, 1e-5), 1);
  EXPECT_LE(Excess(Down(d_logits), cpu_logits, 1e-7, 1e-5), 1);
  ASSERT_OK_AND_ASSIGN(const double mean_gpu, gpu_->MeanLoss(d_losses.view()));
  ASSERT_OK_AND_ASSIGN(const double mean_cpu, cpu_.MeanLoss(F(losses, {BT})));
  EXPECT_NEAR(mean_gpu, mean_cpu, 1e-5 * std::fabs(mean_cpu));
  EXPECT_THAT(gpu_->status(), IsOk());
}

// The Llama layers: element-wise RoPE and SwiGLU within a few ulps (the GPU's own exp, sin and
// cos rounding), C-long RMSNorm sums and T-long attention sums in another order (~1e-6).
TEST_F(CudaOpsTest, LlamaLayersAgreeWithTheCpu) {
  const int B = 2, T = 6, NH = 4, NKV = 2, HS = 8, maxT = 9, I = 24;
  const int64_t BT = B * T, C = NH * HS, W = (NH + 2 * NKV) * HS;

  // RMSNorm forward and its accumulating backward.
  auto x = Random(BT * C, 50), w = Random(C, 51), dout = Random(BT * C, 52);
  auto dinp = Random(BT * C, 53), dw = Random(C, 54);
  std::vector<float> out(BT * C), rstd(BT);
  tensor::Tensor d_x = Up(x, {B, T, C}), d_w = Up(w, {C}), d_dout = Up(dout, {B, T, C});
  tensor::Tensor d_dinp = Up(dinp, {B, T, C}), d_dw = Up(dw, {C});
  tensor::Tensor d_out = Up(out, {B, T, C}), d_rstd = Up(rstd, {BT});
  cpu_.RmsNormForward(F(out, {B, T, C}), F(rstd, {BT}), F(x, {B, T, C}), F(w, {C}), 1e-6f);
  cpu_.RmsNormBackward(F(dinp, {B, T, C}), F(dw, {C}), F(dout, {B, T, C}), F(x, {B, T, C}),
                       F(w, {C}), F(rstd, {BT}));
  gpu_->RmsNormForward(d_out.view(), d_rstd.view(), d_x.view(), d_w.view(), 1e-6f);
  gpu_->RmsNormBackward(d_dinp.view(), d_dw.view(), d_dout.view(), d_x.view(), d_w.view(),
                        d_rstd.view());
  EXPECT_LE(Excess(Down(d_out), out, 1e-6, 1e-5), 1);
  EXPECT_LE(Excess(Down(d_rstd), rstd, 0, 1e-5), 1);
  EXPECT_LE(Excess(Down(d_dinp), dinp, 1e-6, 1e-5), 1);
  EXPECT_LE(Excess(Down(d_dw), dw, 1e-5, 1e-5), 1);

  // RoPE in place on the fused qkv, then GQA on it; both backward passes.
  std::vector<float> table(maxT * HS);
  cpu_.RopeTable(F(table, {maxT, HS}), 1e4);
  tensor::Tensor d_table = Up(std::vector<float>(maxT * HS), {maxT, HS});
  gpu_->RopeTable(d_table.view(), 1e4);
  EXPECT_LE(Excess(Down(d_table), table, 1e-7, 1e-6), 1);
  auto qkv = Random(BT * W, 55);
  tensor::Tensor d_qkv = Up(qkv, {B, T, W});
  cpu_.RopeForward(F(qkv, {B, T, W}), F(qkv, {B, T, W}), F(table, {maxT, HS}), NH + NKV);
  gpu_->RopeForward(d_qkv.view(), d_qkv.view(), d_table.view(), NH + NKV);
  EXPECT_LE(Excess(Down(d_qkv), qkv, 1e-6, 1e-5), 1);
  std::vector<float> att(cpu_.GqaStateElements(B, T, NH, NKV, HS)), gout(BT * C);
  std::vector<float> scratch(cpu_.GqaScratchElements(B, T, NH, NKV, HS)), dqkv(BT * W);
  const int64_t S = static_cast<int64_t>(scratch.size()), A = static_cast<int64_t>(att.size());
  cpu_.GqaAttentionForward(F(gout, {B, T, C}), F(att, {A}), F(scratch, {S}), F(qkv, {B, T, W}), NH,
                           NKV);
  cpu_.GqaAttentionBackward(F(dqkv, {B, T, W}), F(scratch, {S}), F(dout, {B, T, C}),
                            F(qkv, {B, T, W}), F(att, {A}), NH, NKV);
  cpu_.RopeBackward(F(dqkv, {B, T, W}), F(dqkv, {B, T, W}), F(table, {maxT, HS}), NH + NKV);
  const int64_t GA = gpu_->GqaStateElements(B, T, NH, NKV, HS);
  ASSERT_EQ(gpu_->GqaScratchElements(B, T, NH, NKV, HS), 0);
  tensor::Tensor d_att = Up(std::vector<float>(GA), {GA});
  tensor::Tensor d_gout = Up(std::vector<float>(BT * C), {B, T, C});
  tensor::Tensor d_dqkv = Up(std::vector<float>(BT * W), {B, T, W});
  gpu_->GqaAttentionForward(d_gout.view(), d_att.view(), View(), d_qkv.view(), NH, NKV);
  gpu_->GqaAttentionBackward(d_dqkv.view(), View(), d_dout.view(), d_qkv.view(), d_att.view(), NH,
                             NKV);
  gpu_->RopeBackward(d_dqkv.view(), d_dqkv.view(), d_table.view(), NH + NKV);
  EXPECT_LE(Excess(Down(d_gout), gout, 1e-5, 1e-5), 1);
  EXPECT_LE(Excess(Down(d_dqkv), dqkv, 1e-5, 1e-4), 1);

  // SwiGLU, the backward in place on [gate | up].
  auto gu = Random(BT * 2 * I, 56, 4.f), sdout = Random(BT * I, 57);
  std::vector<float> sout(BT * I);
  tensor::Tensor d_gu = Up(gu, {BT, 2 * I}), d_sdout = Up(sdout, {BT, I});
  tensor::Tensor d_sout = Up(sout, {BT, I});
  cpu_.SwigluForward(F(sout, {BT, I}), F(gu, {BT, 2 * I}));
  cpu_.SwigluBackward(F(gu, {BT, 2 * I}), F(gu, {BT, 2 * I}), F(sdout, {BT, I}));
  gpu_->SwigluForward(d_sout.view(), d_gu.view());
  gpu_->SwigluBackward(d_gu.view(), d_gu.view(), d_sdout.view());
  EXPECT_LE(Excess(Down(d_sout), sout, 1e-6, 1e-5), 1);
  EXPECT_LE(Excess(Down(d_gu), gu, 1e-6, 1e-5), 1);
  EXPECT_THAT(gpu_->status(), IsOk());
  EXPECT_THAT(cpu_.status(), IsOk());
}

// 16-bit storage: accumulation, scaling, conversion and fill round once, as the CPU does (to the
// bit); the norm sums in double in another order.
TEST_F(CudaOpsTest, SixteenBitArithmeticMatchesTheCpu) {
  const int64_t n = 300;
  auto acc = Random(n, 20), x = Random(n, 21, 0.01f);
  for (DType t : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(t));
    std::vector<uint16_t> acc16(n), x16(n);
    cpu_.Convert(View(acc16.data(), t, {n}), F(acc, {n}));
    cpu_.Convert(View(x16.data(), t, {n}), F(x, {n}));
    tensor::Tensor d_acc = Up(acc, {n}, t), d_x = Up(x, {n}), d_x16 = Up(x, {n}, t);
    cpu_.AddInto(View(acc16.data(), t, {n}), F(x, {n}));
    cpu_.AddInto(View(acc16.data(), t, {n}), View(x16.data(), t, {n}));
    cpu_.Scale(View(acc16.data(), t, {n}), 0.75);
    gpu_->AddInto(d_acc.view(), d_x.view());
    gpu_->AddInto(d_acc.view(), d_x16.view());
    gpu_->Scale(d_acc.view(), 0.75);
    std::vector<float> want(n);
    cpu_.Convert(F(want, {n}), View(acc16.data(), t, {n}));
    EXPECT_EQ(Down(d_acc), want);
    ASSERT_OK_AND_ASSIGN(const double ss_gpu, gpu_->SumSquares({d_acc.view(), d_x.view()}));
    ASSERT_OK_AND_ASSIGN(const double ss_cpu,
                         cpu_.SumSquares({View(acc16.data(), t, {n}), F(x, {n})}));
    EXPECT_NEAR(ss_gpu, ss_cpu, 1e-12 * ss_cpu);
    gpu_->Fill(d_acc.view(), 2.5f);
    EXPECT_EQ(Down(d_acc), std::vector<float>(n, 2.5f));
  }
  EXPECT_THAT(gpu_->status(), IsOk());
}

// AdamW is element-wise with the CPU's operation order: fp32 results agree to an ulp or two
// (fused multiply-adds may differ), the 16-bit copy is the rounding of the master.
TEST_F(CudaOpsTest, AdamWMatchesTheCpu) {
  const int64_t n = 257;
  AdamWArgs args;
  args.lr = 1e-2;
  args.weight_decay = 0.1;
  args.bias_correction1 = 0.1;
  args.bias_correction2 = 0.001;
  auto p = Random(n, 30), g = Random(n, 31), m = Random(n, 32, 0.1f), v = Random(n, 33, 0.1f);
  for (float& e : v) e = std::fabs(e);
  for (DType half : {DType::kF32, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(half));
    auto cp = p, cm = m, cv = v;
    tensor::Tensor dp = Up(p, {n}), dm = Up(m, {n}), dv = Up(v, {n});
    std::vector<uint16_t> g16(n), p16(n);
    if (half == DType::kF32) {
      auto cg = g;
      cpu_.AdamW({F(cp, {n}), F(cg, {n}), F(cm, {n}), F(cv, {n}), View()}, args);
      tensor::Tensor dg = Up(g, {n});
      gpu_->AdamW({dp.view(), dg.view(), dm.view(), dv.view(), View()}, args);
    } else {
      cpu_.Convert(View(g16.data(), half, {n}), F(g, {n}));
      cpu_.AdamW({F(cp, {n}), View(g16.data(), half, {n}), F(cm, {n}), F(cv, {n}),
                  View(p16.data(), half, {n})},
                 args);
      tensor::Tensor dg = Up(g, {n}, half), dp16 = Up(std::vector<float>(n), {n}, half);
      gpu_->AdamW({dp.view(), dg.view(), dm.view(), dv.view(), dp16.view()}, args);
      std::vector<float> want16(n);
      cpu_.Convert(F(want16, {n}), View(p16.data(), half, {n}));
      std::vector<float> got_master = Down(dp), got16 = Down(dp16);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t round = 0;
        float master = got_master[i], back = 0;
        cpu_.Convert(View(&round, half, {1}), F(got_master, {n}).Sub(i, 1));
        cpu_.Convert(View(&back, DType::kF32, {1}), View(&round, half, {1}));
        ASSERT_EQ(got16[i], back) << i << " master " << master;
      }
    }
    EXPECT_LE(Excess(Down(dp), cp, 1e-7, 1e-6), 1);
    EXPECT_LE(Excess(Down(dm), cm, 1e-8, 1e-6), 1);
    EXPECT_LE(Excess(Down(dv), cv, 1e-10, 1e-6), 1);
  }
  EXPECT_THAT(gpu_->status(), IsOk());
}

// Copies with page-locked memory are queued: the bytes are there once a fence recorded after the
// copy is waited for (on the simulator, not before), and a fence's number is reused once waited
// for. The CPU has no page-locked memory to offer, and its fences have always passed.
TEST_F(CudaOpsTest, AsyncCopiesWithPinnedMemoryLandAtTheirFence) {
  auto pinned = gpu_->NewPinnedHostAllocator(0);
  ASSERT_THAT(pinned, IsOk());
  EXPECT_TRUE((*pinned)->device().is_cpu());
  constexpr int n = 1000;
  auto host =
      tensor::Tensor::Empty(pinned->get(), DType::kF32, {n}, tensor::MemoryCategory::kOther);
  ASSERT_THAT(host, IsOk());
  EXPECT_EQ((*pinned)->Stats().current[static_cast<int>(tensor::MemoryCategory::kOther)], n * 4);
  std::vector<float> values(n);
  for (int i = 0; i < n; ++i) values[i] = 0.5f * i;
  tensor::Tensor device = Up(values, {n});
  float* h = static_cast<float*>(host->raw());
  std::fill(h, h + n, -1.f);
  gpu_->CopyToHostAsync(h, device.view());
  const int fence = gpu_->RecordFence();
  ASSERT_GE(fence, 0);
  ASSERT_THAT(gpu_->WaitFence(fence), IsOk());
  EXPECT_EQ(std::vector<float>(h, h + n), values);
  EXPECT_EQ(gpu_->RecordFence(), fence);  // reused
  ASSERT_THAT(gpu_->WaitFence(fence), IsOk());

  for (int i = 0; i < n; ++i) h[i] = 3.f * i;
  gpu_->CopyFromHostAsync(device.view(), h);
  const int back = gpu_->RecordFence();
  ASSERT_THAT(gpu_->WaitFence(back), IsOk());
  std::fill(h, h + n, 0.f);  // after the fence: the device has its copy
  const std::vector<float> got = Down(device);
  for (int i = 0; i < n; ++i) ASSERT_EQ(got[i], 3.f * i) << i;

  // The synchronous CopyFromHost keeps its contract with page-locked memory too: the source may
  // be rewritten as soon as it returns (on the simulator, a copy not waited for would read the
  // rewritten bytes).
  for (int i = 0; i < n; ++i) h[i] = 7.f * i;
  gpu_->CopyFromHost(device.view(), h);
  std::fill(h, h + n, -2.f);
  const std::vector<float> synced = Down(device);
  for (int i = 0; i < n; ++i) ASSERT_EQ(synced[i], 7.f * i) << i;

  EXPECT_THAT(cpu_.NewPinnedHostAllocator().status(),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("host memory")));
  EXPECT_THAT(cpu_.WaitFence(cpu_.RecordFence()), IsOk());
}

TEST_F(CudaOpsTest, HostMemoryIsRefusedWithTheDeviceNamed) {
  std::vector<float> host(8);
  tensor::Tensor d = Up(host, {8});
  gpu_->Copy(d.view(), F(host, {8}));
  EXPECT_THAT(gpu_->status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("is not on this operation's device cuda:0")));
}

// CUDA's layers keep their activations in fp32 (Sizing::bf16_matmul_inputs is false): a bf16
// LayerNorm output is refused by name before any kernel runs.
TEST_F(CudaOpsTest, Bf16ActivationsAreRefusedByName) {
  EXPECT_FALSE(gpu_->bf16_matmul_inputs());
  std::vector<float> x = Random(4 * 8, 30), w(8, 1.f), b(8, 0.f);
  tensor::Tensor dx = Up(x, {4, 8}), dw = Up(w, {8}), db = Up(b, {8});
  tensor::Tensor out16 = Up(std::vector<float>(4 * 8), {4, 8}, DType::kBF16);
  gpu_->LayerNormForward(out16.view(), View(), View(), dx.view(), dw.view(), db.view());
  EXPECT_THAT(gpu_->status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("LayerNormForward"),
                                        HasSubstr("out is bf16, which this device's layers"))));
}

TEST_F(CudaOpsTest, AllocatorCachesAndNamesTheCategoryWhenOutOfBudget) {
  CudaAllocator& a = gpu_->cuda_allocator();
  const int64_t before = a.driver_allocations();
  for (int round = 0; round < 3; ++round) {
    auto t = tensor::Tensor::Empty(&a, DType::kF32, {1000}, tensor::MemoryCategory::kGrads);
    ASSERT_THAT(t, IsOk());
  }
  EXPECT_LE(a.driver_allocations() - before, 1) << "freed blocks serve the next allocation";
  EXPECT_GT(a.cached_bytes(), 0);

  CudaAllocator small(0, static_cast<cudaStream_t>(gpu_->NativeStream(Stream::kCompute)),
                      /*limit_bytes=*/10000);
  small.set_expected("9.0 KB per rank");
  auto fits = tensor::Tensor::Empty(&small, DType::kF32, {2000}, tensor::MemoryCategory::kParams);
  ASSERT_THAT(fits, IsOk());
  EXPECT_THAT(
      tensor::Tensor::Empty(&small, DType::kF32, {1000}, tensor::MemoryCategory::kOptimizerState),
      StatusIs(absl::StatusCode::kResourceExhausted,
               ::testing::AllOf(HasSubstr("of optimizer_state"), HasSubstr("params 0.0 MB"),
                                HasSubstr("budget"), HasSubstr("predicted 9.0 KB"))));
}

}  // namespace
}  // namespace dstrain::device
