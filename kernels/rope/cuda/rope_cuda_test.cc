// RopeTable / RopeForward / RopeBackward on the GPU (and the CPU simulator) vs the float64
// reference.
#include "kernels/rope/cuda/rope_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "kernels/rope/rope_reference.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int B, T, H, D, pos_offset;
};

// Odd D/2 (3, 17), Llama head sizes 64 and 128, several heads, and an offset deep into the table;
// the last shape has more pairs than one grid-stride pass of 1024·256 threads.
const Shape kShapes[] = {{1, 1, 1, 2, 0},   {2, 5, 3, 6, 0},       {1, 7, 2, 34, 0},
                         {2, 16, 4, 64, 0}, {2, 12, 2, 128, 4080}, {2, 130, 32, 128, 0}};

constexpr int kMaxPos = 4096 + 16;
constexpr double kTheta = 10000.0;

// Table: one rounding of a float64 value, ≤ 2^-25 for values in [-1, 1]; on a GPU, CUDA's double
// pow/cos/sin (≤ 2 double ulp) can tip a rounding tie the other way: ≤ 1.5 float ulp ≤ 9e-8.
// Rotation: as rope_test.cc, ≤ 2·2^-25 from the table and three roundings: 3e-7 absolute.
constexpr double kTableAbsTol = 9e-8;
constexpr double kRotateAbsTol = 3e-7;

std::vector<float> DeviceTable(int max_pos, int D, double theta) {
  DeviceBuffer<float> table(int64_t{max_pos} * D);
  EXPECT_TRUE(RopeTable(table.get(), max_pos, D, theta, nullptr).ok());
  return table.ToHost();
}

TEST(RopeCudaTest, TableMatchesFloat64) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (double theta : {10000.0, 500000.0}) {
    for (int D : {6, 128}) {
      SCOPED_TRACE(::testing::Message() << "theta=" << theta << " D=" << D);
      const auto table = DeviceTable(kMaxPos, D, theta);
      std::vector<double> want(table.size());
      for (int p = 0; p < kMaxPos; ++p) {
        for (int i = 0; i < D / 2; ++i) {
          const double a = RopeAngleReference(p, i, D, theta);
          want[int64_t{p} * D + i] = std::cos(a);
          want[int64_t{p} * D + D / 2 + i] = std::sin(a);
        }
      }
      EXPECT_TRUE(AllClose(table, want, kTableAbsTol, 0));
    }
  }
}

TEST(RopeCudaTest, ForwardAndBackwardMatchReference) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " H=" << s.H << " D=" << s.D
                                      << " offset=" << s.pos_offset);
    DeviceBuffer<float> table(DeviceTable(kMaxPos, s.D, kTheta));
    const int64_t n = int64_t{s.B} * s.T * s.H * s.D, row = int64_t{s.H} * s.D;
    const auto x = RandomFloats(n, 1), dy = RandomFloats(n, 2);
    DeviceBuffer<float> d_x(x), d_dy(dy), y(std::vector<float>(n + 1, -9.f)),
        dx(std::vector<float>(n + 1, 55.f));
    ASSERT_TRUE(RopeForward(y.get(), row, d_x.get(), row, table.get(), kMaxPos, s.B, s.T, s.H, s.D,
                            s.pos_offset, nullptr)
                    .ok());
    ASSERT_TRUE(RopeBackward(dx.get(), row, d_dy.get(), row, table.get(), kMaxPos, s.B, s.T, s.H,
                             s.D, s.pos_offset, nullptr)
                    .ok());
    std::vector<double> want_y(n), want_dx(n);
    RopeForwardReference(want_y.data(), ToDouble(x).data(), s.B, s.T, s.H, s.D, kTheta,
                         s.pos_offset);
    RopeBackwardReference(want_dx.data(), ToDouble(dy).data(), s.B, s.T, s.H, s.D, kTheta,
                          s.pos_offset);
    std::vector<float> got_y = y.ToHost(), got_dx = dx.ToHost();
    EXPECT_EQ(got_y[n], -9.f);
    EXPECT_EQ(got_dx[n], 55.f);
    got_y.pop_back();
    got_dx.pop_back();
    EXPECT_TRUE(AllClose(got_y, want_y, kRotateAbsTol, 0));
    EXPECT_TRUE(AllClose(got_dx, want_dx, kRotateAbsTol, 0));
  }
}

// q and k inside a fused (B, T, (NH + 2·NKV)·D) qkv buffer, rotated in place by one call with
// n_heads = NH + NKV; v is untouched. The backward pass in place restores the input to rounding.
TEST(RopeCudaTest, StridedInPlaceOnFusedQkvLeavesVAlone) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const int B = 2, T = 9, NH = 4, NKV = 2, D = 16;
  const int64_t stride = int64_t{NH + 2 * NKV} * D, rot = int64_t{NH + NKV} * D;
  DeviceBuffer<float> table(DeviceTable(kMaxPos, D, kTheta));
  const auto qkv = RandomFloats(B * T * stride, 3);
  DeviceBuffer<float> d_qkv(qkv);
  ASSERT_TRUE(RopeForward(d_qkv.get(), stride, d_qkv.get(), stride, table.get(), kMaxPos, B, T,
                          NH + NKV, D, 0, nullptr)
                  .ok());
  const std::vector<float> rotated = d_qkv.ToHost();
  std::vector<double> qk(B * T * rot), want(B * T * rot);
  for (int64_t r = 0; r < B * T; ++r) {
    for (int64_t c = 0; c < rot; ++c) qk[r * rot + c] = qkv[r * stride + c];
  }
  RopeForwardReference(want.data(), qk.data(), B, T, NH + NKV, D, kTheta, 0);
  for (int64_t r = 0; r < B * T; ++r) {
    for (int64_t c = 0; c < stride; ++c) {
      if (c < rot) {
        ASSERT_NEAR(rotated[r * stride + c], want[r * rot + c], kRotateAbsTol) << r << " " << c;
      } else {
        ASSERT_EQ(rotated[r * stride + c], qkv[r * stride + c]) << "v changed at " << r << " " << c;
      }
    }
  }
  ASSERT_TRUE(RopeBackward(d_qkv.get(), stride, d_qkv.get(), stride, table.get(), kMaxPos, B, T,
                           NH + NKV, D, 0, nullptr)
                  .ok());
  EXPECT_TRUE(AllClose(d_qkv.ToHost(), ToDouble(qkv), 2 * kRotateAbsTol, 0));
}

TEST(RopeCudaTest, EmptyAndInvalidArguments) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceBuffer<float> table(DeviceTable(4, 8, kTheta));
  EXPECT_TRUE(RopeForward(nullptr, 8, nullptr, 8, table.get(), 4, 0, 4, 1, 8, 0, nullptr).ok());
  EXPECT_TRUE(RopeTable(nullptr, 0, 8, kTheta, nullptr).ok());
  const auto invalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(RopeTable(table.get(), 4, 7, kTheta, nullptr).code(), invalid);
  EXPECT_EQ(RopeTable(table.get(), 4, 8, 0.0, nullptr).code(), invalid);
  DeviceBuffer<float> x(64);
  EXPECT_EQ(RopeForward(x.get(), 7, x.get(), 7, table.get(), 4, 1, 1, 1, 7, 0, nullptr).code(),
            invalid);  // odd head_dim
  EXPECT_EQ(RopeForward(x.get(), 8, x.get(), 8, table.get(), 4, 1, 4, 1, 8, 1, nullptr).code(),
            invalid);  // positions 1..4 past a 4-row table
  EXPECT_EQ(RopeBackward(x.get(), 8, x.get(), 4, table.get(), 4, 1, 1, 1, 8, 0, nullptr).code(),
            invalid);  // stride shorter than a row
  EXPECT_EQ(RopeBackward(nullptr, 8, x.get(), 8, table.get(), 4, 1, 1, 1, 8, 0, nullptr).code(),
            invalid);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
