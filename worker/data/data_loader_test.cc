#include "worker/data/data_loader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/data/byte_tokenizer.h"
#include "worker/data/token_shard.h"

namespace dstrain::data {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string TestDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", info->test_suite_name(), "_", info->name());
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

// Token i is i (mod 65536): a window's first token says where it starts.
std::vector<uint16_t> Iota(size_t n) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint16_t>(i);
  return v;
}

std::vector<uint16_t> Scrambled(size_t n, uint32_t salt = 0) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint16_t>((i + salt) * 2654435761u >> 11);
  return v;
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  bool operator==(const Batch& o) const { return inputs == o.inputs && targets == o.targets; }
};

Batch Next(DataLoader& loader) {
  const size_t n = loader.options().batch_size * loader.options().seq_len;
  Batch b{std::vector<int32_t>(n), std::vector<int32_t>(n)};
  loader.NextBatch(b.inputs.data(), b.targets.data());
  return b;
}

DataLoader MakeLoader(std::shared_ptr<const DataSource> source, int64_t B, int64_t T, int rank = 0,
                      int world = 1, uint64_t seed = 1337, bool shuffle = true) {
  DataLoaderOptions o;
  o.batch_size = B;
  o.seq_len = T;
  o.rank = rank;
  o.world_size = world;
  o.seed = seed;
  o.shuffle = shuffle;
  absl::StatusOr<DataLoader> loader = DataLoader::Create(std::move(source), o);
  EXPECT_THAT(loader, IsOk());
  return std::move(*loader);
}

TEST(DataLoader, TargetsAreInputsShiftedWithinAWindow) {
  auto source = DataSource::FromTokens("scrambled", Scrambled(5000));
  const std::vector<uint16_t> tokens(source->part(0).begin(), source->part(0).end());
  const int64_t B = 3, T = 8;
  DataLoader loader = MakeLoader(source, B, T);
  for (int step = 0; step < 20; ++step) {
    const Batch b = Next(loader);
    for (int64_t r = 0; r < B; ++r) {
      for (int64_t t = 0; t + 1 < T; ++t) {
        ASSERT_EQ(b.targets[r * T + t], b.inputs[r * T + t + 1]);
      }
      // The row is the window of T+1 tokens at a multiple of T somewhere in the source.
      bool found = false;
      for (size_t start = 0; start + T + 1 <= tokens.size() && !found; start += T) {
        bool match = true;
        for (int64_t t = 0; t < T && match; ++t) {
          match = tokens[start + t] == b.inputs[r * T + t] &&
                  tokens[start + t + 1] == b.targets[r * T + t];
        }
        found = match;
      }
      ASSERT_TRUE(found) << "step " << step << " row " << r;
    }
  }
}

TEST(DataLoader, SameSeedSameBatchesOtherSeedOtherBatches) {
  auto source = DataSource::FromTokens("s", Scrambled(20000));
  DataLoader a = MakeLoader(source, 4, 16, 0, 1, /*seed=*/7);
  DataLoader b = MakeLoader(source, 4, 16, 0, 1, /*seed=*/7);
  DataLoader c = MakeLoader(source, 4, 16, 0, 1, /*seed=*/8);
  bool any_differs = false;
  for (int i = 0; i < 50; ++i) {
    const Batch ba = Next(a);
    ASSERT_EQ(ba, Next(b)) << i;
    any_differs |= !(ba == Next(c));
  }
  EXPECT_TRUE(any_differs);
}

// The property data-parallel training rests on: for the same B * world, the union over ranks of a
// global batch is the same sequences, in the same order, as one rank with B * world.
void ExpectWorldEquivalence(int world, bool shuffle) {
  auto source = DataSource::FromTokens("s", Scrambled(3001));
  const int64_t B = 2, T = 10;  // 300 windows, 300 / (2 * world) global batches per epoch
  DataLoader single = MakeLoader(source, B * world, T, 0, 1, 99, shuffle);
  std::vector<DataLoader> ranks;
  for (int r = 0; r < world; ++r) ranks.push_back(MakeLoader(source, B, T, r, world, 99, shuffle));
  const uint64_t steps = 3 * single.batches_per_epoch() + 2;  // across several rollovers
  for (uint64_t step = 0; step < steps; ++step) {
    const Batch whole = Next(single);
    Batch joined;
    for (DataLoader& rank : ranks) {
      const Batch part = Next(rank);
      joined.inputs.insert(joined.inputs.end(), part.inputs.begin(), part.inputs.end());
      joined.targets.insert(joined.targets.end(), part.targets.begin(), part.targets.end());
    }
    ASSERT_EQ(whole, joined) << "world " << world << " step " << step;
    for (DataLoader& rank : ranks) ASSERT_EQ(rank.State(), single.State());
  }
}

TEST(DataLoader, WorldTwoEqualsOneRankWithDoubleBatch) {
  ExpectWorldEquivalence(2, /*shuffle=*/true);
  ExpectWorldEquivalence(2, /*shuffle=*/false);
}

TEST(DataLoader, WorldFourEqualsOneRankWithQuadrupleBatch) {
  ExpectWorldEquivalence(4, /*shuffle=*/true);
  ExpectWorldEquivalence(4, /*shuffle=*/false);
}

TEST(DataLoader, ResumeEqualsUninterrupted) {
  auto source = DataSource::FromTokens("s", Scrambled(4001));
  DataLoader run = MakeLoader(source, 4, 10);  // 400 windows, 100 batches per epoch
  for (int i = 0; i < 97; ++i) Next(run);
  const LoaderState saved = run.State();
  EXPECT_EQ(saved, (LoaderState{0, 388}));
  std::vector<Batch> expected;
  for (int i = 0; i < 10; ++i) expected.push_back(Next(run));  // crosses into epoch 1

  DataLoader resumed = MakeLoader(source, 4, 10);
  Next(resumed);  // a position that Restore must discard
  ASSERT_THAT(resumed.Restore(saved), IsOk());
  EXPECT_EQ(resumed.State(), saved);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(Next(resumed), expected[i]) << i;
  EXPECT_EQ(resumed.State(), run.State());
  EXPECT_EQ(run.State(), (LoaderState{1, 28}));
}

TEST(DataLoader, StateRestoresOntoAnotherWorldSize) {
  // A job checkpointed on 1 rank with B=4 resumes on 2 ranks with B=2: same sequences.
  auto source = DataSource::FromTokens("s", Scrambled(4001));
  DataLoader single = MakeLoader(source, 4, 10);
  for (int i = 0; i < 33; ++i) Next(single);
  const LoaderState saved = single.State();
  DataLoader r0 = MakeLoader(source, 2, 10, 0, 2);
  DataLoader r1 = MakeLoader(source, 2, 10, 1, 2);
  ASSERT_THAT(r0.Restore(saved), IsOk());
  ASSERT_THAT(r1.Restore(saved), IsOk());
  for (int i = 0; i < 5; ++i) {
    const Batch whole = Next(single);
    const Batch a = Next(r0), b = Next(r1);
    std::vector<int32_t> joined = a.inputs;
    joined.insert(joined.end(), b.inputs.begin(), b.inputs.end());
    ASSERT_EQ(joined, whole.inputs) << i;
  }
}

TEST(DataLoader, RestoreRejectsAStateFromOtherData) {
  auto source = DataSource::FromTokens("small", Scrambled(101));
  DataLoader loader = MakeLoader(source, 2, 10);  // 10 windows
  EXPECT_THAT(loader.Restore(LoaderState{0, 11}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("small")));
  // The end of an epoch (or a partial last batch) is the start of the next one.
  ASSERT_THAT(loader.Restore(LoaderState{3, 10}), IsOk());
  EXPECT_EQ(loader.State(), (LoaderState{4, 0}));
  ASSERT_THAT(loader.Restore(LoaderState{3, 9}), IsOk());
  EXPECT_EQ(loader.State(), (LoaderState{4, 0}));
}

TEST(DataLoader, EachEpochCoversEveryWindowExactlyOnce) {
  const int64_t B = 3, T = 7;
  const int world = 2;
  const size_t windows = 6 * 50;  // divisible by B * world
  auto source = DataSource::FromTokens("iota", Iota(windows * T + 1));
  std::vector<DataLoader> ranks;
  for (int r = 0; r < world; ++r) ranks.push_back(MakeLoader(source, B, T, r, world));
  ASSERT_EQ(ranks[0].num_windows(), windows);
  ASSERT_EQ(ranks[0].batches_per_epoch(), 50u);
  std::vector<std::vector<uint64_t>> orders;
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<uint64_t> order;
    for (uint64_t g = 0; g < ranks[0].batches_per_epoch(); ++g) {
      ASSERT_EQ(ranks[0].State(), (LoaderState{epoch, g * B * world}));
      for (DataLoader& rank : ranks) {
        const Batch b = Next(rank);
        for (int64_t r = 0; r < B; ++r) {
          ASSERT_EQ(b.inputs[r * T] % T, 0);
          order.push_back(b.inputs[r * T] / T);
        }
      }
    }
    std::vector<uint64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (size_t w = 0; w < windows; ++w) ASSERT_EQ(sorted[w], w) << "epoch " << epoch;
    orders.push_back(order);
  }
  EXPECT_EQ(ranks[0].State(), (LoaderState{3, 0}));
  EXPECT_NE(orders[0], orders[1]);  // each epoch is its own permutation
  EXPECT_NE(orders[1], orders[2]);
}

TEST(DataLoader, DropLastSkipsAPartialGlobalBatchWithoutRepeats) {
  const int64_t B = 4, T = 5;
  auto source = DataSource::FromTokens("iota", Iota(23 * T + 1));  // 23 windows, 5 batches of 4
  DataLoader loader = MakeLoader(source, B, T);
  EXPECT_EQ(loader.batches_per_epoch(), 5u);
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::set<int32_t> seen;
    for (int g = 0; g < 5; ++g) {
      const Batch b = Next(loader);
      for (int64_t r = 0; r < B; ++r) ASSERT_TRUE(seen.insert(b.inputs[r * T]).second);
    }
    EXPECT_EQ(seen.size(), 20u);
    EXPECT_EQ(loader.State(), (LoaderState{static_cast<uint64_t>(epoch) + 1, 0}));
  }
}

TEST(DataLoader, UnshuffledReadsSequentiallyLikeLlmc) {
  const int64_t B = 2, T = 4;
  const int world = 2;
  auto source = DataSource::FromTokens("iota", Iota(41));  // 10 windows: 2 global batches
  DataLoader r0 = MakeLoader(source, B, T, 0, world, 1, /*shuffle=*/false);
  DataLoader r1 = MakeLoader(source, B, T, 1, world, 1, /*shuffle=*/false);
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (int g = 0; g < 2; ++g) {
      // llm.c: rank r reads B*T+1 tokens at g*B*T*world + r*B*T.
      for (int r = 0; r < world; ++r) {
        const Batch b = Next(r == 0 ? r0 : r1);
        const int32_t start = (g * world + r) * B * T;
        for (int32_t i = 0; i < B * T; ++i) {
          ASSERT_EQ(b.inputs[i], start + i);
          ASSERT_EQ(b.targets[i], start + i + 1);
        }
      }
    }
  }
}

TEST(DataLoader, ShardSourceWindowsNeverCrossShards) {
  const std::string dir = TestDir();
  const int64_t T = 10;
  // Shard s holds s*10000 + i, so a window's tokens are consecutive iff it stays in one shard.
  const std::vector<size_t> sizes = {105, 0, 7, 31, 11};  // 10, 0, 0, 3, 1 windows
  for (size_t s = 0; s < sizes.size(); ++s) {
    std::vector<uint16_t> tokens(sizes[s]);
    for (size_t i = 0; i < sizes[s]; ++i) tokens[i] = static_cast<uint16_t>(s * 10000 + i);
    ASSERT_THAT(WriteTokenShard(absl::StrFormat("%s/train_%06d.bin", dir, s), tokens), IsOk());
  }
  absl::StatusOr<std::shared_ptr<const DataSource>> source = DataSource::Open(dir + "/train_*.bin");
  ASSERT_THAT(source, IsOk());
  ASSERT_EQ((*source)->num_parts(), 5u);
  EXPECT_EQ((*source)->part_name(3), dir + "/train_000003.bin");
  EXPECT_EQ((*source)->num_tokens(), 105u + 7 + 31 + 11);
  DataLoader loader = MakeLoader(*source, 2, T);
  ASSERT_EQ(loader.num_windows(), 14u);
  std::set<int32_t> starts;
  for (int g = 0; g < 7; ++g) {
    const Batch b = Next(loader);
    for (int r = 0; r < 2; ++r) {
      const int32_t first = b.inputs[r * T];
      EXPECT_EQ(first % 10000 % T, 0);
      starts.insert(first);
      for (int64_t t = 0; t < T; ++t) {
        ASSERT_EQ(b.inputs[r * T + t], first + t);
        ASSERT_EQ(b.targets[r * T + t], first + t + 1);
      }
    }
  }
  EXPECT_EQ(starts,
            (std::set<int32_t>{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 30000, 30010, 30020, 40000}));
}

TEST(DataLoader, TextSourceEqualsTheSameTextAsAShard) {
  const std::string dir = TestDir();
  std::string text;
  for (int i = 0; i < 300; ++i) absl::StrAppend(&text, "All the world's a stage ", i, ".\n");
  std::ofstream(dir + "/corpus.txt", std::ios::binary) << text;
  ASSERT_THAT(WriteTokenShard(dir + "/corpus.bin", ByteTokenizer::Encode(text)), IsOk());
  absl::StatusOr<std::shared_ptr<const DataSource>> from_text =
      DataSource::Open(dir + "/corpus.txt");
  absl::StatusOr<std::shared_ptr<const DataSource>> from_shard =
      DataSource::Open(dir + "/corpus.bin");
  ASSERT_THAT(from_text, IsOk());
  ASSERT_THAT(from_shard, IsOk());
  EXPECT_EQ((*from_text)->num_tokens(), text.size());
  DataLoader a = MakeLoader(*from_text, 4, 32);
  DataLoader b = MakeLoader(*from_shard, 4, 32);
  for (int i = 0; i < 30; ++i) ASSERT_EQ(Next(a), Next(b)) << i;
}

TEST(DataLoader, TinyShakespeareTextStartsWithFirstCitizen) {
  absl::StatusOr<std::shared_ptr<const DataSource>> source =
      DataSource::Open("deploy/local/demo/tinyshakespeare.txt");
  ASSERT_THAT(source, IsOk());
  EXPECT_EQ((*source)->num_tokens(), 1115394u);
  EXPECT_LT((*source)->MaxToken(), 128);  // plain ASCII
  EXPECT_THAT((*source)->CheckVocab(256), IsOk());
  DataLoader loader = MakeLoader(*source, 2, 64, 0, 1, 0, /*shuffle=*/false);
  const Batch b = Next(loader);
  std::vector<uint16_t> first(b.inputs.begin(), b.inputs.begin() + 14);
  EXPECT_EQ(ByteTokenizer::Decode(first), "First Citizen:");
}

TEST(DataLoader, ResetReplaysTheSameBatches) {
  auto source = DataSource::FromTokens("val", Scrambled(2001));
  DataLoader val = MakeLoader(source, 2, 10, 0, 1, 5, /*shuffle=*/false);
  std::vector<Batch> first;
  for (int i = 0; i < 4; ++i) first.push_back(Next(val));
  val.Reset();
  EXPECT_EQ(val.State(), LoaderState{});
  for (int i = 0; i < 4; ++i) ASSERT_EQ(Next(val), first[i]);
}

TEST(DataLoader, MaxTokenAndVocabCheck) {
  auto source = DataSource::FromTokens("odd.bin", {1, 300, 5, 299});
  EXPECT_EQ(source->MaxToken(), 300);
  EXPECT_THAT(source->CheckVocab(256),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("odd.bin"), HasSubstr("token 300"), HasSubstr("index 1"))));
  EXPECT_THAT(source->CheckVocab(301), IsOk());
}

TEST(DataLoader, RejectsTooSmallDataAndBadOptions) {
  auto source = DataSource::FromTokens("tiny", Iota(41));  // 10 windows of T+1 = 5
  DataLoaderOptions o;
  o.batch_size = 3;
  o.seq_len = 4;
  o.world_size = 4;  // needs 12 windows
  EXPECT_THAT(DataLoader::Create(source, o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tiny"), HasSubstr("too small"), HasSubstr("10 windows"),
                             HasSubstr("= 12"))));
  o.world_size = 3;  // 9 windows: fits
  EXPECT_THAT(DataLoader::Create(source, o), IsOk());
  o.seq_len = 41;  // no window at all: 41 tokens cannot hold 42
  EXPECT_THAT(DataLoader::Create(source, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0 windows")));

  DataLoaderOptions bad;
  bad.batch_size = 0;
  bad.seq_len = 4;
  EXPECT_THAT(DataLoader::Create(source, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch_size")));
  bad.batch_size = 1;
  bad.seq_len = 0;
  EXPECT_THAT(DataLoader::Create(source, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("seq_len")));
  bad.seq_len = 4;
  bad.world_size = 2;
  bad.rank = 2;
  EXPECT_THAT(DataLoader::Create(source, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 2")));
  bad.rank = -1;
  EXPECT_THAT(DataLoader::Create(source, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank -1")));
  bad.rank = 0;
  bad.world_size = 0;
  EXPECT_THAT(DataLoader::Create(source, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("world_size")));
  EXPECT_THAT(DataLoader::Create(nullptr, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("source")));
}

TEST(DataSource, OpenErrorsNameThePath) {
  const std::string dir = TestDir();
  EXPECT_THAT(DataSource::Open(dir + "/missing.txt"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/missing.txt")));
  EXPECT_THAT(DataSource::Open(dir + "/train_*.bin"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/train_*.bin")));
  std::ofstream(dir + "/empty.txt") << "";
  EXPECT_THAT(DataSource::Open(dir + "/empty.txt"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(dir + "/empty.txt")));
  ASSERT_THAT(WriteTokenShard(dir + "/good_0.bin", Iota(100)), IsOk());
  std::ofstream(dir + "/good_1.bin") << "not a shard";
  EXPECT_THAT(DataSource::Open(dir + "/good_*.bin"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(dir + "/good_1.bin")));
}

}  // namespace
}  // namespace dstrain::data
