#include "worker/checkpoint/crc32c.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dstrain::crc32c {
namespace {

struct Vector {
  std::string data;
  uint32_t crc;
};

std::vector<Vector> KnownVectors() {
  return {
      {"", 0u},
      {"123456789", 0xE3069283u},
      {std::string(32, '\0'), 0x8A9136AAu},
      {std::string(32, '\xFF'), 0x62A8AB43u},
  };
}

TEST(Crc32cTest, PortableMatchesKnownVectors) {
  for (const Vector& v : KnownVectors()) {
    EXPECT_EQ(internal::ExtendPortable(0, v.data.data(), v.data.size()), v.crc) << v.data.size();
  }
}

TEST(Crc32cTest, Sse42MatchesKnownVectors) {
  if (!internal::HasSse42()) GTEST_SKIP() << "CPU lacks SSE4.2";
  for (const Vector& v : KnownVectors()) {
    EXPECT_EQ(internal::ExtendSse42(0, v.data.data(), v.data.size()), v.crc) << v.data.size();
  }
}

TEST(Crc32cTest, DispatchedValueMatchesKnownVectors) {
  for (const Vector& v : KnownVectors()) EXPECT_EQ(Value(v.data), v.crc);
}

TEST(Crc32cTest, ExtendChains) {
  const std::string a = "hello, ";
  const std::string b = "checkpoint";
  EXPECT_EQ(Extend(Value(a), b), Value(a + b));
  EXPECT_EQ(Extend(Value(a), ""), Value(a));
}

TEST(Crc32cTest, ImplementationsAgreeOnRandomDataLengthsAndAlignments) {
  std::mt19937 rng(1234);
  std::string buf(4096 + 16, '\0');
  for (char& c : buf) c = static_cast<char>(rng());
  const bool sse = internal::HasSse42();
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t len = 0; len <= 300; ++len) {
      const char* p = buf.data() + offset;
      const uint32_t portable = internal::ExtendPortable(0, p, len);
      if (sse) {
        ASSERT_EQ(internal::ExtendSse42(0, p, len), portable) << offset << " " << len;
      }
      ASSERT_EQ(Extend(0, p, len), portable);
      // Split anywhere: chaining two pieces equals one pass.
      const size_t cut = len / 3;
      ASSERT_EQ(Extend(Extend(0, p, cut), p + cut, len - cut), portable);
    }
  }
  const uint32_t whole = internal::ExtendPortable(0, buf.data(), 4096);
  if (sse) {
    EXPECT_EQ(internal::ExtendSse42(0, buf.data(), 4096), whole);
  }
  EXPECT_EQ(Extend(0, buf.data() + 3, 4093), internal::ExtendPortable(0, buf.data() + 3, 4093));
}

}  // namespace
}  // namespace dstrain::crc32c
