#include "worker/comm/cpu_reduce.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace dstrain::comm {
namespace {

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

// An independent reference: rounds `v` to a binary format with `p` significand bits, minimum
// normal exponent `emin` and largest finite value `max`, to nearest even, through double
// arithmetic (std::nearbyint rounds ties to even in the default rounding mode).
double RoundRef(double v, int p, int emin, double max) {
  if (v == 0 || std::isnan(v) || std::isinf(v)) return v;
  int e;
  std::frexp(std::fabs(v), &e);  // |v| = f * 2^e, f in [0.5, 1)
  const int exp = std::max(e - 1, emin);
  const double quantum = std::ldexp(1.0, exp - (p - 1));
  const double r = std::nearbyint(v / quantum) * quantum;
  if (std::fabs(r) > max) return std::copysign(std::numeric_limits<double>::infinity(), v);
  return r;
}

double Bf16Max() { return std::ldexp(255.0, 120); }  // (2 - 2^-7) * 2^127
double F16Max() { return 65504.0; }

double F16Value(uint16_t h) {  // independent decoding
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int man = h & 0x3ff;
  if (exp == 0x1f) {
    return man ? std::numeric_limits<double>::quiet_NaN()
               : sign * std::numeric_limits<double>::infinity();
  }
  if (exp == 0) return sign * std::ldexp(man, -24);
  return sign * std::ldexp(1024 + man, exp - 25);
}

TEST(ConversionTest, Bf16ToF32IsExactAndRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Bf16ToF32(static_cast<uint16_t>(h));
    EXPECT_EQ(Bits(f), h << 16);
    if (!std::isnan(f)) {
      EXPECT_EQ(F32ToBf16(f), h) << h;
    } else {
      EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(f)))) << h;
    }
  }
}

TEST(ConversionTest, F16ToF32IsExactAndRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    const double want = F16Value(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_EQ(Bits(f) >> 31, h >> 15) << "sign of NaN " << h;
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f)))) << h;
    } else {
      EXPECT_EQ(static_cast<double>(f), want) << h;
      EXPECT_EQ(std::signbit(f), (h >> 15) != 0) << h;
      EXPECT_EQ(F32ToF16(f), h) << h;
    }
  }
}

TEST(ConversionTest, RoundingMatchesReferenceOnRandomAndEdgeValues) {
  std::vector<float> values = {0.0f,
                               -0.0f,
                               1.0f,
                               65504.0f,
                               65519.99f,
                               65520.0f,
                               65536.0f,
                               -65520.0f,
                               0x1p-14f,
                               0x1p-24f,
                               0x1p-25f,
                               0x1.000002p-25f,
                               0x1.8p-24f,
                               0x1p-26f,
                               std::numeric_limits<float>::max(),
                               std::numeric_limits<float>::denorm_min(),
                               std::numeric_limits<float>::min(),
                               1.0f + 0x1p-8f,
                               1.0f + 0x1p-8f + 0x1p-20f,
                               1.0f + 3 * 0x1p-8f,
                               1.0f + 0x1p-11f,
                               1.0f + 3 * 0x1p-11f};
  std::mt19937 rng(42);
  for (int i = 0; i < 200000; ++i) {
    float f = FromBits(static_cast<uint32_t>(rng()));
    if (std::isnan(f) || std::isinf(f)) continue;
    values.push_back(f);
  }
  // Values near the f16 range, where random bit patterns rarely land.
  std::uniform_real_distribution<float> near(-70000.0f, 70000.0f);
  std::uniform_real_distribution<float> tiny(-1e-4f, 1e-4f);
  for (int i = 0; i < 100000; ++i) {
    values.push_back(near(rng));
    values.push_back(tiny(rng));
  }
  for (float f : values) {
    const double bf = RoundRef(f, 8, -126, Bf16Max());
    const double hf = RoundRef(f, 11, -14, F16Max());
    EXPECT_EQ(static_cast<double>(Bf16ToF32(F32ToBf16(f))), bf) << std::hexfloat << f;
    EXPECT_EQ(F16Value(F32ToF16(f)), hf) << std::hexfloat << f;
    if (f == 0) {
      EXPECT_EQ(F32ToF16(f) >> 15, Bits(f) >> 31);
      EXPECT_EQ(F32ToBf16(f) >> 15, Bits(f) >> 31);
    }
  }
}

TEST(ConversionTest, NanAndInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(F32ToBf16(inf), 0x7f80);
  EXPECT_EQ(F32ToBf16(-inf), 0xff80);
  EXPECT_EQ(F32ToF16(inf), 0x7c00);
  EXPECT_EQ(F32ToF16(-inf), 0xfc00);
  // A NaN whose payload lies only in the dropped bits stays NaN (not Inf).
  const float low_nan = FromBits(0x7f800001u);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(low_nan))));
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(low_nan))));
  const float neg_nan = FromBits(0xffc00000u);
  EXPECT_EQ(F32ToBf16(neg_nan) >> 15, 1);
  EXPECT_EQ(F32ToF16(neg_nan) >> 15, 1);
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7c01)));
}

TEST(ConversionTest, F16cMatchesPortable) {
  if (!internal::HasF16c()) GTEST_SKIP() << "no F16C on this CPU";
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> fast(65536), slow(65536);
  ToF32(all.data(), DType::kF16, 65536, fast.data());
  internal::F16ToF32Portable(all.data(), 65536, slow.data());
  for (int i = 0; i < 65536; ++i) ASSERT_EQ(Bits(fast[i]), Bits(slow[i])) << i;

  std::mt19937 rng(7);
  std::vector<float> values(1 << 18);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = FromBits(i % 2 ? static_cast<uint32_t>(rng())
                               : Bits(std::uniform_real_distribution<float>(-7e4f, 7e4f)(rng)));
  }
  std::vector<uint16_t> h_fast(values.size()), h_slow(values.size());
  FromF32(values.data(), values.size(), DType::kF16, h_fast.data());
  internal::F32ToF16Portable(values.data(), values.size(), h_slow.data());
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(h_fast[i], h_slow[i]) << std::hexfloat << values[i];
  }
}

TEST(ConversionTest, VectorisedBf16MatchesScalar) {
  std::vector<uint16_t> all(65536 + 5);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> f(all.size());
  ToF32(all.data(), DType::kBF16, all.size(), f.data());
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(Bits(f[i]), Bits(Bf16ToF32(all[i]))) << i;

  std::mt19937 rng(11);
  std::vector<float> values = {0x1.00fffep0f,
                               0x1.018p0f,
                               0x1.008p0f,
                               0x1.fffffep127f,
                               FromBits(0x7f800001u),
                               FromBits(0xff800001u),
                               FromBits(0x7fc00000u),
                               -0.0f,
                               1e-45f};
  for (int i = 0; i < (1 << 18); ++i) values.push_back(FromBits(static_cast<uint32_t>(rng())));
  std::vector<uint16_t> fast(values.size()), slow(values.size());
  FromF32(values.data(), values.size(), DType::kBF16, fast.data());
  internal::F32ToBf16Portable(values.data(), values.size(), slow.data());
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(fast[i], slow[i]) << std::hexfloat << values[i] << " avx2=" << internal::HasAvx2();
  }
}

TEST(ReduceTest, AccumulateAndFinish) {
  std::vector<float> acc = {1, 2, 3, 4, 5};
  const std::vector<float> x = {1, 1, 1, 1, 1};
  AccumulateF32(acc.data(), x.data(), DType::kF32, 5, ReduceOp::kAvg);
  FinishF32(acc.data(), 5, ReduceOp::kAvg, 2);
  EXPECT_EQ(acc, (std::vector<float>{1, 1.5, 2, 2.5, 3}));
  // Division, not multiplication by a reciprocal: 3 / 3 is exactly 1.
  std::vector<float> three = {3.0f};
  FinishF32(three.data(), 1, ReduceOp::kAvg, 3);
  EXPECT_EQ(three[0], 1.0f);
  FinishF32(acc.data(), 5, ReduceOp::kSum, 2);
  EXPECT_EQ(acc[4], 3);
}

TEST(ReduceTest, MaxPropagatesNan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> acc = {1, nan, 3, -5};
  const std::vector<float> x = {2, 1, nan, -6};
  AccumulateF32(acc.data(), x.data(), DType::kF32, 4, ReduceOp::kMax);
  EXPECT_EQ(acc[0], 2);
  EXPECT_TRUE(std::isnan(acc[1]));
  EXPECT_TRUE(std::isnan(acc[2]));
  EXPECT_EQ(acc[3], -5);
}

TEST(ReduceTest, InfinitiesAndOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<uint16_t> a = {F32ToF16(inf), F32ToF16(60000.0f)};
  std::vector<uint16_t> b = {F32ToF16(-inf), F32ToF16(60000.0f)};
  const void* in[] = {a.data(), b.data()};
  std::vector<uint16_t> out(2);
  ReduceBuffers(in, 2, out.data(), 2, DType::kF16, ReduceOp::kSum);
  EXPECT_TRUE(std::isnan(F16ToF32(out[0])));  // Inf + -Inf
  EXPECT_EQ(out[1], 0x7c00);                  // 120000 overflows f16
  // ... but the average of the same inputs does not overflow: f32 accumulation.
  ReduceBuffers(in, 2, out.data(), 2, DType::kF16, ReduceOp::kAvg);
  EXPECT_EQ(F16ToF32(out[1]), 60000.0f);
}

TEST(ReduceTest, Bf16IsRoundedOnceNotPerStep) {
  // 1 + 2^-8 + 2^-8: rounding after each addition gives 1 (two ties to even); rounding once
  // gives 1 + 2^-7, which bf16 represents exactly.
  const std::vector<uint16_t> one = {F32ToBf16(1.0f)};
  const std::vector<uint16_t> eps = {F32ToBf16(0x1p-8f)};
  const void* in[] = {one.data(), eps.data(), eps.data()};
  uint16_t out = 0;
  ReduceBuffers(in, 3, &out, 1, DType::kBF16, ReduceOp::kSum);
  EXPECT_EQ(Bf16ToF32(out), 1.0f + 0x1p-7f);

  uint16_t pairwise = one[0];
  ReduceInto(&pairwise, eps.data(), 1, DType::kBF16, ReduceOp::kSum);
  ReduceInto(&pairwise, eps.data(), 1, DType::kBF16, ReduceOp::kSum);
  EXPECT_EQ(Bf16ToF32(pairwise), 1.0f);  // documented: one rounding per call
}

TEST(ReduceTest, ReduceBuffersAllDtypesLongBuffers) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const int64_t n = 5000;  // more than one internal block
    const size_t es = DTypeSize(dtype);
    std::vector<std::vector<char>> bufs(3, std::vector<char>(n * es));
    std::vector<float> want(n, 0);
    for (int r = 0; r < 3; ++r) {
      std::vector<float> vals(n);
      for (int64_t i = 0; i < n; ++i) vals[i] = static_cast<float>((i * 7 + r * 3) % 17) - 8;
      FromF32(vals.data(), n, dtype, bufs[r].data());
      for (int64_t i = 0; i < n; ++i) want[i] += vals[i];
    }
    const void* in[] = {bufs[0].data(), bufs[1].data(), bufs[2].data()};
    std::vector<char> out(n * es);
    ReduceBuffers(in, 3, out.data(), n, dtype, ReduceOp::kSum);
    std::vector<float> got(n);
    ToF32(out.data(), dtype, n, got.data());
    EXPECT_EQ(got, want) << DTypeName(dtype);
    // In place over the first input.
    ReduceBuffers(in, 3, bufs[0].data(), n, dtype, ReduceOp::kSum);
    EXPECT_EQ(bufs[0], out);
  }
}

// Random elements of `dtype` with the awkward values mixed in: NaN, +-Inf, +-0, subnormals, the
// largest finite values (whose sums overflow) and ordinary numbers of both signs.
std::vector<char> AwkwardBuffer(DType dtype, int64_t n, std::mt19937& rng) {
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            0.0f,
                            -0.0f,
                            1e-40f,
                            -3e-39f,
                            6e-8f,
                            65504.0f,
                            3.3e38f,
                            -3.3e38f};
  std::uniform_real_distribution<float> uniform(-4, 4);
  std::uniform_int_distribution<int> pick(0, 9);
  std::vector<float> values(n);
  for (float& v : values) {
    const int p = pick(rng);
    v = p == 0 ? specials[rng() % (sizeof(specials) / sizeof(specials[0]))] : uniform(rng);
  }
  std::vector<char> out(n * DTypeSize(dtype));
  FromF32(values.data(), n, dtype, out.data());
  return out;
}

// One element reduced the plain way: scalar conversions, f32 operations in input order, one
// rounding. Independent of the block and vector code under test.
void ReduceElementReference(const std::vector<std::vector<char>>& in, int64_t i, DType dtype,
                            ReduceOp op, char* out) {
  const size_t es = DTypeSize(dtype);
  auto load = [&](const char* p) {
    uint16_t h;
    float f;
    if (dtype == DType::kF32) {
      std::memcpy(&f, p, 4);
      return f;
    }
    std::memcpy(&h, p, 2);
    return dtype == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
  };
  float acc = load(in[0].data() + i * es);
  for (size_t j = 1; j < in.size(); ++j) {
    const float x = load(in[j].data() + i * es);
    if (op == ReduceOp::kMax) {
      acc = (acc > x || acc != acc) ? acc : x;
    } else {
      acc += x;
    }
  }
  if (op == ReduceOp::kAvg && in.size() > 1) acc /= static_cast<float>(in.size());
  if (dtype == DType::kF32) {
    std::memcpy(out, &acc, 4);
  } else {
    const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(acc) : F32ToF16(acc);
    std::memcpy(out, &h, 2);
  }
}

TEST(ReduceTest, ReduceBuffersGivesTheReferenceBitsVectorisedAndPortable) {
  // Without AVX2 and F16C both calls below run the portable code: say so in the test's record.
  RecordProperty("vectorised_path_ran",
                 internal::HasAvx2() && internal::HasF16c() ? "yes" : "no (no AVX2/F16C)");
  std::mt19937 rng(7);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const size_t es = DTypeSize(dtype);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      for (int k : {1, 2, 3, 5}) {
        for (int64_t n : {0, 1, 7, 8, 9, 31, 2048 + 13, 5000}) {
          // The output apart from the inputs, on the first input and on the last.
          for (int on_input : {-1, 0, k - 1}) {
            for (bool portable : {false, true}) {
              SCOPED_TRACE(testing::Message()
                           << DTypeName(dtype) << " op " << static_cast<int>(op) << " k " << k
                           << " n " << n << " on_input " << on_input << " portable " << portable);
              std::vector<std::vector<char>> in;
              for (int j = 0; j < k; ++j) in.push_back(AwkwardBuffer(dtype, n, rng));
              std::vector<char> want(n * es);
              for (int64_t i = 0; i < n; ++i) {
                ReduceElementReference(in, i, dtype, op, want.data() + i * es);
              }
              std::vector<char> apart(n * es, 0x5a);
              std::vector<const void*> in_ptr(k);
              for (int j = 0; j < k; ++j) in_ptr[j] = in[j].data();
              void* out = on_input < 0 ? apart.data() : in[on_input].data();
              if (portable) {
                internal::ReduceBuffersPortable(in_ptr.data(), k, out, n, dtype, op);
              } else {
                ReduceBuffers(in_ptr.data(), k, out, n, dtype, op);
              }
              if (n > 0) {
                ASSERT_EQ(std::memcmp(out, want.data(), n * es), 0);
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace dstrain::comm
