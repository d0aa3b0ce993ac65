#include "worker/pipe/layer_partition.h"

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/pipe/topology.h"

namespace dstrain::pipe {
namespace {

using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

// GPT-2-like: 8 blocks of C = 64, vocabulary 256.
const model::GptConfig kConfig{8, 4, 64, 256, 256, 32};

std::vector<int> Ends(const std::vector<StagePartition>& p) {
  std::vector<int> ends;
  for (const StagePartition& s : p) ends.push_back(s.blocks.End(kConfig.n_layer));
  return ends;
}

TEST(PartitionLayers, UniformSpreadsBlocksEarlierStagesFuller) {
  ASSERT_OK_AND_ASSIGN(auto p, PartitionLayers(kConfig, 3, "uniform"));
  EXPECT_EQ(Ends(p), (std::vector<int>{3, 6, 8}));
  EXPECT_EQ(p[0].blocks.first, 0);
  ASSERT_OK_AND_ASSIGN(auto one, PartitionLayers(kConfig, 1, "uniform"));
  EXPECT_EQ(Ends(one), std::vector<int>{8});
  ASSERT_OK_AND_ASSIGN(auto all, PartitionLayers(kConfig, 8, "uniform"));
  EXPECT_EQ(Ends(all), (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(PartitionLayers, ParametersBalancesTheEmbeddingAndTheHead) {
  // With a 1024-token vocabulary the embedding (wte + wpe) and the head (tied wte + lnf) each
  // weigh more than a block (12C² + 13C), so the end stages take fewer blocks: [1, 3, 3, 1].
  model::GptConfig big_vocab = kConfig;
  big_vocab.vocab_size = big_vocab.padded_vocab_size = 1024;
  ASSERT_OK_AND_ASSIGN(auto p, PartitionLayers(big_vocab, 4, "parameters"));
  EXPECT_EQ(Ends(p), (std::vector<int>{1, 4, 7, 8}));
  int64_t heaviest = 0, total = 0;
  for (const StagePartition& s : p) heaviest = std::max(heaviest, s.weight), total += s.weight;
  EXPECT_LE(heaviest, total / 4 + total / 8) << DescribePartition(p, kConfig.n_layer);
  EXPECT_LT(p[0].blocks.Count(8), p[1].blocks.Count(8));
  EXPECT_THAT(DescribePartition(p, kConfig.n_layer), HasSubstr("stage 0: blocks [0, "));
}

TEST(PartitionLayers, TypeRegexBalancesMatchingLayers) {
  ASSERT_OK_AND_ASSIGN(auto p, PartitionLayers(kConfig, 2, "type:BLOCK"));
  EXPECT_EQ(Ends(p), (std::vector<int>{4, 8}));
  // Only blocks 0-3 weigh: they split evenly, the rest follows the last cut.
  ASSERT_OK_AND_ASSIGN(auto q, PartitionLayers(kConfig, 2, "type:block\\.[0-3]$"));
  EXPECT_EQ(q[0].weight, 2);
  EXPECT_EQ(q[1].weight, 2);
}

TEST(PartitionLayers, BadInputNamesTheKey) {
  EXPECT_THAT(PartitionLayers(kConfig, 9, "uniform"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pipeline.stages")));
  EXPECT_THAT(PartitionLayers(kConfig, 2, "type:attention"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("matches no layer")));
  EXPECT_THAT(PartitionLayers(kConfig, 2, "type:(["),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad regex")));
  EXPECT_THAT(PartitionLayers(kConfig, 2, "balanced"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pipeline.partition")));
}

TEST(Topology, PipeOutermostDataInnermost) {
  ASSERT_OK_AND_ASSIGN(Topology t, Topology::Create(8, 2));
  EXPECT_EQ(t.data_parallel_size(), 4);
  EXPECT_EQ(t.StageOf(5), 1);
  EXPECT_EQ(t.DataRankOf(5), 1);
  EXPECT_EQ(t.RankOf(1, 1), 5);
  EXPECT_EQ(t.StageRanks(1), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(t.PipelineRanks(2), (std::vector<int>{2, 6}));
  EXPECT_THAT(Topology::Create(6, 4),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not divide")));
}

}  // namespace
}  // namespace dstrain::pipe
