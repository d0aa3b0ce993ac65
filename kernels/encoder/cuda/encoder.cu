// Encoder kernels. Forward: one block per (b, t) row, threads over channels. Backward: dwpe by one
// thread per (t, c) summing over b; dwte by "leader" blocks (see encoder_cuda.h).
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/encoder/cuda/encoder_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kMaxThreads = 256;

// Threads per block for rows of C channels: a multiple of 32, at most kMaxThreads.
int ThreadsFor(int C) { return std::min(kMaxThreads, (C + kWarpSize - 1) / kWarpSize * kWarpSize); }

// Block = one (b, t) row. W: float, or __nv_bfloat16 (a bf16 token table, widened exactly).
template <typename W>
__global__ void EncoderForwardKernel(float* out, const int32_t* tokens, const W* wte,
                                     const float* wpe, int T, int C) {
  const int64_t row = blockIdx.x;
  const int t = static_cast<int>(row % T);
  const W* w = wte + static_cast<int64_t>(tokens[row]) * C;
  const float* p = wpe + static_cast<int64_t>(t) * C;
  float* o = out + row * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = ToFloat(w[c]) + p[c];
}

// Block = one position t; dwpe[t, c] += Σ_b dout[b, t, c] in b order.
__global__ void EncoderBackwardWpeKernel(float* dwpe, const float* dout, int B, int T, int C) {
  const int t = blockIdx.x;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float sum = 0.0f;
    for (int b = 0; b < B; ++b) sum += dout[(static_cast<int64_t>(b) * T + t) * C + c];
    dwpe[static_cast<int64_t>(t) * C + c] += sum;
  }
}

// Block = one position i of the BT positions. Only the block of a token's first position works:
// it walks the positions j >= i in chunks of blockDim.x, marks those holding the same token, and
// adds their dout rows, chunk by chunk in position order, into dwte[token].
__global__ void EncoderBackwardWteKernel(float* dwte, const float* dout, const int32_t* tokens,
                                         int64_t BT, int C) {
  __shared__ int match[kMaxThreads];
  const int64_t i = blockIdx.x;
  const int32_t token = tokens[i];
  int earlier = 0;
  for (int64_t j = threadIdx.x; j < i; j += blockDim.x) earlier |= tokens[j] == token;
  if (__syncthreads_or(earlier)) return;  // uniform: the whole block leaves

  float* row = dwte + static_cast<int64_t>(token) * C;
  for (int64_t j0 = i; j0 < BT; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    const int is_match = j < BT && tokens[j] == token;
    match[threadIdx.x] = is_match;
    // The barrier also publishes match[] to the whole block.
    if (__syncthreads_or(is_match)) {
      const int count = static_cast<int>(BT - j0 < blockDim.x ? BT - j0 : blockDim.x);
      for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float sum = 0.0f;
        for (int k = 0; k < count; ++k) {
          if (match[k]) sum += dout[(j0 + k) * C + c];
        }
        row[c] += sum;
      }
    }
    __syncthreads();  // match[] is rewritten by the next chunk
  }
}

}  // namespace

template <typename W>
cudaError_t LaunchEncoderForward(float* out, const int32_t* tokens, const W* wte, const float* wpe,
                                 int B, int T, int C, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(B) * T;
  auto* kernel = EncoderForwardKernel<W>;
  DT_LAUNCH(kernel, static_cast<unsigned>(rows), ThreadsFor(C), stream, out, tokens, wte, wpe, T,
            C);
  return cudaGetLastError();
}

template cudaError_t LaunchEncoderForward<float>(float*, const int32_t*, const float*, const float*,
                                                 int, int, int, cudaStream_t);
template cudaError_t LaunchEncoderForward<__nv_bfloat16>(float*, const int32_t*,
                                                         const __nv_bfloat16*, const float*, int,
                                                         int, int, cudaStream_t);

cudaError_t LaunchEncoderBackward(float* dwte, float* dwpe, const float* dout,
                                  const int32_t* tokens, int B, int T, int C, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(B) * T;
  DT_LAUNCH(EncoderBackwardWpeKernel, T, ThreadsFor(C), stream, dwpe, dout, B, T, C);
  DT_LAUNCH(EncoderBackwardWteKernel, static_cast<unsigned>(rows), ThreadsFor(C), stream, dwte,
            dout, tokens, rows, C);
  return cudaGetLastError();
}

}  // namespace dstrain::kernels::gpu
