// reduce_kernels on the GPU (reduce_kernels_test) and on the CPU simulator
// (reduce_kernels_test_sim), against references written from the definitions and the CPU
// backends' conversions (//worker/comm:cpu_reduce), so NCCL's results match Gloo's bit for bit.
#include "worker/comm/nccl/reduce_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "worker/comm/cpu_reduce.h"

namespace dstrain::comm::nccl_internal {
namespace {

using kernels::gpu::testing::DeviceBuffer;
using kernels::gpu::testing::RandomFloats;

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Special values first, then random ones of every magnitude.
std::vector<float> TestFloats() {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          inf,
                          -inf,
                          std::numeric_limits<float>::quiet_NaN(),
                          -std::numeric_limits<float>::quiet_NaN(),
                          FromBits(0x7f800001u),  // signalling NaN
                          FromBits(0xffa00000u),  // negative NaN with a payload
                          std::numeric_limits<float>::denorm_min(),
                          -std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(),
                          3.0f,
                          1e-30f,
                          -7e20f};
  const std::vector<float> random = RandomFloats(1000, 11, -1.0f, 1.0f);
  for (size_t i = 0; i < random.size(); ++i) {
    v.push_back(std::ldexp(random[i], static_cast<int>(i % 200) - 100));
  }
  return v;
}

TEST(ReduceKernelsTest, KeysOrderLikeFloatsAndRoundTrip) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<float> in = TestFloats();
  const int64_t n = in.size();
  DeviceBuffer<float> d_in(in);
  DeviceBuffer<uint32_t> keys(n);
  DeviceBuffer<float> back(n);
  ASSERT_TRUE(ToMaxKeys(keys.get(), d_in.get(), DType::kF32, n, nullptr).ok());
  ASSERT_TRUE(FromMaxKeys(back.get(), DType::kF32, keys.get(), n, nullptr).ok());
  const std::vector<uint32_t> k = keys.ToHost();
  const std::vector<float> b = back.ToHost();
  for (int64_t i = 0; i < n; ++i) {
    SCOPED_TRACE(::testing::Message() << "i=" << i << " x=" << in[i]);
    if (std::isnan(in[i])) {
      EXPECT_EQ(Bits(b[i]), 0x7fc00000u);  // the canonical quiet NaN
    } else {
      EXPECT_EQ(Bits(b[i]), Bits(in[i]));
    }
    for (int64_t j = 0; j < n; ++j) {
      const bool nan_i = std::isnan(in[i]), nan_j = std::isnan(in[j]);
      if (nan_i || nan_j) {
        // Every NaN is the same, largest key.
        if (nan_i && nan_j) {
          EXPECT_EQ(k[i], k[j]);
        } else if (nan_i) {
          EXPECT_GT(k[i], k[j]);
        }
        continue;
      }
      // Float order, with -0 below +0.
      const bool less = in[i] < in[j] ||
                        (in[i] == 0 && in[j] == 0 && std::signbit(in[i]) && !std::signbit(in[j]));
      if (less) {
        EXPECT_LT(k[i], k[j]) << "j=" << j << " y=" << in[j];
      }
    }
  }
}

TEST(ReduceKernelsTest, F32KeysInPlace) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<float> in = TestFloats();
  const int64_t n = in.size();
  DeviceBuffer<float> buffer(in);
  uint32_t* as_keys = reinterpret_cast<uint32_t*>(buffer.get());
  ASSERT_TRUE(ToMaxKeys(as_keys, buffer.get(), DType::kF32, n, nullptr).ok());
  ASSERT_TRUE(FromMaxKeys(buffer.get(), DType::kF32, as_keys, n, nullptr).ok());
  const std::vector<float> out = buffer.ToHost();
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(Bits(out[i]), std::isnan(in[i]) ? 0x7fc00000u : Bits(in[i])) << i;
  }
}

// Every bf16 and f16 bit pattern: keys are those of the exactly widened value, and the way back
// gives the same bits (NaN: a NaN).
TEST(ReduceKernelsTest, HalfKeysRoundTripEveryValue) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t n = 65536;
  std::vector<uint16_t> all(n);
  for (int64_t i = 0; i < n; ++i) all[i] = static_cast<uint16_t>(i);
  for (DType type : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(type));
    const auto widen = [&](uint16_t h) {
      return type == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
    };
    std::vector<float> widened(n);
    for (int64_t i = 0; i < n; ++i) widened[i] = widen(all[i]);
    DeviceBuffer<uint16_t> d_in(all), back(n);
    DeviceBuffer<float> d_widened(widened);
    DeviceBuffer<uint32_t> keys(n), f32_keys(n);
    ASSERT_TRUE(ToMaxKeys(keys.get(), d_in.get(), type, n, nullptr).ok());
    ASSERT_TRUE(ToMaxKeys(f32_keys.get(), d_widened.get(), DType::kF32, n, nullptr).ok());
    ASSERT_TRUE(FromMaxKeys(back.get(), type, keys.get(), n, nullptr).ok());
    const std::vector<uint32_t> k = keys.ToHost(), k32 = f32_keys.ToHost();
    const std::vector<uint16_t> b = back.ToHost();
    int bad = 0;
    for (int64_t i = 0; i < n && bad < 10; ++i) {
      const bool nan = std::isnan(widened[i]);
      const bool ok = k[i] == k32[i] && (nan ? std::isnan(widen(b[i])) : b[i] == all[i]);
      if (!ok) {
        ++bad;
        ADD_FAILURE() << "bits 0x" << std::hex << all[i] << ": key 0x" << k[i] << " vs 0x" << k32[i]
                      << ", back 0x" << b[i];
      }
    }
  }
}

// What NCCL does with the keys (an unsigned max over ranks), three "ranks" here: the result is the
// float max, a NaN if any rank has one, +0 over -0.
TEST(ReduceKernelsTest, UnsignedMaxOfKeysIsNanPropagatingMax) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<float> values = TestFloats();
  const int64_t n = values.size();
  std::vector<std::vector<float>> ranks = {values, values, values};
  std::rotate(ranks[1].begin(), ranks[1].begin() + 7, ranks[1].end());
  std::rotate(ranks[2].begin(), ranks[2].begin() + 300, ranks[2].end());
  std::vector<uint32_t> max_key(n, 0);
  for (const std::vector<float>& r : ranks) {
    DeviceBuffer<float> d(r);
    DeviceBuffer<uint32_t> keys(n);
    ASSERT_TRUE(ToMaxKeys(keys.get(), d.get(), DType::kF32, n, nullptr).ok());
    const std::vector<uint32_t> k = keys.ToHost();
    for (int64_t i = 0; i < n; ++i) max_key[i] = std::max(max_key[i], k[i]);
  }
  DeviceBuffer<uint32_t> d_max(max_key);
  DeviceBuffer<float> out(n);
  ASSERT_TRUE(FromMaxKeys(out.get(), DType::kF32, d_max.get(), n, nullptr).ok());
  const std::vector<float> got = out.ToHost();
  for (int64_t i = 0; i < n; ++i) {
    const float a = ranks[0][i], b = ranks[1][i], c = ranks[2][i];
    if (std::isnan(a) || std::isnan(b) || std::isnan(c)) {
      EXPECT_TRUE(std::isnan(got[i])) << i;
      continue;
    }
    float want = std::max({a, b, c});
    if (want == 0 && (!std::signbit(a) || !std::signbit(b) || !std::signbit(c))) want = 0.0f;
    EXPECT_EQ(Bits(got[i]), Bits(want)) << i << ": " << a << " " << b << " " << c;
  }
}

TEST(ReduceKernelsTest, DivideAndNarrowMatchesTheCpuBackends) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  // More elements than one grid-stride pass covers (1024 blocks x 256 threads).
  const int64_t n = 1024 * 256 + 77;
  std::vector<float> sums = RandomFloats(n, 5, -300.0f, 300.0f);
  const std::vector<float> special = TestFloats();
  std::copy(special.begin(), special.end(), sums.begin());
  for (int size : {2, 3, 7}) {
    SCOPED_TRACE(size);
    const float divisor = static_cast<float>(size);
    std::vector<float> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = sums[i] / divisor;
    // f32, in place.
    DeviceBuffer<float> buffer(sums);
    ASSERT_TRUE(DivideAndNarrow(buffer.get(), DType::kF32, buffer.get(), n, divisor, nullptr).ok());
    const std::vector<float> got = buffer.ToHost();
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(want[i])) {
        ASSERT_TRUE(std::isnan(got[i])) << i;
      } else {
        ASSERT_EQ(Bits(got[i]), Bits(want[i])) << i;
      }
    }
    // bf16 and f16: one rounding of the f32 quotient, as FromF32 does on the CPU.
    for (DType dtype : {DType::kBF16, DType::kF16}) {
      SCOPED_TRACE(DTypeName(dtype));
      DeviceBuffer<float> d_sums(sums);
      DeviceBuffer<uint16_t> out(n);
      const DType type = dtype == DType::kBF16 ? DType::kBF16 : DType::kF16;
      ASSERT_TRUE(DivideAndNarrow(out.get(), type, d_sums.get(), n, divisor, nullptr).ok());
      std::vector<uint16_t> cpu(n);
      FromF32(want.data(), n, dtype, cpu.data());
      const std::vector<uint16_t> gpu = out.ToHost();
      for (int64_t i = 0; i < n; ++i) {
        const float g = dtype == DType::kBF16 ? Bf16ToF32(gpu[i]) : F16ToF32(gpu[i]);
        if (std::isnan(want[i])) {
          ASSERT_TRUE(std::isnan(g)) << i;
        } else {
          ASSERT_EQ(gpu[i], cpu[i]) << i << ": " << want[i];
        }
      }
    }
  }
}

TEST(ReduceKernelsTest, ArgumentChecks) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceBuffer<float> f(4);
  DeviceBuffer<uint32_t> k(4);
  EXPECT_EQ(ToMaxKeys(k.get(), f.get(), DType::kF32, -1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ToMaxKeys(nullptr, f.get(), DType::kF32, 4, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromMaxKeys(f.get(), DType::kF32, nullptr, 4, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DivideAndNarrow(f.get(), DType::kF32, f.get(), 4, 0.0f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  // n == 0 does nothing, null pointers included.
  EXPECT_TRUE(ToMaxKeys(nullptr, nullptr, DType::kF32, 0, nullptr).ok());
  EXPECT_TRUE(FromMaxKeys(nullptr, DType::kBF16, nullptr, 0, nullptr).ok());
  EXPECT_TRUE(DivideAndNarrow(nullptr, DType::kF16, nullptr, 0, 2.0f, nullptr).ok());
}

}  // namespace
}  // namespace dstrain::comm::nccl_internal
