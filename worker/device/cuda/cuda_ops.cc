#include "worker/device/cuda/cuda_ops.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/adamw/cuda/adamw_cuda.h"
#include "kernels/attention/cuda/attention_cuda.h"
#include "kernels/cast/cuda/cast_cuda.h"
#include "kernels/crossentropy/cuda/crossentropy_cuda.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/encoder/cuda/encoder_cuda.h"
#include "kernels/gelu/cuda/gelu_cuda.h"
#include "kernels/gqa/cuda/gqa_cuda.h"
#include "kernels/layernorm/cuda/layernorm_cuda.h"
#include "kernels/residual/cuda/residual_cuda.h"
#include "kernels/rmsnorm/cuda/rmsnorm_cuda.h"
#include "kernels/rope/cuda/rope_cuda.h"
#include "kernels/swiglu/cuda/swiglu_cuda.h"
#include "worker/device/cuda/pinned_host_allocator.h"

namespace dstrain::device {
namespace {

namespace g = ::dstrain::kernels::gpu;

float* F32(const View& v) { return v.as<float>(); }
float* F32OrNull(const View& v) { return v.empty() ? nullptr : v.as<float>(); }
const int32_t* I32(const View& v) { return v.as<const int32_t>(); }
__nv_bfloat16* Bf16(const View& v) { return v.as<__nv_bfloat16>(); }

}  // namespace

absl::StatusOr<std::unique_ptr<CudaOps>> CudaOps::Create(const Options& options) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device visible (",
                     e != cudaSuccess ? cudaGetErrorName(e) : "the runtime sees 0 devices", ")"));
  }
  if (options.device < 0 || options.device >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", options.device, " is not visible (", count, " visible)"));
  }
  DT_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  cudaStream_t compute = nullptr, comm = nullptr;
  DT_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&compute));
  DT_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&comm));
  auto allocator = std::make_unique<CudaAllocator>(options.device, compute, options.limit_bytes);
  std::unique_ptr<CudaOps> ops(new CudaOps(options, compute, comm, std::move(allocator)));
  g::CublasContext::Options blas;
  blas.allow_tf32 = options.allow_tf32;
  auto cublas = g::CublasContext::Create(compute, blas);
  if (!cublas.ok()) return cublas.status();
  ops->cublas_ = std::move(*cublas);
  DT_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ops->order_event_));
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, options.device) == cudaSuccess) {
    ops->description_ = absl::StrCat("cuda:", options.device, " (", prop.name, ")");
  }
  return ops;
}

CudaOps::CudaOps(const Options& options, cudaStream_t compute, cudaStream_t comm,
                 std::unique_ptr<CudaAllocator> allocator)
    : Ops(allocator.get()),
      device_(options.device),
      compute_(compute),
      comm_(comm),
      allocator_(std::move(allocator)),
      description_(absl::StrCat("cuda:", options.device)) {}

CudaOps::~CudaOps() {
  cudaStreamSynchronize(comm_);
  cudaStreamSynchronize(compute_);
  for (tensor::Tensor& w : workspace_) w = tensor::Tensor();
  cublas_.reset();
  if (order_event_ != nullptr) cudaEventDestroy(order_event_);
  for (cudaEvent_t e : fences_) cudaEventDestroy(e);
  allocator_.reset();  // returns its cache to the driver, after the streams are idle
  cudaStreamDestroy(comm_);
  cudaStreamDestroy(compute_);
}

void CudaOps::Check(absl::Status status) {
  if (!status.ok()) Fail(std::move(status));
}

void CudaOps::CheckCuda(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return;
  cudaGetLastError();  // the error is ours now
  Fail(absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorName(error), " (",
                                        cudaGetErrorString(error), ") on cuda:", device_)));
}

void* CudaOps::NativeStream(Stream stream) {
  return stream == Stream::kComm ? static_cast<void*>(comm_) : static_cast<void*>(compute_);
}

void CudaOps::WaitFor(Stream waiter, Stream producer) {
  if (waiter == producer || failed()) return;
  cudaStream_t from = producer == Stream::kComm ? comm_ : compute_;
  cudaStream_t to = waiter == Stream::kComm ? comm_ : compute_;
  CheckCuda(cudaEventRecord(order_event_, from), "cudaEventRecord");
  CheckCuda(cudaStreamWaitEvent(to, order_event_, 0), "cudaStreamWaitEvent");
}

absl::Status CudaOps::DoSynchronize() {
  DT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(comm_));
  DT_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(compute_));
  return absl::OkStatus();
}

int64_t CudaOps::AttentionStateElements(int B, int T, int C, int NH) const {
  return CudaSizing().AttentionStateElements(B, T, C, NH);
}

int64_t CudaOps::AttentionScratchElements(int B, int T, int C, int NH) const {
  return CudaSizing().AttentionScratchElements(B, T, C, NH);
}

int64_t CudaOps::GqaStateElements(int B, int T, int NH, int NKV, int HS) const {
  return CudaSizing().GqaStateElements(B, T, NH, NKV, HS);
}

int64_t CudaOps::GqaScratchElements(int B, int T, int NH, int NKV, int HS) const {
  return CudaSizing().GqaScratchElements(B, T, NH, NKV, HS);
}

View CudaOps::Workspace(int slot, DType dtype, int64_t count) {
  tensor::Tensor& w = workspace_[slot];
  const size_t bytes = static_cast<size_t>(count) * DTypeSize(dtype);
  if (!w.defined() || w.bytes() < bytes) {
    auto grown =
        tensor::Tensor::Empty(allocator(), DType::kU16, {static_cast<int64_t>(bytes + 1) / 2},
                              tensor::MemoryCategory::kOther);
    if (!grown.ok()) {
      Fail(grown.status());
      return View();
    }
    w = std::move(*grown);
  }
  return View(w.raw(), dtype, {count}, device());
}

View CudaOps::AsF32(View x, int slot) {
  if (x.dtype() == DType::kF32) return x;
  View wide = Workspace(slot, DType::kF32, x.numel());
  if (!wide.empty())
    Check(g::Cast(wide.data(), DType::kF32, x.data(), x.dtype(), x.numel(), stream()));
  return wide;
}

View CudaOps::AsBf16(View x, int slot) {
  if (x.dtype() == DType::kBF16) return x;
  View narrow = Workspace(slot, DType::kBF16, x.numel());
  if (!narrow.empty()) {
    Check(g::Cast(narrow.data(), DType::kBF16, x.data(), x.dtype(), x.numel(), stream()));
  }
  return narrow;
}

void CudaOps::DoCopy(View dst, View src) {
  CheckCuda(
      cudaMemcpyAsync(dst.data(), src.data(), dst.bytes(), cudaMemcpyDeviceToDevice, stream()),
      "Copy");
}

void CudaOps::DoCopyFromHost(View dst, const void* src) {
  // From pageable host memory the call returns once the bytes are staged: `src` may be reused.
  // From page-locked memory the copy is truly asynchronous, so the contract (src reusable on
  // return) needs a wait for it.
  CheckCuda(cudaMemcpyAsync(dst.data(), src, dst.bytes(), cudaMemcpyHostToDevice, stream()),
            "CopyFromHost");
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, src) != cudaSuccess) {
    (void)cudaGetLastError();  // an unknown pointer is pageable memory: nothing to wait for
    return;
  }
  if (attr.type == cudaMemoryTypeHost) {
    CheckCuda(cudaStreamSynchronize(stream()), "CopyFromHost");
  }
}

void CudaOps::DoCopyToHost(void* dst, View src) {
  CheckCuda(cudaMemcpyAsync(dst, src.data(), src.bytes(), cudaMemcpyDeviceToHost, stream()),
            "CopyToHost");
  CheckCuda(cudaStreamSynchronize(stream()), "CopyToHost");
}

absl::StatusOr<std::unique_ptr<tensor::Allocator>> CudaOps::NewPinnedHostAllocator(
    int64_t limit_bytes) {
  return std::make_unique<PinnedHostAllocator>(limit_bytes);
}

void CudaOps::DoCopyFromHostAsync(View dst, const void* src) {
  CheckCuda(cudaMemcpyAsync(dst.data(), src, dst.bytes(), cudaMemcpyHostToDevice, stream()),
            "CopyFromHostAsync");
}

void CudaOps::DoCopyToHostAsync(void* dst, View src) {
  CheckCuda(cudaMemcpyAsync(dst, src.data(), src.bytes(), cudaMemcpyDeviceToHost, stream()),
            "CopyToHostAsync");
}

int CudaOps::DoRecordFence() {
  int fence;
  if (!free_fences_.empty()) {
    fence = free_fences_.back();
    free_fences_.pop_back();
  } else {
    cudaEvent_t e = nullptr;
    const cudaError_t created = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    CheckCuda(created, "RecordFence: cudaEventCreateWithFlags");
    if (created != cudaSuccess) return -1;
    fence = static_cast<int>(fences_.size());
    fences_.push_back(e);
  }
  CheckCuda(cudaEventRecord(fences_[fence], stream()), "RecordFence: cudaEventRecord");
  return fence;
}

absl::Status CudaOps::DoWaitFence(int fence) {
  if (fence >= static_cast<int>(fences_.size())) {
    return absl::InternalError(absl::StrCat("WaitFence: no fence ", fence, " on cuda:", device_));
  }
  free_fences_.push_back(fence);
  DT_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(fences_[fence]));
  return absl::OkStatus();
}

void CudaOps::DoFill(View x, float value) {
  Check(g::FillTyped(x.data(), x.dtype(), value, x.numel(), stream()));
}

void CudaOps::DoConvert(View dst, View src) {
  Check(g::Cast(dst.data(), dst.dtype(), src.data(), src.dtype(), dst.numel(), stream()));
}

void CudaOps::DoAddInto(View acc, View x) {
  const View add = AsF32(x, 0);
  if (add.empty()) return;
  if (acc.dtype() == DType::kF32) {
    Check(g::AddInPlace(F32(acc), F32(add), acc.numel(), stream()));
  } else {
    Check(g::AccumulateIntoHalf(acc.data(), acc.dtype(), F32(add), acc.numel(), stream()));
  }
}

void CudaOps::DoScale(View x, double s) {
  const View wide = AsF32(x, 0);
  if (wide.empty()) return;
  Check(g::Scale(F32(wide), x.numel(), static_cast<float>(s), stream()));
  if (x.dtype() != DType::kF32) {
    Check(g::Cast(x.data(), x.dtype(), wide.data(), DType::kF32, x.numel(), stream()));
  }
}

absl::StatusOr<double> CudaOps::DoSumSquares(absl::Span<const View> xs) {
  const View total = Workspace(1, DType::kF32, 2);  // one double
  if (total.empty()) return status();
  double* sum = static_cast<double*>(total.data());
  CheckCuda(cudaMemsetAsync(sum, 0, sizeof(double), stream()), "SumSquares");
  for (const View& x : xs) {
    const View wide = AsF32(x, 0);
    if (wide.empty()) return status();
    Check(g::AddSumSquares(sum, F32(wide), x.numel(), stream()));
  }
  double host = 0;
  CheckCuda(cudaMemcpyAsync(&host, sum, sizeof(double), cudaMemcpyDeviceToHost, stream()),
            "SumSquares");
  CheckCuda(cudaStreamSynchronize(stream()), "SumSquares");
  if (failed()) return status();
  return host;
}

void CudaOps::DoEncoderForward(View out, View tokens, View wte, View wpe) {
  const int B = static_cast<int>(tokens.dim(0)), T = static_cast<int>(tokens.dim(1));
  const int C = static_cast<int>(out.dim(-1));
  if (wte.dtype() == DType::kBF16) {
    Check(g::EncoderForwardBf16(F32(out), I32(tokens), Bf16(wte), F32(wpe), B, T, C, stream()));
  } else {
    Check(g::EncoderForward(F32(out), I32(tokens), F32(wte), F32(wpe), B, T, C, stream()));
  }
}

void CudaOps::DoEncoderBackward(View dwte, View dwpe, View dout, View tokens) {
  Check(g::EncoderBackward(F32(dwte), F32(dwpe), F32(dout), I32(tokens),
                           static_cast<int>(tokens.dim(0)), static_cast<int>(tokens.dim(1)),
                           static_cast<int>(dout.dim(-1)), stream()));
}

void CudaOps::DoLayerNormForward(View out, View mean, View rstd, View inp, View weight, View bias) {
  const int C = static_cast<int>(weight.numel());
  Check(g::LayerNormForward(F32(out), F32OrNull(mean), F32OrNull(rstd), F32(inp), F32(weight),
                            F32(bias), inp.numel() / C, C, stream()));
}

void CudaOps::DoLayerNormBackward(View dinp, View dweight, View dbias, View dout, View inp,
                                  View weight, View mean, View rstd) {
  const int C = static_cast<int>(weight.numel());
  Check(g::LayerNormBackward(F32(dinp), F32(dweight), F32(dbias), F32(dout), F32(inp), F32(weight),
                             F32(mean), F32(rstd), inp.numel() / C, C, stream()));
}

void CudaOps::DoLinearForward(View out, View inp, View weight, View bias,
                              const LinearOptions& options) {
  const int64_t K = weight.dim(-1), N = weight.numel() / K, M = inp.numel() / K;
  // With GELU after the layer the product goes to output_gelu and out receives gelu of it.
  float* product = options.output_gelu.empty() ? F32(out) : F32(options.output_gelu);
  if (weight.dtype() == DType::kF32 && options.compute == DType::kF32) {
    Check(g::MatmulForward(*cublas_, product, F32(inp), F32(weight), F32OrNull(bias), M, K, N));
  } else {
    const View inp16 = AsBf16(inp, 0), weight16 = AsBf16(weight, 1);
    if (inp16.empty() || weight16.empty()) return;
    Check(g::MatmulForwardMixed(*cublas_, product, Bf16(inp16), Bf16(weight16), F32OrNull(bias), M,
                                K, N));
  }
  if (!options.output_gelu.empty()) Check(g::GeluForward(F32(out), product, M * N, stream()));
}

void CudaOps::DoLinearBackward(View dinp, View dweight, View dbias, View dout, View inp,
                               View weight, const LinearOptions& options) {
  const int64_t K = weight.dim(-1), N = weight.numel() / K, M = inp.numel() / K;
  if (weight.dtype() == DType::kF32 && options.compute == DType::kF32) {
    // The fp32 kernel always accumulates into dweight.
    if (options.overwrite_dweight) Check(g::Fill(F32(dweight), N * K, 0.f, stream()));
    Check(g::MatmulBackward(*cublas_, F32(dinp), F32(dweight), F32OrNull(dbias), F32(dout),
                            F32(inp), F32(weight), M, K, N));
  } else {
    const View dout16 = AsBf16(dout, 0), inp16 = AsBf16(inp, 1), weight16 = AsBf16(weight, 2);
    if (dout16.empty() || inp16.empty() || weight16.empty()) return;
    Check(g::MatmulBackwardMixed(*cublas_, F32(dinp), F32(dweight), F32OrNull(dbias), Bf16(dout16),
                                 F32(dout), Bf16(inp16), Bf16(weight16), M, K, N,
                                 /*accumulate_dweight=*/!options.overwrite_dweight));
  }
  // The input was gelu(input_gelu): the chain rule through GELU, in place.
  if (!options.input_gelu.empty()) {
    Check(g::GeluBackward(F32(dinp), F32(options.input_gelu), F32(dinp), M * K, stream()));
  }
}

void CudaOps::DoAttentionForward(View out, View state, View qkv, int NH, DType /*products*/) {
  Check(g::AttentionForward(*cublas_, F32(out), F32(state), F32(qkv), static_cast<int>(out.dim(0)),
                            static_cast<int>(out.dim(1)), static_cast<int>(out.dim(2)), NH));
}

void CudaOps::DoAttentionBackward(View dqkv, View /*scratch*/, View dout, View qkv, View state,
                                  int NH, DType /*products*/) {
  Check(g::AttentionBackward(*cublas_, F32(dqkv), F32(dout), F32(qkv), F32(state),
                             static_cast<int>(dout.dim(0)), static_cast<int>(dout.dim(1)),
                             static_cast<int>(dout.dim(2)), NH));
}

void CudaOps::DoRmsNormForward(View out, View rstd, View inp, View weight, float eps) {
  const int C = static_cast<int>(weight.numel());
  Check(g::RmsNormForward(F32(out), F32OrNull(rstd), F32(inp), F32(weight), inp.numel() / C, C, eps,
                          stream()));
}

void CudaOps::DoRmsNormBackward(View dinp, View dweight, View dout, View inp, View weight,
                                View rstd) {
  const int C = static_cast<int>(weight.numel());
  Check(g::RmsNormBackward(F32(dinp), F32(dweight), F32(dout), F32(inp), F32(weight), F32(rstd),
                           inp.numel() / C, C, stream()));
}

void CudaOps::DoRopeTable(View table, double theta) {
  Check(g::RopeTable(F32(table), static_cast<int>(table.dim(0)), static_cast<int>(table.dim(1)),
                     theta, stream()));
}

void CudaOps::DoRopeForward(View out, View inp, View table, int n_heads, int pos_offset) {
  Check(g::RopeForward(F32(out), out.dim(2), F32(inp), inp.dim(2), F32(table),
                       static_cast<int>(table.dim(0)), static_cast<int>(inp.dim(0)),
                       static_cast<int>(inp.dim(1)), n_heads, static_cast<int>(table.dim(1)),
                       pos_offset, stream()));
}

void CudaOps::DoRopeBackward(View dinp, View dout, View table, int n_heads, int pos_offset) {
  Check(g::RopeBackward(F32(dinp), dinp.dim(2), F32(dout), dout.dim(2), F32(table),
                        static_cast<int>(table.dim(0)), static_cast<int>(dout.dim(0)),
                        static_cast<int>(dout.dim(1)), n_heads, static_cast<int>(table.dim(1)),
                        pos_offset, stream()));
}

void CudaOps::DoSwigluForward(View out, View inp) {
  const int I = static_cast<int>(out.dim(-1));
  Check(g::SwiGluForward(F32(out), F32(inp), out.numel() / I, I, stream()));
}

void CudaOps::DoSwigluBackward(View dinp, View inp, View dout) {
  const int I = static_cast<int>(dout.dim(-1));
  Check(g::SwiGluBackward(F32(dinp), F32(inp), F32(dout), dout.numel() / I, I, stream()));
}

void CudaOps::DoGqaAttentionForward(View out, View state, View /*scratch*/, View qkv, int NH,
                                    int NKV) {
  Check(g::GqaForward(*cublas_, F32(out), F32(state), F32(qkv), static_cast<int>(out.dim(0)),
                      static_cast<int>(out.dim(1)), NH, NKV, static_cast<int>(out.dim(2) / NH)));
}

void CudaOps::DoGqaAttentionBackward(View dqkv, View /*scratch*/, View dout, View qkv, View state,
                                     int NH, int NKV) {
  Check(g::GqaBackward(*cublas_, F32(dqkv), F32(dout), F32(qkv), F32(state),
                       static_cast<int>(dout.dim(0)), static_cast<int>(dout.dim(1)), NH, NKV,
                       static_cast<int>(dout.dim(2) / NH)));
}

void CudaOps::DoGeluForward(View out, View inp) {
  Check(g::GeluForward(F32(out), F32(inp), inp.numel(), stream()));
}

void CudaOps::DoGeluBackward(View dinp, View inp, View dout) {
  Check(g::GeluBackward(F32(dinp), F32(inp), F32(dout), inp.numel(), stream()));
}

void CudaOps::DoCrossEntropy(View losses, View logits, View targets, int V, float dlogits_scale) {
  const int64_t N = targets.numel();
  Check(g::CrossEntropyForwardBackward(F32OrNull(losses), F32(logits), I32(targets), N, V,
                                       static_cast<int>(logits.numel() / N), dlogits_scale,
                                       stream()));
}

absl::StatusOr<double> CudaOps::DoMeanLoss(View losses) {
  // N floats to the host and the mean there, in double and in row order: the CPU's arithmetic.
  std::vector<float> host(losses.numel());
  DoCopyToHost(host.data(), losses);
  if (failed()) return status();
  double sum = 0;
  for (float l : host) sum += l;
  return sum / static_cast<double>(host.size());
}

void CudaOps::DoAdamW(const AdamWViews& v, const AdamWArgs& args) {
  const int64_t n = v.param.numel();
  if (v.param16.empty() && v.grad.dtype() == DType::kF32) {
    Check(g::AdamWUpdate(F32(v.param), F32(v.grad), F32(v.m), F32(v.v), n, args, stream()));
  } else if (v.param16.dtype() == DType::kBF16 && v.grad.dtype() == DType::kBF16) {
    Check(g::AdamWUpdateMixed(Bf16(v.param16), F32(v.param), v.grad.as<const __nv_bfloat16>(),
                              F32(v.m), F32(v.v), n, args, stream()));
  } else if (v.param16.dtype() == DType::kBF16 && v.grad.dtype() == DType::kF32) {
    Check(g::AdamWUpdateMixed(Bf16(v.param16), F32(v.param), F32(v.grad), F32(v.m), F32(v.v), n,
                              args, stream()));
  } else if (v.param16.dtype() == DType::kF16 && v.grad.dtype() == DType::kF16) {
    Check(g::AdamWUpdateMixed(v.param16.as<__half>(), F32(v.param), v.grad.as<const __half>(),
                              F32(v.m), F32(v.v), n, args, stream()));
  } else if (v.param16.dtype() == DType::kF16 && v.grad.dtype() == DType::kF32) {
    Check(g::AdamWUpdateMixed(v.param16.as<__half>(), F32(v.param), F32(v.grad), F32(v.m), F32(v.v),
                              n, args, stream()));
  } else {
    Fail(absl::UnimplementedError(absl::StrCat("AdamW: no CUDA kernel for ",
                                               DTypeName(v.grad.dtype()),
                                               " gradients without a "
                                               "16-bit parameter copy")));
  }
}

}  // namespace dstrain::device
