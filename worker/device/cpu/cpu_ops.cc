#include "worker/device/cpu/cpu_ops.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "kernels/adamw/adamw.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_bf16.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/crossentropy/crossentropy.h"
#include "kernels/encoder/encoder.h"
#include "kernels/gelu/gelu.h"
#include "kernels/gqa/gqa.h"
#include "kernels/layernorm/layernorm.h"
#include "kernels/matmul/matmul.h"
#include "kernels/residual/residual.h"
#include "kernels/rmsnorm/rmsnorm.h"
#include "kernels/rope/rope.h"
#include "kernels/swiglu/swiglu.h"

namespace dstrain::device {
namespace {

namespace k = ::dstrain::kernels;

float* F32(const View& v) { return v.as<float>(); }
uint16_t* U16(const View& v) { return v.as<uint16_t>(); }
const int32_t* I32(const View& v) { return v.as<const int32_t>(); }
// A view's data, or null for an empty (not given) view.
float* F32OrNull(const View& v) { return v.empty() ? nullptr : v.as<float>(); }

// Whether attention runs its products in AMX tiles: the same answer in both passes, since it
// depends only on the model's product precision and the machine.
bool AmxAttention(DType products) { return products == DType::kBF16 && k::AmxUsable(); }

// x widened to f32: x itself when it is f32, else a copy in `storage`.
const float* Widened(const View& x, std::vector<float>& storage) {
  if (x.dtype() == DType::kF32) return F32(x);
  storage.resize(x.numel());
  k::HalfToFloat(x.dtype(), storage.data(), U16(x), x.numel());
  return storage.data();
}

}  // namespace

CpuOps::CpuOps(tensor::Allocator* allocator) : Ops(allocator) {
  DT_CHECK(allocator->device().is_cpu());
}

std::string CpuOps::Describe() const {
  // "amx" where bf16 products also run attention's own on AMX tiles (tools/torch_ref's replay
  // follows what this says).
  return absl::StrCat("cpu (", k::IsaName(k::ActiveIsa()), k::AmxUsable() ? ", amx" : "", ")");
}

int64_t CpuOps::AttentionStateElements(int B, int T, int /*C*/, int NH) const {
  return k::AttentionStateFloats(B, T, NH);  // two softmax statistics per query row
}

int64_t CpuOps::AttentionScratchElements(int B, int T, int C, int NH) const {
  // The products' precision is not known here: enough for either route.
  const int64_t f32 = k::AttentionBackwardScratchFloats(B, T, C, NH);
  return k::AmxUsable() ? std::max(f32, k::AttentionBackwardBf16ScratchFloats(B, T, C, NH)) : f32;
}

int64_t CpuOps::GqaStateElements(int B, int T, int NH, int /*NKV*/, int /*HS*/) const {
  return k::AttentionStateFloats(B, T, NH);  // as attention: the query heads' row statistics
}

int64_t CpuOps::GqaScratchElements(int B, int T, int NH, int NKV, int HS) const {
  return std::max(k::GqaForwardScratchFloats(B, T, NH, NKV, HS),
                  k::GqaBackwardScratchFloats(B, T, NH, NKV, HS));
}

void CpuOps::DoCopy(View dst, View src) { std::memcpy(dst.data(), src.data(), dst.bytes()); }

void CpuOps::DoCopyFromHost(View dst, const void* src) {
  std::memcpy(dst.data(), src, dst.bytes());
}

void CpuOps::DoCopyToHost(void* dst, View src) { std::memcpy(dst, src.data(), src.bytes()); }

void CpuOps::DoFill(View x, float value) {
  if (x.dtype() == DType::kF32) {
    k::Fill(F32(x), x.numel(), value);
    return;
  }
  uint16_t bits = 0;
  k::FloatToHalf(x.dtype(), &bits, &value, 1);
  if (bits == 0) {
    std::memset(x.data(), 0, x.bytes());
  } else {
    std::fill(U16(x), U16(x) + x.numel(), bits);
  }
}

void CpuOps::DoConvert(View dst, View src) {
  if (dst.dtype() == src.dtype()) {
    if (dst.data() != src.data()) std::memcpy(dst.data(), src.data(), dst.bytes());
  } else if (src.dtype() == DType::kF32) {
    k::FloatToHalf(dst.dtype(), U16(dst), F32(src), dst.numel());
  } else {
    k::HalfToFloat(src.dtype(), F32(dst), U16(src), dst.numel());
  }
}

void CpuOps::DoAddInto(View acc, View x) {
  std::vector<float> widened;
  const float* add = Widened(x, widened);
  if (acc.dtype() == DType::kF32) {
    k::AddInPlace(F32(acc), add, acc.numel());
  } else {
    k::AccumulateIntoHalf(acc.dtype(), U16(acc), add, acc.numel());
  }
}

void CpuOps::DoScale(View x, double s) {
  if (x.dtype() == DType::kF32) {
    k::Scale(F32(x), x.numel(), static_cast<float>(s));
    return;
  }
  std::vector<float> wide(x.numel());
  k::HalfToFloat(x.dtype(), wide.data(), U16(x), x.numel());
  k::Scale(wide.data(), x.numel(), static_cast<float>(s));
  k::FloatToHalf(x.dtype(), U16(x), wide.data(), x.numel());
}

absl::StatusOr<double> CpuOps::DoSumSquares(absl::Span<const View> xs) {
  double sum = 0.0;
  for (const View& x : xs) {
    sum += x.dtype() == DType::kF32 ? k::SumSquares(F32(x), x.numel())
                                    : k::SumSquaresHalf(x.dtype(), U16(x), x.numel());
  }
  return sum;
}

void CpuOps::DoEncoderForward(View out, View tokens, View wte, View wpe) {
  const int B = static_cast<int>(tokens.dim(0)), T = static_cast<int>(tokens.dim(1));
  const int C = static_cast<int>(out.dim(-1));
  if (wte.dtype() == DType::kBF16) {
    k::EncoderForwardBf16(F32(out), I32(tokens), U16(wte), F32(wpe), B, T, C);
  } else {
    k::EncoderForward(F32(out), I32(tokens), F32(wte), F32(wpe), B, T, C);
  }
}

void CpuOps::DoEncoderBackward(View dwte, View dwpe, View dout, View tokens) {
  k::EncoderBackward(F32(dwte), F32(dwpe), F32(dout), I32(tokens), static_cast<int>(tokens.dim(0)),
                     static_cast<int>(tokens.dim(1)), static_cast<int>(dout.dim(-1)));
}

void CpuOps::DoLayerNormForward(View out, View mean, View rstd, View inp, View weight, View bias) {
  const int C = static_cast<int>(weight.numel());
  if (out.dtype() == DType::kBF16) {
    k::LayerNormForward(U16(out), F32OrNull(mean), F32OrNull(rstd), F32(inp), F32(weight),
                        F32(bias), inp.numel() / C, C);
  } else {
    k::LayerNormForward(F32(out), F32OrNull(mean), F32OrNull(rstd), F32(inp), F32(weight),
                        F32(bias), inp.numel() / C, C);
  }
}

void CpuOps::DoLayerNormBackward(View dinp, View dweight, View dbias, View dout, View inp,
                                 View weight, View mean, View rstd) {
  const int C = static_cast<int>(weight.numel());
  k::LayerNormBackward(F32(dinp), F32(dweight), F32(dbias), F32(dout), F32(inp), F32(weight),
                       F32(mean), F32(rstd), inp.numel() / C, C);
}

void CpuOps::DoLinearForward(View out, View inp, View weight, View bias,
                             const LinearOptions& options) {
  const int64_t K = weight.dim(-1), N = weight.numel() / K, M = inp.numel() / K;
  // With GELU after the layer the product goes to output_gelu and out receives gelu of it.
  float* product = options.output_gelu.empty() ? F32(out) : F32(options.output_gelu);
  const float* b = F32OrNull(bias);
  // A bf16 input (stored rounded) or weight (bf16 parameters) goes in as it is; Ops checked that
  // such operands come with bf16 products.
  const bool inp16 = inp.dtype() == DType::kBF16, weight16 = weight.dtype() == DType::kBF16;
  if (inp16 && weight16) {
    k::MatmulForwardBf16(product, U16(inp), U16(weight), b, M, K, N);
  } else if (inp16) {
    k::MatmulForwardBf16(product, U16(inp), F32(weight), b, M, K, N);
  } else if (weight16) {
    k::MatmulForwardBf16(product, F32(inp), U16(weight), b, M, K, N);
  } else if (options.compute == DType::kBF16) {
    k::MatmulForwardBf16(product, F32(inp), F32(weight), b, M, K, N);
  } else {
    k::MatmulForward(product, F32(inp), F32(weight), b, M, K, N);
  }
  if (options.output_gelu.empty()) return;
  if (out.dtype() == DType::kBF16) {
    k::GeluForward(U16(out), product, M * N);
  } else {
    k::GeluForward(F32(out), product, M * N);
  }
}

void CpuOps::DoLinearBackward(View dinp, View dweight, View dbias, View dout, View inp, View weight,
                              const LinearOptions& options) {
  const int64_t K = weight.dim(-1), N = weight.numel() / K, M = inp.numel() / K;
  float* db = F32OrNull(dbias);
  const bool accumulate_dweight = !options.overwrite_dweight;
  const bool inp16 = inp.dtype() == DType::kBF16, weight16 = weight.dtype() == DType::kBF16;
  if (inp16 && weight16) {
    k::MatmulBackwardBf16(F32(dinp), F32(dweight), db, F32(dout), U16(inp), U16(weight), M, K, N,
                          /*accumulate_dinp=*/false, accumulate_dweight);
  } else if (inp16) {
    k::MatmulBackwardBf16(F32(dinp), F32(dweight), db, F32(dout), U16(inp), F32(weight), M, K, N,
                          /*accumulate_dinp=*/false, accumulate_dweight);
  } else if (weight16) {
    k::MatmulBackwardBf16(F32(dinp), F32(dweight), db, F32(dout), F32(inp), U16(weight), M, K, N,
                          /*accumulate_dinp=*/false, accumulate_dweight);
  } else if (options.compute == DType::kBF16) {
    k::MatmulBackwardBf16(F32(dinp), F32(dweight), db, F32(dout), F32(inp), F32(weight), M, K, N,
                          /*accumulate_dinp=*/false, accumulate_dweight);
  } else {
    k::MatmulBackward(F32(dinp), F32(dweight), db, F32(dout), F32(inp), F32(weight), M, K, N,
                      /*accumulate_dinp=*/false, accumulate_dweight);
  }
  // The input was gelu(input_gelu): the chain rule through GELU, in place.
  if (!options.input_gelu.empty()) {
    k::GeluBackward(F32(dinp), F32(options.input_gelu), F32(dinp), M * K);
  }
}

void CpuOps::DoAttentionForward(View out, View state, View qkv, int NH, DType products) {
  const int B = static_cast<int>(out.dim(0)), T = static_cast<int>(out.dim(1));
  const int C = static_cast<int>(out.dim(2));
  if (AmxAttention(products)) {
    if (out.dtype() == DType::kBF16) {
      k::AttentionForwardBf16(U16(out), F32(state), F32(qkv), B, T, C, NH, k::TileRoute::kAmx);
    } else {
      k::AttentionForwardBf16(F32(out), F32(state), F32(qkv), B, T, C, NH, k::TileRoute::kAmx);
    }
  } else if (out.dtype() == DType::kBF16) {
    k::AttentionForward(U16(out), F32(state), F32(qkv), B, T, C, NH);
  } else {
    k::AttentionForward(F32(out), F32(state), F32(qkv), B, T, C, NH);
  }
}

void CpuOps::DoAttentionBackward(View dqkv, View scratch, View dout, View qkv, View state, int NH,
                                 DType products) {
  if (AmxAttention(products)) {
    k::AttentionBackwardBf16(F32(dqkv), F32(scratch), F32(dout), F32(qkv), F32(state),
                             static_cast<int>(dout.dim(0)), static_cast<int>(dout.dim(1)),
                             static_cast<int>(dout.dim(2)), NH, k::TileRoute::kAmx);
    return;
  }
  k::AttentionBackward(F32(dqkv), F32(scratch), F32(dout), F32(qkv), F32(state),
                       static_cast<int>(dout.dim(0)), static_cast<int>(dout.dim(1)),
                       static_cast<int>(dout.dim(2)), NH);
}

void CpuOps::DoGeluForward(View out, View inp) { k::GeluForward(F32(out), F32(inp), inp.numel()); }

void CpuOps::DoGeluBackward(View dinp, View inp, View dout) {
  k::GeluBackward(F32(dinp), F32(inp), F32(dout), inp.numel());
}

void CpuOps::DoCrossEntropy(View losses, View logits, View targets, int V, float dlogits_scale) {
  const int64_t N = targets.numel();
  k::CrossEntropyForwardBackward(F32OrNull(losses), F32(logits), I32(targets), N, V,
                                 static_cast<int>(logits.numel() / N), dlogits_scale);
}

absl::StatusOr<double> CpuOps::DoMeanLoss(View losses) {
  return k::MeanLoss(F32(losses), losses.numel());
}

void CpuOps::DoRmsNormForward(View out, View rstd, View inp, View weight, float eps) {
  const int C = static_cast<int>(weight.numel());
  if (out.dtype() == DType::kBF16) {
    k::RmsNormForward(U16(out), F32OrNull(rstd), F32(inp), F32(weight), inp.numel() / C, C, eps);
  } else {
    k::RmsNormForward(F32(out), F32OrNull(rstd), F32(inp), F32(weight), inp.numel() / C, C, eps);
  }
}

void CpuOps::DoRmsNormBackward(View dinp, View dweight, View dout, View inp, View weight,
                               View rstd) {
  const int C = static_cast<int>(weight.numel());
  k::RmsNormBackward(F32(dinp), F32(dweight), F32(dout), F32(inp), F32(weight), F32(rstd),
                     inp.numel() / C, C);
}

void CpuOps::DoRopeTable(View table, double theta) {
  k::RopeTable(F32(table), static_cast<int>(table.dim(0)), static_cast<int>(table.dim(1)), theta);
}

void CpuOps::DoRopeForward(View out, View inp, View table, int n_heads, int pos_offset) {
  k::RopeForward(F32(out), out.dim(2), F32(inp), inp.dim(2), F32(table),
                 static_cast<int>(table.dim(0)), static_cast<int>(inp.dim(0)),
                 static_cast<int>(inp.dim(1)), n_heads, static_cast<int>(table.dim(1)), pos_offset);
}

void CpuOps::DoRopeBackward(View dinp, View dout, View table, int n_heads, int pos_offset) {
  k::RopeBackward(F32(dinp), dinp.dim(2), F32(dout), dout.dim(2), F32(table),
                  static_cast<int>(table.dim(0)), static_cast<int>(dout.dim(0)),
                  static_cast<int>(dout.dim(1)), n_heads, static_cast<int>(table.dim(1)),
                  pos_offset);
}

void CpuOps::DoSwigluForward(View out, View inp) {
  const int I = static_cast<int>(out.dim(-1));
  if (out.dtype() == DType::kBF16) {
    k::SwiGluForward(U16(out), F32(inp), out.numel() / I, I);
  } else {
    k::SwiGluForward(F32(out), F32(inp), out.numel() / I, I);
  }
}

void CpuOps::DoSwigluBackward(View dinp, View inp, View dout) {
  const int I = static_cast<int>(dout.dim(-1));
  k::SwiGluBackward(F32(dinp), F32(inp), F32(dout), dout.numel() / I, I);
}

void CpuOps::DoGqaAttentionForward(View out, View state, View scratch, View qkv, int NH, int NKV) {
  const int B = static_cast<int>(out.dim(0)), T = static_cast<int>(out.dim(1));
  const int HS = static_cast<int>(out.dim(2) / NH);
  if (out.dtype() == DType::kBF16) {
    k::GqaForward(U16(out), F32(state), F32OrNull(scratch), F32(qkv), B, T, NH, NKV, HS);
  } else {
    k::GqaForward(F32(out), F32(state), F32OrNull(scratch), F32(qkv), B, T, NH, NKV, HS);
  }
}

void CpuOps::DoGqaAttentionBackward(View dqkv, View scratch, View dout, View qkv, View state,
                                    int NH, int NKV) {
  k::GqaBackward(F32(dqkv), F32OrNull(scratch), F32(dout), F32(qkv), F32(state),
                 static_cast<int>(dout.dim(0)), static_cast<int>(dout.dim(1)), NH, NKV,
                 static_cast<int>(dout.dim(2) / NH));
}

void CpuOps::DoAdamW(const AdamWViews& v, const AdamWArgs& args) {
  const int64_t n = v.param.numel();
  if (v.param16.empty() && v.grad.dtype() == DType::kF32) {
    k::AdamWUpdate(F32(v.param), F32(v.grad), F32(v.m), F32(v.v), n, args);
  } else if (!v.param16.empty() && v.grad.dtype() == v.param16.dtype()) {
    k::AdamWUpdateMixed(F32(v.param), U16(v.grad), F32(v.m), F32(v.v), U16(v.param16), n, args,
                        v.param16.dtype());
  } else if (!v.param16.empty() && v.grad.dtype() == DType::kF32) {
    // fp32-accumulated gradients of mixed precision: the fp32 update, then the working copy's
    // rounding, as AdamWUpdateMixed does after widening.
    k::AdamWUpdate(F32(v.param), F32(v.grad), F32(v.m), F32(v.v), n, args);
    k::FloatToHalf(v.param16.dtype(), U16(v.param16), F32(v.param), n);
  } else {
    Fail(absl::UnimplementedError(
        absl::StrCat("AdamW: no CPU kernel for ", DTypeName(v.grad.dtype()), " gradients with ",
                     v.param16.empty() ? "no 16-bit parameters" : DTypeName(v.param16.dtype()))));
  }
}

}  // namespace dstrain::device
