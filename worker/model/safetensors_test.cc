// safetensors against the format's reference implementation: a file it wrote (testdata/) is read
// and our writer reproduces it byte for byte; layouts round-trip; damaged files are refused.
#include "worker/model/safetensors.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::model {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Tmp(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Concat(const std::vector<absl::string_view>& pieces) {
  return absl::StrJoin(pieces, "");
}

constexpr char kReference[] = "worker/model/testdata/reference.safetensors";

TEST(Safetensors, ReadsTheReferenceImplementationsFile) {
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(kReference);
  ASSERT_THAT(f, IsOk());
  EXPECT_EQ(f->metadata.at("format"), "pt");
  EXPECT_THAT(f->order, ElementsAre("a", "b.weight", "c"));
  EXPECT_THAT(f->tensors.at("a").shape, ElementsAre(2, 3));
  EXPECT_THAT(f->tensors.at("a").data, ElementsAre(0.f, .5f, 1.f, 1.5f, 2.f, 2.5f));
  EXPECT_THAT(f->tensors.at("b.weight").data, ElementsAre(1.5f, -2.f, 3.25f, 1e-3f));
  EXPECT_THAT(f->tensors.at("c").shape, ElementsAre(1, 2, 2));
  EXPECT_THAT(f->tensors.at("c").data, ElementsAre(7.f, 7.f, 7.f, 7.f));
}

// Hugging Face checkpoints are mostly bf16 or f16: both widen to f32 exactly.
TEST(Safetensors, ReadsSixteenBitTensorsOfTheReferenceImplementation) {
  absl::StatusOr<SafetensorsFile> f =
      ReadSafetensors("worker/model/testdata/reference_16bit.safetensors");
  ASSERT_THAT(f, IsOk());
  EXPECT_THAT(f->tensors.at("w_bf16").shape, ElementsAre(2, 3));
  EXPECT_THAT(f->tensors.at("w_bf16").data, ElementsAre(1.5f, -2.f, 0.0078125f, 3.f, 256.f, -.5f));
  EXPECT_THAT(f->tensors.at("b_f16").data, ElementsAre(.5f, -65504.f, 0.0009765625f));
}

TEST(Safetensors, WritesWhatTheReferenceImplementationWrites) {
  const std::vector<float> a = {0.f, .5f, 1.f, 1.5f, 2.f, 2.5f}, b = {1.5f, -2.f, 3.25f, 1e-3f},
                           c(4, 7.f);
  std::string header;
  absl::StatusOr<std::vector<absl::string_view>> pieces = SafetensorsPieces(
      {{"a", {2, 3}, a.data()}, {"b.weight", {4}, b.data()}, {"c", {1, 2, 2}, c.data()}},
      {{"format", "pt"}}, &header);
  ASSERT_THAT(pieces, IsOk());
  EXPECT_EQ(Concat(*pieces), ReadAll(kReference));
  EXPECT_EQ(header.size() % 8, 0u);
}

TEST(Safetensors, RoundTripsALayoutUnderItsOwnOrMappedNames) {
  absl::StatusOr<ParamLayout> layout = ParamLayout::FromDeclared(
      {{"fc1", {{"fc1.w", {3, 5}, true}, {"fc1.b", {3}, false}}}, {"fc2", {{"fc2.w", {2, 3}}}}});
  ASSERT_THAT(layout, IsOk());
  std::vector<float> params(layout->total(), 0.f);
  for (const ParamSpec& p : layout->params()) {
    for (int64_t i = 0; i < p.numel; ++i) params[p.offset + i] = 0.25f * i - p.offset;
  }
  const auto hf = [](const ParamSpec& p) { return "model." + p.name; };
  std::string header;
  absl::StatusOr<std::vector<absl::string_view>> pieces =
      SafetensorsPieces(LayoutTensors(*layout, params.data(), hf), {}, &header);
  ASSERT_THAT(pieces, IsOk());
  const std::string path = Tmp("layout.safetensors");
  WriteAll(path, Concat(*pieces));
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_THAT(f, IsOk());
  EXPECT_THAT(f->order, ElementsAre("model.fc1.w", "model.fc1.b", "model.fc2.w"));
  for (const ParamSpec& p : layout->params()) {
    const SafetensorsFile::Tensor& t = f->tensors.at("model." + p.name);
    EXPECT_EQ(t.shape, p.shape);
    EXPECT_EQ(t.data,
              std::vector<float>(params.begin() + p.offset, params.begin() + p.offset + p.numel));
  }
  EXPECT_TRUE(f->metadata.empty());
}

TEST(Safetensors, RefusesBadNames) {
  const float x = 1;
  std::string header;
  EXPECT_THAT(SafetensorsPieces({{"a", {1}, &x}, {"a", {1}, &x}}, {}, &header),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"a\"")));
  EXPECT_THAT(SafetensorsPieces({{"__metadata__", {1}, &x}}, {}, &header),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reserved")));
}

TEST(Safetensors, RefusesDamagedFiles) {
  const std::string good = ReadAll(kReference);
  ASSERT_GT(good.size(), 64u);
  const auto with = [&](const std::string& name, const std::string& bytes) {
    const std::string path = Tmp(name);
    WriteAll(path, bytes);
    return ReadSafetensors(path).status();
  };
  EXPECT_THAT(with("short", good.substr(0, 5)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("8-byte header")));
  EXPECT_THAT(with("truncated", good.substr(0, good.size() - 4)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("data_offsets")));
  EXPECT_THAT(with("trailing", good + "xxxx"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("after the last tensor")));
  std::string huge = good;
  huge[7] = '\x7f';
  EXPECT_THAT(with("huge", huge),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("header length")));
  std::string i64 = good;
  i64.replace(i64.find("\"F32\""), 5, "\"I64\"");
  EXPECT_THAT(with("i64", i64), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("I64")));
  std::string f16 = good;  // 2-byte elements: the offsets no longer hold the shape
  f16.replace(f16.find("\"F32\""), 5, "\"F16\"");
  EXPECT_THAT(with("f16", f16), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("data_offsets")));
  std::string gap = good;
  gap.replace(gap.find("[24,40]"), 7, "[28,40]");
  EXPECT_THAT(with("gap", gap), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("b.weight")));
  std::string json = good;
  json[8] = '[';
  EXPECT_THAT(with("json", json), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("JSON object")));
  EXPECT_THAT(ReadSafetensors(Tmp("missing")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
}

}  // namespace
}  // namespace dstrain::model
