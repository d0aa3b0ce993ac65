// reduce.cuh on the GPU (reduce_test) and on the CPU simulator (reduce_test_sim).
#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/reduce_test_kernels.h"
#include "kernels/cuda_common/test_util.h"

namespace dstrain::kernels::gpu::testing {
namespace {

TEST(ReduceTest, WarpSumAndMax) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const int warps = 7;  // not a multiple of the 4 warps per block: the last block has idle warps
  const std::vector<float> in = RandomFloats(warps * 32, 1);
  DeviceBuffer<float> d_in(in), sums(warps), maxes(warps);
  ASSERT_EQ(LaunchWarpReductions(sums.get(), maxes.get(), d_in.get(), warps, nullptr), cudaSuccess);
  const std::vector<float> got_sums = sums.ToHost(), got_maxes = maxes.ToHost();
  for (int w = 0; w < warps; ++w) {
    double sum = 0;
    float max = in[w * 32];
    for (int l = 0; l < 32; ++l) {
      sum += in[w * 32 + l];
      max = std::max(max, in[w * 32 + l]);
    }
    EXPECT_NEAR(got_sums[w], sum, 1e-5) << w;
    EXPECT_EQ(got_maxes[w], max) << w;
  }
}

TEST(ReduceTest, BlockSumEveryBlockSize) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t n = 5000, per_block = 1777;  // 3 blocks, the last one partial
  std::vector<double> in(n);
  for (int64_t i = 0; i < n; ++i) in[i] = std::sin(0.37 * i) + 0.001 * i;
  for (int threads : {32, 96, 256, 1024}) {
    SCOPED_TRACE(threads);
    DeviceBuffer<double> d_in(in), out(3);
    ASSERT_EQ(LaunchBlockSums(out.get(), d_in.get(), n, per_block, threads, nullptr), cudaSuccess);
    const std::vector<double> got = out.ToHost();
    for (int b = 0; b < 3; ++b) {
      double want = 0;
      for (int64_t i = b * per_block; i < std::min(n, (b + 1) * per_block); ++i) want += in[i];
      EXPECT_NEAR(got[b], want, 1e-9) << b;
    }
  }
}

TEST(ReduceTest, ColumnSumsAccumulate) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (auto [rows, cols] : {std::pair<int64_t, int>{1, 1}, {33, 31}, {100, 65}, {0, 5}}) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
    const std::vector<float> in = RandomFloats(rows * cols, 2);
    const std::vector<float> init = RandomFloats(cols, 3);
    DeviceBuffer<float> d_in(in), sums(init), squares(init);
    ASSERT_EQ(LaunchColumnSums(sums.get(), squares.get(), d_in.get(), rows, cols, nullptr),
              cudaSuccess);
    std::vector<double> want_sums(cols), want_squares(cols);
    for (int c = 0; c < cols; ++c) {
      want_sums[c] = want_squares[c] = init[c];
      for (int64_t r = 0; r < rows; ++r) {
        want_sums[c] += in[r * cols + c];
        want_squares[c] += double(in[r * cols + c]) * in[r * cols + c];
      }
    }
    EXPECT_TRUE(AllClose(sums.ToHost(), want_sums, 1e-5, 1e-6));
    EXPECT_TRUE(AllClose(squares.ToHost(), want_squares, 1e-5, 1e-6));
  }
}

}  // namespace
}  // namespace dstrain::kernels::gpu::testing
