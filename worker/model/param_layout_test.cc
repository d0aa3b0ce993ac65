#include "worker/model/param_layout.h"

#include <cstdint>
#include <cstdio>
#include <string>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/model/llmc_format.h"

namespace dstrain::model {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParamLayout, Gpt2SmallHasTheKnownParameterCount) {
  // GPT-2 124M with llm.c's padded vocabulary: llm.c reports 124,475,904 parameters.
  GptConfig c{12, 12, 768, 50257, 50304, 1024};
  auto layout = ParamLayout::ForGpt(c);
  ASSERT_THAT(layout, IsOk());
  EXPECT_EQ(layout->num_parameters(), 124475904);
  EXPECT_EQ(layout->params().size(), 2u + 12 * 12 + 2);
  EXPECT_EQ(layout->modules().size(), 14u);
  EXPECT_EQ(layout->modules()[1].name, "block.0");
  // Every parameter is 64-byte aligned and inside its module.
  for (const ParamSpec& p : layout->params()) {
    EXPECT_EQ(p.offset % 16, 0) << p.name;
    const ModuleSpec& m = layout->modules()[p.module];
    EXPECT_GE(p.offset, m.offset);
    EXPECT_LE(p.offset + p.numel, m.offset + m.numel);
  }
  EXPECT_EQ(layout->Find("block.11.fcprojw")->shape, (std::vector<int64_t>{768, 3072}));
  EXPECT_EQ(layout->Find("nope"), nullptr);
}

TEST(ParamLayout, RejectsBadShapes) {
  EXPECT_THAT(ParamLayout::ForGpt({2, 3, 8, 10, 16, 8}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("divisible")));
  EXPECT_THAT(ParamLayout::ForGpt({2, 2, 8, 10, 9, 8}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("padded_vocab_size")));
  EXPECT_THAT(ParamLayout::ForGpt({0, 2, 8, 10, 16, 8}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("positive")));
}

TEST(LlmcFormat, RoundTripAndFileOrder) {
  GptConfig c{2, 2, 8, 10, 16, 6};
  auto layout = ParamLayout::ForGpt(c);
  ASSERT_THAT(layout, IsOk());
  std::vector<float> params(layout->total(), 0.f);
  for (const ParamSpec& p : layout->params()) {
    for (int64_t i = 0; i < p.numel; ++i) params[p.offset + i] = p.offset + i * 0.001f;
  }
  const std::string path = std::string(getenv("TEST_TMPDIR")) + "/m.bin";
  ASSERT_THAT(WriteLlmcModel(path, c, *layout, params.data()), IsOk());
  auto m = ReadLlmcModel(path);
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->config.n_layer, 2);
  EXPECT_EQ(m->config.padded_vocab_size, 16);
  EXPECT_EQ(m->params, params);

  // llm.c's order groups by kind: right after wte and wpe come ln1w of layer 0 then layer 1.
  std::FILE* f = std::fopen(path.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  const int64_t skip = 1024 + 4 * (16 * 8 + 6 * 8 + 8);  // header, wte, wpe, ln1w of layer 0
  std::fseek(f, skip, SEEK_SET);
  float first_of_layer1_ln1w = 0;
  ASSERT_EQ(std::fread(&first_of_layer1_ln1w, 4, 1, f), 1u);
  std::fclose(f);
  EXPECT_EQ(first_of_layer1_ln1w, params[layout->Find("block.1.ln1w")->offset]);
}

TEST(LlmcFormat, RejectsCorruptFiles) {
  const std::string dir = getenv("TEST_TMPDIR");
  EXPECT_THAT(ReadLlmcModel(dir + "/missing.bin"),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("missing.bin")));
  GptConfig c{1, 1, 4, 5, 8, 4};
  auto layout = ParamLayout::ForGpt(c);
  std::vector<float> params(layout->total(), 1.f);
  const std::string path = dir + "/t.bin";
  ASSERT_THAT(WriteLlmcModel(path, c, *layout, params.data()), IsOk());
  ASSERT_EQ(truncate(path.c_str(), 1024 + 40), 0);
  EXPECT_THAT(ReadLlmcModel(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected")));
  std::FILE* f = std::fopen(path.c_str(), "r+b");
  int32_t bad = 7;
  std::fwrite(&bad, 4, 1, f);
  std::fclose(f);
  EXPECT_THAT(ReadLlmcModel(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad magic 7")));
}

// A header naming a huge shape is refused from the file's size before its layout is built (found
// by tests/fuzz:llmc_model; 2^31 - 1 layers made ParamLayout::ForGpt allocate until killed).
TEST(LlmcFormat, RejectsHugeShapeOfShortFile) {
  const std::string path = std::string(getenv("TEST_TMPDIR")) + "/huge.bin";
  int32_t header[256] = {kLlmcModelMagic, kLlmcModelVersionF32, 4, 5, INT32_MAX, 1, 1, 8};
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fwrite(header, sizeof(header), 1, f);
  std::fclose(f);
  EXPECT_THAT(ReadLlmcModel(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected at least")));
}

}  // namespace
}  // namespace dstrain::model
