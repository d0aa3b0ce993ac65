// The casts on the GPU (and the CPU simulator) vs an independent round-to-nearest-even reference,
// and bit-exact round trips over every bf16 and fp16 value.
#include "kernels/cast/cuda/cast_cuda.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast/cast.h"
#include "kernels/cuda_common/test_util.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::DeviceBuffer;

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename T>
uint16_t Bits16(T v) {
  uint16_t u;
  std::memcpy(&u, &v, 2);
  return u;
}
template <typename T>
T From16(uint16_t u) {
  T v;
  std::memcpy(static_cast<void*>(&v), &u, 2);
  return v;
}

// Exact values of the narrow formats, decoded by hand (independent of cuda_bf16.h/cuda_fp16.h).
double Bf16Value(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }
double HalfValue(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v;
  if (exp == 31) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else if (exp == 0) {
    v = std::ldexp(mant, -24);
  } else {
    v = std::ldexp(1024 + mant, exp - 25);
  }
  return sign ? -v : v;
}

// x rounded to a binary format with `mantissa` stored bits and normal exponents [min_exp,
// max_exp], ties to even, overflowing to ±inf: IEEE 754 rounding, written from the definition.
double RoundToFormat(float x, int mantissa, int min_exp, int max_exp) {
  if (std::isnan(x) || std::isinf(x) || x == 0.0f) return x;
  const double v = x;
  int e;
  std::frexp(std::abs(v), &e);  // |v| = f·2^e, f in [0.5, 1): the leading bit is 2^(e-1)
  const double ulp = std::ldexp(1.0, std::max(e - 1, min_exp) - mantissa);
  const double r = std::nearbyint(v / ulp) * ulp;  // v / ulp is exact; default mode: ties to even
  const double max_finite = std::ldexp(2.0 - std::ldexp(1.0, -mantissa), max_exp);
  if (std::abs(r) > max_finite) return std::copysign(std::numeric_limits<double>::infinity(), v);
  return std::copysign(r, v);  // keeps the sign of values that round to zero
}

bool SameValue(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return got == want && std::signbit(got) == std::signbit(want);
}

// Special values, exact ties of both formats, the edges of their ranges, random bit patterns and
// random magnitudes across the fp16 range.
std::vector<float> Inputs() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::lowest(),
                          std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(),
                          BitsFloat(0x3f808000u),  // bf16 tie, rounds down to even
                          BitsFloat(0x3f818000u),  // bf16 tie, rounds up to even
                          BitsFloat(0x3f808001u),  // just above a tie
                          BitsFloat(0x7f7f8000u),  // bf16 tie at the top: rounds to inf
                          BitsFloat(0x7f7f7fffu),  // just below it: max bf16
                          65504.0f,
                          65519.99f,
                          65520.0f,
                          -65520.0f,
                          1.0f + std::ldexp(1.0f, -11),
                          1.0f + 3 * std::ldexp(1.0f, -11),
                          std::ldexp(1.0f, -24),
                          std::ldexp(1.0f, -25),
                          3 * std::ldexp(1.0f, -25),
                          std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)};
  std::mt19937 gen(7);
  for (int i = 0; i < 20000; ++i) v.push_back(BitsFloat(gen()));
  for (int i = 0; i < 20000; ++i) {
    const double mag = std::ldexp(1.0, static_cast<int>(gen() % 44) - 27) * (1.0 + gen() * 0x1p-32);
    v.push_back(static_cast<float>(gen() & 1 ? mag : -mag));
  }
  return v;
}

TEST(CastCudaTest, FloatToBf16RoundsToNearestEven) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<float> in = Inputs();
  const int64_t n = in.size();
  DeviceBuffer<float> d_in(in);
  DeviceBuffer<__nv_bfloat16> out(n);
  ASSERT_TRUE(CastFloatToBf16(out.get(), d_in.get(), n, nullptr).ok());
  const std::vector<__nv_bfloat16> got = out.ToHost();
  int bad = 0;
  for (int64_t i = 0; i < n && bad < 10; ++i) {
    const double want = RoundToFormat(in[i], 7, -126, 127);
    const double value = Bf16Value(Bits16(got[i]));
    if (!SameValue(value, want)) {
      ++bad;
      ADD_FAILURE() << "input bits 0x" << std::hex << FloatBits(in[i]) << std::dec << " (" << in[i]
                    << "): got " << value << ", want " << want;
    }
  }
}

TEST(CastCudaTest, FloatToHalfRoundsToNearestEven) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<float> in = Inputs();
  const int64_t n = in.size();
  DeviceBuffer<float> d_in(in);
  DeviceBuffer<__half> out(n);
  ASSERT_TRUE(CastFloatToHalf(out.get(), d_in.get(), n, nullptr).ok());
  const std::vector<__half> got = out.ToHost();
  int bad = 0;
  for (int64_t i = 0; i < n && bad < 10; ++i) {
    const double want = RoundToFormat(in[i], 10, -14, 15);
    const double value = HalfValue(Bits16(got[i]));
    if (!SameValue(value, want)) {
      ++bad;
      ADD_FAILURE() << "input bits 0x" << std::hex << FloatBits(in[i]) << std::dec << " (" << in[i]
                    << "): got " << value << ", want " << want;
    }
  }
}

// Every one of the 65536 bit patterns widens exactly and narrows back to itself (NaNs stay NaN).
template <typename Narrow>
void CheckRoundTrip(double (*value)(uint16_t)) {
  const int64_t n = 65536;
  std::vector<Narrow> all(n);
  for (int64_t i = 0; i < n; ++i) all[i] = From16<Narrow>(static_cast<uint16_t>(i));
  const DType type = std::is_same_v<Narrow, __half> ? DType::kF16 : DType::kBF16;
  DeviceBuffer<Narrow> d_all(all), back(n);
  DeviceBuffer<float> wide(n);
  ASSERT_TRUE(Cast(wide.get(), DType::kF32, d_all.get(), type, n, nullptr).ok());
  ASSERT_TRUE(Cast(back.get(), type, wide.get(), DType::kF32, n, nullptr).ok());
  const std::vector<float> got_wide = wide.ToHost();
  const std::vector<Narrow> got_back = back.ToHost();
  int bad = 0;
  for (int64_t i = 0; i < n && bad < 10; ++i) {
    const double want = value(static_cast<uint16_t>(i));
    const bool ok = SameValue(got_wide[i], want) &&
                    (std::isnan(want) ? std::isnan(value(Bits16(got_back[i])))
                                      : Bits16(got_back[i]) == static_cast<uint16_t>(i));
    if (!ok) {
      ++bad;
      ADD_FAILURE() << "bits 0x" << std::hex << i << std::dec << ": widened " << got_wide[i]
                    << " (want " << want << "), back 0x" << std::hex << Bits16(got_back[i]);
    }
  }
}

TEST(CastCudaTest, Bf16RoundTripIsExact) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  CheckRoundTrip<__nv_bfloat16>(Bf16Value);
}

TEST(CastCudaTest, HalfRoundTripIsExact) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  CheckRoundTrip<__half>(HalfValue);
}

TEST(CastCudaTest, Bf16ToHalfRoundsOnce) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<float> in = Inputs();
  const int64_t n = in.size();
  DeviceBuffer<float> d_in(in);
  DeviceBuffer<__nv_bfloat16> bf(n);
  DeviceBuffer<__half> half(n);
  ASSERT_TRUE(CastFloatToBf16(bf.get(), d_in.get(), n, nullptr).ok());
  ASSERT_TRUE(Cast(half.get(), DType::kF16, bf.get(), DType::kBF16, n, nullptr).ok());
  const std::vector<__nv_bfloat16> got_bf = bf.ToHost();
  const std::vector<__half> got_half = half.ToHost();
  for (int64_t i = 0; i < n; ++i) {
    const float bf_value = static_cast<float>(Bf16Value(Bits16(got_bf[i])));
    ASSERT_TRUE(SameValue(HalfValue(Bits16(got_half[i])), RoundToFormat(bf_value, 10, -14, 15)))
        << i;
  }
}

TEST(CastCudaTest, SameTypeCopiesAndEmptyOrInvalid) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<float> in = {1.5f, -2.0f, 3.25f};
  DeviceBuffer<float> d_in(in), out(3);
  ASSERT_TRUE(Cast(out.get(), DType::kF32, d_in.get(), DType::kF32, 3, nullptr).ok());
  EXPECT_EQ(out.ToHost(), in);
  EXPECT_TRUE(CastFloatToBf16(nullptr, nullptr, 0, nullptr).ok());
  EXPECT_EQ(CastHalfToFloat(nullptr, nullptr, -2, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CastBf16ToFloat(nullptr, nullptr, 2, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// Accumulating fp32 values into 16-bit storage rounds once, exactly as the CPU kernel does.
TEST(CastCudaTest, AccumulateIntoHalfMatchesTheCpuKernel) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  const int64_t n = 1000;
  std::vector<float> start(n), add(n);
  for (int64_t i = 0; i < n; ++i) start[i] = u(rng), add[i] = u(rng) * 1e-2f;
  for (DType t : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(t));
    std::vector<uint16_t> want(n);
    kernels::FloatToHalf(t, want.data(), start.data(), n);
    DeviceBuffer<uint16_t> acc(want);
    DeviceBuffer<float> x(add);
    kernels::AccumulateIntoHalf(t, want.data(), add.data(), n);
    ASSERT_TRUE(AccumulateIntoHalf(acc.get(), t, x.get(), n, nullptr).ok());
    EXPECT_EQ(acc.ToHost(), want);
  }
  EXPECT_EQ(AccumulateIntoHalf(nullptr, DType::kF32, nullptr, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CastCudaTest, FillTypedRoundsTheValueOnce) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceBuffer<uint16_t> h(5);
  ASSERT_TRUE(FillTyped(h.get(), DType::kF16, 1.0f, 5, nullptr).ok());
  EXPECT_EQ(h.ToHost(), std::vector<uint16_t>(5, 0x3C00));
  ASSERT_TRUE(FillTyped(h.get(), DType::kBF16, -2.0f, 5, nullptr).ok());
  EXPECT_EQ(h.ToHost(), std::vector<uint16_t>(5, 0xC000));
  DeviceBuffer<float> f(3);
  ASSERT_TRUE(FillTyped(f.get(), DType::kF32, 0.25f, 3, nullptr).ok());
  EXPECT_EQ(f.ToHost(), std::vector<float>(3, 0.25f));
  EXPECT_EQ(FillTyped(f.get(), DType::kI32, 0.f, 3, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
