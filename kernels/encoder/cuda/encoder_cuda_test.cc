// EncoderForward / EncoderBackward on the GPU (and the CPU simulator) vs the float64 reference.
#include "kernels/encoder/cuda/encoder_cuda.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "kernels/encoder/encoder_reference.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::RandomInts;
using testing::ToDouble;

struct Shape {
  int B, T, C, V, maxT;
};

// Every launch branch: C below, at and above one warp and above the 256-thread block (several
// channels per thread); T = 1; B*T above the block size with a tiny vocabulary (many repeated
// tokens spread over several chunks of the leader scan); maxT > T (rows of dwpe left alone).
const Shape kShapes[] = {{1, 1, 1, 1, 1},    {2, 3, 7, 5, 4},   {4, 16, 33, 11, 20},
                         {3, 1, 17, 2, 1},   {4, 40, 5, 3, 41}, {2, 64, 300, 50, 64},
                         {1, 70, 32, 70, 70}};

// Each float add rounds by at most 2^-24 of a partial sum bounded by k + 1 for k additions of
// values in [-1, 1]; k <= B*T per micro-step.
double BackwardAbsTol(int64_t additions) {
  const double k = static_cast<double>(additions);
  return std::min(1e-3, (k + 1) * (k + 1) * 6e-8);
}

TEST(EncoderCudaTest, ForwardMatchesReference) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.B << "x" << s.T << "x" << s.C);
    const int64_t n = int64_t{s.B} * s.T * s.C;
    const auto tokens = RandomInts(int64_t{s.B} * s.T, 1, s.V);
    const auto wte = RandomFloats(int64_t{s.V} * s.C, 2);
    const auto wpe = RandomFloats(int64_t{s.maxT} * s.C, 3);
    DeviceBuffer<int32_t> d_tokens(tokens);
    DeviceBuffer<float> d_wte(wte), d_wpe(wpe);
    DeviceBuffer<float> out(std::vector<float>(n + 1, -9.0f));  // one guard element
    ASSERT_TRUE(
        EncoderForward(out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), s.B, s.T, s.C, nullptr)
            .ok());
    std::vector<double> want(n);
    EncoderForwardReference(want.data(), tokens.data(), ToDouble(wte).data(), ToDouble(wpe).data(),
                            s.B, s.T, s.C);
    std::vector<float> got = out.ToHost();
    EXPECT_EQ(got[n], -9.0f);
    got.pop_back();
    EXPECT_TRUE(AllClose(got, want, 0, 6e-8));  // one correctly rounded add
  }
}

// The bf16 table: each row widened exactly, so the result is the fp32 kernel's on the widened
// table, to the bit.
TEST(EncoderCudaTest, Bf16TableIsTheWidenedTable) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.B << "x" << s.T << "x" << s.C);
    const int64_t n = int64_t{s.B} * s.T * s.C, table = int64_t{s.V} * s.C;
    const auto tokens = RandomInts(int64_t{s.B} * s.T, 4, s.V);
    const auto wte = RandomFloats(table, 5);
    const auto wpe = RandomFloats(int64_t{s.maxT} * s.C, 6);
    std::vector<__nv_bfloat16> wte16(table);
    std::vector<float> widened(table);
    for (int64_t i = 0; i < table; ++i) {
      wte16[i] = __float2bfloat16_rn(wte[i]);
      widened[i] = __bfloat162float(wte16[i]);
    }
    DeviceBuffer<int32_t> d_tokens(tokens);
    DeviceBuffer<__nv_bfloat16> d_wte16(wte16);
    DeviceBuffer<float> d_widened(widened), d_wpe(wpe), got(n), want(n);
    ASSERT_TRUE(EncoderForwardBf16(got.get(), d_tokens.get(), d_wte16.get(), d_wpe.get(), s.B, s.T,
                                   s.C, nullptr)
                    .ok());
    ASSERT_TRUE(EncoderForward(want.get(), d_tokens.get(), d_widened.get(), d_wpe.get(), s.B, s.T,
                               s.C, nullptr)
                    .ok());
    EXPECT_EQ(got.ToHost(), want.ToHost());
  }
}

TEST(EncoderCudaTest, BackwardAccumulatesOverTwoMicroStepsDeterministically) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.B << "x" << s.T << "x" << s.C);
    const int64_t rows = int64_t{s.B} * s.T;
    const auto tokens = RandomInts(rows, 4, s.V);
    const auto dwte0 = RandomFloats(int64_t{s.V} * s.C, 5);
    const auto dwpe0 = RandomFloats(int64_t{s.maxT} * s.C, 6);
    DeviceBuffer<int32_t> d_tokens(tokens);
    DeviceBuffer<float> dwte(dwte0), dwpe(dwpe0);
    auto want_dwte = ToDouble(dwte0), want_dwpe = ToDouble(dwpe0);
    std::vector<std::vector<float>> douts;
    for (int step = 0; step < 2; ++step) {
      douts.push_back(RandomFloats(rows * s.C, 7 + step));
      DeviceBuffer<float> dout(douts.back());
      ASSERT_TRUE(EncoderBackward(dwte.get(), dwpe.get(), dout.get(), d_tokens.get(), s.B, s.T, s.C,
                                  nullptr)
                      .ok());
      EncoderBackwardReference(want_dwte.data(), want_dwpe.data(), ToDouble(douts.back()).data(),
                               tokens.data(), s.B, s.T, s.C);
    }
    const std::vector<float> got_dwte = dwte.ToHost(), got_dwpe = dwpe.ToHost();
    EXPECT_TRUE(AllClose(got_dwte, want_dwte, BackwardAbsTol(2 * rows), 0));
    EXPECT_TRUE(AllClose(got_dwpe, want_dwpe, BackwardAbsTol(2 * rows), 0));

    // Bitwise the same when replayed.
    dwte.Upload(dwte0);
    dwpe.Upload(dwpe0);
    for (const auto& d : douts) {
      DeviceBuffer<float> dout(d);
      ASSERT_TRUE(EncoderBackward(dwte.get(), dwpe.get(), dout.get(), d_tokens.get(), s.B, s.T, s.C,
                                  nullptr)
                      .ok());
    }
    EXPECT_EQ(dwte.ToHost(), got_dwte);
    EXPECT_EQ(dwpe.ToHost(), got_dwpe);
  }
}

TEST(EncoderCudaTest, EmptyAndInvalidShapes) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(EncoderForward(nullptr, nullptr, nullptr, nullptr, 0, 5, 3, nullptr).ok());
  EXPECT_TRUE(EncoderBackward(nullptr, nullptr, nullptr, nullptr, 2, 0, 3, nullptr).ok());
  EXPECT_EQ(EncoderForward(nullptr, nullptr, nullptr, nullptr, -1, 5, 3, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncoderForward(nullptr, nullptr, nullptr, nullptr, 1, 1, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
