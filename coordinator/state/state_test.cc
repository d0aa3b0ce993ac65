// CoordinatorState over MemKvDb (every record kind, ordering, paging, retention, bad data), and
// over RocksKvDb across a close and reopen of the same directory.
#include "coordinator/state/state.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "coordinator/state/kv_db.h"
#include "coordinator/state/mem_kv_db.h"
#include "coordinator/state/rocks_kv_db.h"
#include "coordinator/state/state_keys.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

v1::Job MakeJob(const std::string& id, v1::JobState state = v1::JOB_STATE_PENDING) {
  v1::Job job;
  job.set_job_id(id);
  job.set_name("demo");
  job.set_world_size(2);
  job.set_state(state);
  return job;
}

v1::JobEvent MakeEvent(v1::JobState from, v1::JobState to, const std::string& reason) {
  v1::JobEvent event;
  event.set_from_state(from);
  event.set_to_state(to);
  event.set_reason(reason);
  event.mutable_time()->set_seconds(1'700'000'000);
  return event;
}

v1::ShardInfo MakeShard(int rank, int64_t bytes) {
  v1::ShardInfo shard;
  shard.set_rank(rank);
  shard.set_path(absl::StrCat("ckpt/rank", rank, ".bin"));
  shard.set_bytes(bytes);
  shard.set_crc32c(0x1234u + rank);
  return shard;
}

v1::StepMetrics MakeMetrics(int32_t attempt, int64_t step) {
  v1::StepMetrics metrics;
  metrics.set_attempt(attempt);
  metrics.set_step(step);
  metrics.set_loss(1.0 / static_cast<double>(step + 1));
  return metrics;
}

v1::LogLine MakeLine(int32_t rank, const std::string& text) {
  v1::LogLine line;
  line.set_rank(rank);
  line.set_text(text);
  return line;
}

std::vector<std::string> JobIds(const std::vector<v1::Job>& jobs) {
  std::vector<std::string> ids;
  for (const v1::Job& job : jobs) ids.push_back(job.job_id());
  return ids;
}

std::vector<std::pair<int32_t, int64_t>> Positions(const std::vector<v1::StepMetrics>& metrics) {
  std::vector<std::pair<int32_t, int64_t>> out;
  for (const v1::StepMetrics& m : metrics) out.emplace_back(m.attempt(), m.step());
  return out;
}

std::vector<int64_t> Sequences(const std::vector<v1::LogLine>& lines) {
  std::vector<int64_t> out;
  for (const v1::LogLine& line : lines) out.push_back(line.sequence());
  return out;
}

class CoordinatorStateTest : public ::testing::Test {
 protected:
  // Appends `n` lines from `rank` and expects it to work.
  void AppendLines(CoordinatorState& state, const std::string& job, int32_t rank, int n) {
    std::vector<v1::LogLine> lines;
    for (int i = 0; i < n; ++i) lines.push_back(MakeLine(rank, absl::StrCat("line ", i)));
    ASSERT_THAT(state.AppendLogs(job, std::move(lines)), IsOk());
  }

  void PutRaw(Table table, const std::string& key, const std::string& value) {
    WriteBatch batch;
    batch.Put(table, key, value);
    ASSERT_THAT(db_.Write(batch, Durability::kSync), IsOk());
  }

  MemKvDb db_;
  CoordinatorState state_{&db_};
};

// A secret is random, made once and kept (a second state over the same database sees it), lives
// outside the rendezvous key space StoreService serves, and differs by name.
TEST_F(CoordinatorStateTest, SecretsAreMadeOnceAndKeptApart) {
  auto a = state_.Secret("store-credentials", 32);
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(*a, std::string(32, '\0'));
  CoordinatorState again(&db_);
  auto b = again.Secret("store-credentials", 32);
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(*a, *b);
  auto other = state_.Secret("other", 32);
  ASSERT_THAT(other, IsOk());
  EXPECT_NE(*other, *a);
  auto kv = state_.KvGet("store-credentials");
  ASSERT_THAT(kv, IsOk());
  EXPECT_FALSE(kv->has_value());
}

// A line over the byte bound is cut at a character boundary and marked; shorter ones are kept.
TEST_F(CoordinatorStateTest, LongLogLinesAreCut) {
  CoordinatorStateOptions options;
  options.max_log_line_bytes = 100;
  CoordinatorState state(&db_, options);
  // 99 bytes of 'a', then a 3-byte character straddling the bound.
  const std::string long_line = std::string(99, 'a') + "\xE2\x82\xAC" + std::string(1000, 'b');
  auto stored = state.AppendLogs("cut", {MakeLine(0, long_line), MakeLine(0, "short")});
  ASSERT_THAT(stored, IsOk());
  EXPECT_EQ((*stored)[0].text(), std::string(99, 'a') + " [... 1003 bytes cut]");
  EXPECT_EQ((*stored)[1].text(), "short");
  auto read = state.ListLogs("cut", 0, std::nullopt, 0, 10);
  ASSERT_THAT(read, IsOk());
  ASSERT_EQ(read->size(), 2u) << "the cut line still parses (valid UTF-8)";
  EXPECT_EQ((*read)[0].text(), (*stored)[0].text());
}

// ListMetricsPage in pages of any size gives exactly ListMetrics: attempt 1 steps 1-7, attempt 2
// (resumed) steps 4-9, from step 3, so each attempt's early steps are skipped inside a page.
TEST_F(CoordinatorStateTest, MetricsPagesAddUpToTheWholeList) {
  for (uint32_t attempt : {1u, 2u}) {
    for (int64_t step = attempt == 1 ? 1 : 4; step <= (attempt == 1 ? 7 : 9); ++step) {
      v1::StepMetrics m;
      m.set_attempt(attempt);
      m.set_step(step);
      ASSERT_THAT(state_.AppendMetrics("paged", m), IsOk());
    }
  }
  auto whole = state_.ListMetrics("paged", 3, 0);
  ASSERT_THAT(whole, IsOk());
  ASSERT_EQ(whole->size(), 5u + 6u);
  for (int page : {1, 2, 3, 100}) {
    std::vector<std::pair<int, int64_t>> got;
    CoordinatorState::MetricsCursor cursor;
    while (true) {
      auto p = state_.ListMetricsPage("paged", 3, cursor, page);
      ASSERT_THAT(p, IsOk());
      for (const v1::StepMetrics& m : *p) {
        got.emplace_back(m.attempt(), m.step());
        cursor = {static_cast<uint32_t>(m.attempt()), static_cast<uint64_t>(m.step())};
      }
      if (static_cast<int>(p->size()) < page) break;
    }
    std::vector<std::pair<int, int64_t>> want;
    for (const v1::StepMetrics& m : *whole) want.emplace_back(m.attempt(), m.step());
    EXPECT_EQ(got, want) << "pages of " << page;
  }
}

TEST_F(CoordinatorStateTest, PutJobStoresTheJobAndNumbersItsEvents) {
  v1::Job job = MakeJob("train-1");
  const v1::JobEvent submitted =
      MakeEvent(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING, "Submitted");
  absl::StatusOr<int64_t> sequence = state_.PutJob(job, &submitted);
  ASSERT_THAT(sequence, IsOk());
  EXPECT_EQ(*sequence, 1);

  job.set_state(v1::JOB_STATE_SCHEDULED);
  v1::JobEvent scheduled = MakeEvent(v1::JOB_STATE_PENDING, v1::JOB_STATE_SCHEDULED, "Gang");
  scheduled.set_sequence(77);  // ignored: the state numbers events
  sequence = state_.PutJob(job, &scheduled);
  ASSERT_THAT(sequence, IsOk());
  EXPECT_EQ(*sequence, 2);
  job.set_current_step(5);
  sequence = state_.PutJob(job, nullptr);
  ASSERT_THAT(sequence, IsOk());
  EXPECT_EQ(*sequence, 0);

  // A job whose id extends this one keeps its own history.
  const v1::JobEvent other = MakeEvent(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING, "Sub");
  sequence = state_.PutJob(MakeJob("train-1-b"), &other);
  ASSERT_THAT(sequence, IsOk());
  EXPECT_EQ(*sequence, 1);

  absl::StatusOr<std::optional<v1::Job>> stored = state_.GetJob("train-1");
  ASSERT_THAT(stored, IsOk());
  ASSERT_TRUE(stored->has_value());
  EXPECT_EQ((*stored)->state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ((*stored)->current_step(), 5);
  stored = state_.GetJob("missing");
  ASSERT_THAT(stored, IsOk());
  EXPECT_FALSE(stored->has_value());

  absl::StatusOr<std::vector<v1::JobEvent>> events = state_.ListEvents("train-1", 0);
  ASSERT_THAT(events, IsOk());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].sequence(), 1);
  EXPECT_EQ((*events)[0].job_id(), "train-1");
  EXPECT_EQ((*events)[0].reason(), "Submitted");
  EXPECT_EQ((*events)[1].sequence(), 2);
  EXPECT_EQ((*events)[1].to_state(), v1::JOB_STATE_SCHEDULED);
  events = state_.ListEvents("train-1", 2);
  ASSERT_THAT(events, IsOk());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].reason(), "Gang");
  events = state_.ListEvents("train-1", 3);
  ASSERT_THAT(events, IsOk());
  EXPECT_THAT(*events, IsEmpty());
}

TEST_F(CoordinatorStateTest, RejectsAnEventOfAnotherJobAndBadIds) {
  v1::JobEvent event = MakeEvent(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING, "Submitted");
  event.set_job_id("other");
  EXPECT_THAT(state_.PutJob(MakeJob("mine"), &event),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("other")));
  for (const std::string& bad : {std::string(""), std::string("Upper"), std::string("a/b"),
                                 std::string("a_b"), std::string(64, 'a')}) {
    EXPECT_THAT(state_.PutJob(MakeJob(bad), nullptr),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job id")))
        << bad;
    EXPECT_THAT(state_.GetJob(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job id")));
  }
  EXPECT_THAT(state_.PutJob(MakeJob(std::string(63, 'a')), nullptr), IsOk());
}

TEST_F(CoordinatorStateTest, ListsJobsInIdOrderAndByPage) {
  for (const char* id : {"c", "a", "e", "b", "d"}) {
    ASSERT_THAT(
        state_.PutJob(MakeJob(id, id[0] % 2 == 1 ? v1::JOB_STATE_RUNNING : v1::JOB_STATE_PENDING),
                      nullptr),
        IsOk());
  }
  std::vector<std::string> all;
  ASSERT_THAT(state_.ListJobs([&](const v1::Job& job) {
    all.push_back(job.job_id());
    return true;
  }),
              IsOk());
  EXPECT_THAT(all, ElementsAre("a", "b", "c", "d", "e"));
  std::vector<std::string> first_two;
  ASSERT_THAT(state_.ListJobs([&](const v1::Job& job) {
    first_two.push_back(job.job_id());
    return first_two.size() < 2;
  }),
              IsOk());
  EXPECT_THAT(first_two, ElementsAre("a", "b"));

  absl::StatusOr<std::vector<v1::Job>> page = state_.ListJobsPage("", 2);
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(JobIds(*page), ElementsAre("a", "b"));
  page = state_.ListJobsPage("b", 2);
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(JobIds(*page), ElementsAre("c", "d"));
  page = state_.ListJobsPage("d", 2);
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(JobIds(*page), ElementsAre("e"));
  page = state_.ListJobsPage("bb", 10);  // need not exist
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(JobIds(*page), ElementsAre("c", "d", "e"));

  // 'a', 'c', 'e' have odd character codes: RUNNING.
  auto running = [](const v1::Job& job) { return job.state() == v1::JOB_STATE_RUNNING; };
  page = state_.ListJobsPage("", 2, running);
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(JobIds(*page), ElementsAre("a", "c"));
  page = state_.ListJobsPage("c", 2, running);
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(JobIds(*page), ElementsAre("e"));

  EXPECT_THAT(state_.ListJobsPage("", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST_F(CoordinatorStateTest, StoresWorkers) {
  v1::Worker w1;
  w1.set_worker_id("w1");
  w1.set_cpu_slots(2);
  w1.set_state(v1::WORKER_STATE_READY);
  v1::Worker w0 = w1;
  w0.set_worker_id("w0");
  ASSERT_THAT(state_.PutWorker(w1), IsOk());
  ASSERT_THAT(state_.PutWorker(w0), IsOk());
  w1.set_state(v1::WORKER_STATE_LOST);
  ASSERT_THAT(state_.PutWorker(w1), IsOk());

  absl::StatusOr<std::optional<v1::Worker>> got = state_.GetWorker("w1");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->state(), v1::WORKER_STATE_LOST);
  EXPECT_EQ((*got)->cpu_slots(), 2);
  got = state_.GetWorker("w9");
  ASSERT_THAT(got, IsOk());
  EXPECT_FALSE(got->has_value());

  absl::StatusOr<std::vector<v1::Worker>> all = state_.ListWorkers();
  ASSERT_THAT(all, IsOk());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].worker_id(), "w0");
  EXPECT_EQ((*all)[1].worker_id(), "w1");

  EXPECT_THAT(state_.PutWorker(v1::Worker()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("worker_id")));
}

TEST_F(CoordinatorStateTest, CheckpointGoesFromPendingToCommitted) {
  ASSERT_THAT(state_.RegisterShard("job", "step_200", 200, MakeShard(1, 100)), IsOk());
  ASSERT_THAT(state_.RegisterShard("job", "step_200", 200, MakeShard(0, 10)), IsOk());
  ASSERT_THAT(state_.RegisterShard("job", "step_200", 200, MakeShard(1, 1000)), IsOk());  // retry

  absl::StatusOr<std::vector<v1::Checkpoint>> list = state_.ListCheckpoints("job");
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->size(), 1u);
  const v1::Checkpoint& pending = (*list)[0];
  EXPECT_EQ(pending.job_id(), "job");
  EXPECT_EQ(pending.tag(), "step_200");
  EXPECT_EQ(pending.step(), 200);
  EXPECT_EQ(pending.state(), v1::CHECKPOINT_STATE_PENDING);
  ASSERT_EQ(pending.shards_size(), 2);
  EXPECT_EQ(pending.shards(0).rank(), 0);
  EXPECT_EQ(pending.shards(1).rank(), 1);
  EXPECT_EQ(pending.shards(1).bytes(), 1000);
  EXPECT_EQ(pending.total_bytes(), 1010);
  EXPECT_TRUE(pending.path().empty());
  EXPECT_FALSE(pending.has_commit_time());

  EXPECT_THAT(state_.RegisterShard("job", "step_200", 300, MakeShard(2, 1)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("step 200")));
  EXPECT_THAT(state_.CommitCheckpoint("job", "step_200", 201, "ckpt/step_200", absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("step 200")));

  const absl::Time when = absl::FromUnixSeconds(1'700'000'123) + absl::Milliseconds(250);
  absl::StatusOr<v1::Checkpoint> committed =
      state_.CommitCheckpoint("job", "step_200", 200, "ckpt/step_200", when);
  ASSERT_THAT(committed, IsOk());
  EXPECT_EQ(committed->state(), v1::CHECKPOINT_STATE_COMMITTED);
  EXPECT_EQ(committed->path(), "ckpt/step_200");
  EXPECT_EQ(committed->total_bytes(), 1010);
  EXPECT_EQ(committed->commit_time().seconds(), 1'700'000'123);
  EXPECT_EQ(committed->commit_time().nanos(), 250'000'000);

  // A retried commit returns the record as first committed; another manifest is refused.
  absl::StatusOr<v1::Checkpoint> again =
      state_.CommitCheckpoint("job", "step_200", 200, "ckpt/step_200", when + absl::Seconds(9));
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->commit_time().seconds(), 1'700'000'123);
  EXPECT_THAT(state_.CommitCheckpoint("job", "step_200", 200, "elsewhere", when),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("COMMITTED")));
  EXPECT_THAT(state_.RegisterShard("job", "step_200", 200, MakeShard(0, 1)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("COMMITTED")));

  absl::StatusOr<std::optional<v1::Checkpoint>> latest = state_.LatestCommitted("job");
  ASSERT_THAT(latest, IsOk());
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->tag(), "step_200");
}

TEST_F(CoordinatorStateTest, CommitOfAnUnknownCheckpointIsNotFound) {
  ASSERT_THAT(state_.RegisterShard("job", "step_1", 1, MakeShard(0, 1)), IsOk());
  EXPECT_THAT(state_.CommitCheckpoint("job", "step_2", 2, "p", absl::Now()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("step_2")));
  EXPECT_THAT(state_.CommitCheckpoint("other", "step_1", 1, "p", absl::Now()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("other")));
  EXPECT_THAT(state_.RegisterShard("job", "", 1, MakeShard(0, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tag")));
  EXPECT_THAT(state_.RegisterShard("job", "t", 1, MakeShard(-1, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank")));
}

TEST_F(CoordinatorStateTest, ListsCheckpointsByStepAndFindsTheLatestCommitted) {
  // Tag order ("step_1000" < "step_200" < "step_50") is not step order.
  for (int64_t step : {1000, 50, 200}) {
    ASSERT_THAT(state_.RegisterShard("job", absl::StrCat("step_", step), step, MakeShard(0, step)),
                IsOk());
  }
  absl::StatusOr<std::optional<v1::Checkpoint>> latest = state_.LatestCommitted("job");
  ASSERT_THAT(latest, IsOk());
  EXPECT_FALSE(latest->has_value());

  ASSERT_THAT(state_.CommitCheckpoint("job", "step_50", 50, "p50", absl::Now()), IsOk());
  ASSERT_THAT(state_.CommitCheckpoint("job", "step_200", 200, "p200", absl::Now()), IsOk());

  absl::StatusOr<std::vector<v1::Checkpoint>> list = state_.ListCheckpoints("job");
  ASSERT_THAT(list, IsOk());
  std::vector<int64_t> steps;
  for (const v1::Checkpoint& c : *list) steps.push_back(c.step());
  EXPECT_THAT(steps, ElementsAre(50, 200, 1000));

  latest = state_.LatestCommitted("job");  // step_1000 is still PENDING
  ASSERT_THAT(latest, IsOk());
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->tag(), "step_200");
  EXPECT_EQ((*latest)->path(), "p200");
}

TEST_F(CoordinatorStateTest, ConcurrentShardRegistrationsAreAllKept) {
  constexpr int kRanks = 8;
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kRanks; ++rank) {
    ranks.emplace_back([this, rank] {
      EXPECT_THAT(state_.RegisterShard("job", "t", 7, MakeShard(rank, 1)), IsOk());
    });
  }
  for (std::thread& thread : ranks) thread.join();
  absl::StatusOr<std::vector<v1::Checkpoint>> list = state_.ListCheckpoints("job");
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->size(), 1u);
  ASSERT_EQ((*list)[0].shards_size(), kRanks);
  for (int rank = 0; rank < kRanks; ++rank) EXPECT_EQ((*list)[0].shards(rank).rank(), rank);
  EXPECT_EQ((*list)[0].total_bytes(), kRanks);
}

TEST_F(CoordinatorStateTest, MetricsAreOrderedByAttemptThenStep) {
  // Attempt 1 reaches step 300, restarts from a checkpoint at 256 and attempt 2 re-runs 257+.
  for (int64_t step : {1, 9, 10, 255, 256, 257, 300}) {
    ASSERT_THAT(state_.AppendMetrics("job", MakeMetrics(1, step)), IsOk());
  }
  for (int64_t step : {258, 257, 400}) {  // arrival order does not matter
    ASSERT_THAT(state_.AppendMetrics("job", MakeMetrics(2, step)), IsOk());
  }
  ASSERT_THAT(state_.AppendMetrics("job-2", MakeMetrics(9, 9)), IsOk());
  v1::StepMetrics replaced = MakeMetrics(2, 400);
  replaced.set_loss(42);
  ASSERT_THAT(state_.AppendMetrics("job", replaced), IsOk());

  absl::StatusOr<std::vector<v1::StepMetrics>> all = state_.ListMetrics("job", 0, 0);
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(Positions(*all),
              ElementsAre(Pair(1, 1), Pair(1, 9), Pair(1, 10), Pair(1, 255), Pair(1, 256),
                          Pair(1, 257), Pair(1, 300), Pair(2, 257), Pair(2, 258), Pair(2, 400)));
  absl::StatusOr<std::vector<v1::StepMetrics>> from = state_.ListMetrics("job", 257, 0);
  ASSERT_THAT(from, IsOk());
  EXPECT_THAT(Positions(*from),
              ElementsAre(Pair(1, 257), Pair(1, 300), Pair(2, 257), Pair(2, 258), Pair(2, 400)));
  absl::StatusOr<std::vector<v1::StepMetrics>> last = state_.ListMetrics("job", 0, 4);
  ASSERT_THAT(last, IsOk());
  EXPECT_THAT(Positions(*last),
              ElementsAre(Pair(1, 300), Pair(2, 257), Pair(2, 258), Pair(2, 400)));
  last = state_.ListMetrics("job", 300, 2);
  ASSERT_THAT(last, IsOk());
  EXPECT_THAT(Positions(*last), ElementsAre(Pair(1, 300), Pair(2, 400)));
  from = state_.ListMetrics("job", 1000, 0);
  ASSERT_THAT(from, IsOk());
  EXPECT_THAT(*from, IsEmpty());

  absl::StatusOr<std::optional<v1::StepMetrics>> latest = state_.LatestMetrics("job");
  ASSERT_THAT(latest, IsOk());
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->attempt(), 2);
  EXPECT_EQ((*latest)->step(), 400);
  EXPECT_EQ((*latest)->loss(), 42);
  latest = state_.LatestMetrics("nothing");
  ASSERT_THAT(latest, IsOk());
  EXPECT_FALSE(latest->has_value());

  EXPECT_THAT(state_.AppendMetrics("job", MakeMetrics(1, -1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step")));
  EXPECT_THAT(state_.AppendMetrics("job", MakeMetrics(-1, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("attempt")));
}

TEST_F(CoordinatorStateTest, LogsGetSequencesAndFilterByRankTailAndLimit) {
  absl::StatusOr<std::vector<v1::LogLine>> appended =
      state_.AppendLogs("job", {MakeLine(0, "a"), MakeLine(1, "b"), MakeLine(0, "c")});
  ASSERT_THAT(appended, IsOk());
  EXPECT_THAT(Sequences(*appended), ElementsAre(1, 2, 3));
  EXPECT_EQ((*appended)[1].text(), "b");
  appended = state_.AppendLogs("job", {MakeLine(1, "d"), MakeLine(0, "e")});
  ASSERT_THAT(appended, IsOk());
  EXPECT_THAT(Sequences(*appended), ElementsAre(4, 5));
  appended = state_.AppendLogs("job-x", {MakeLine(0, "other job")});
  ASSERT_THAT(appended, IsOk());
  EXPECT_THAT(Sequences(*appended), ElementsAre(1));
  appended = state_.AppendLogs("job", {});
  ASSERT_THAT(appended, IsOk());
  EXPECT_THAT(*appended, IsEmpty());

  auto list = [&](int64_t from, std::optional<int32_t> rank, int tail, int limit) {
    absl::StatusOr<std::vector<v1::LogLine>> lines =
        state_.ListLogs("job", from, rank, tail, limit);
    EXPECT_THAT(lines, IsOk());
    return lines.ok() ? Sequences(*lines) : std::vector<int64_t>{-1};
  };
  EXPECT_THAT(list(0, std::nullopt, 0, 0), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(list(0, 1, 0, 0), ElementsAre(2, 4));
  EXPECT_THAT(list(3, std::nullopt, 0, 0), ElementsAre(3, 4, 5));
  EXPECT_THAT(list(3, 0, 0, 0), ElementsAre(3, 5));
  EXPECT_THAT(list(0, std::nullopt, 2, 0), ElementsAre(4, 5));
  EXPECT_THAT(list(0, 0, 2, 0), ElementsAre(3, 5));
  EXPECT_THAT(list(0, std::nullopt, 99, 0), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(list(4, std::nullopt, 1, 0), ElementsAre(4, 5));  // from_sequence wins over tail
  EXPECT_THAT(list(0, std::nullopt, 0, 2), ElementsAre(1, 2));
  EXPECT_THAT(list(0, std::nullopt, 4, 2), ElementsAre(2, 3));
  EXPECT_THAT(list(6, std::nullopt, 0, 0), IsEmpty());
  EXPECT_THAT(list(0, 7, 0, 0), IsEmpty());
}

TEST_F(CoordinatorStateTest, LogRetentionKeepsTheNewestLines) {
  CoordinatorState state(&db_, CoordinatorStateOptions{.max_log_lines_per_job = 5});
  AppendLines(state, "job", 0, 3);
  AppendLines(state, "job", 1, 4);
  absl::StatusOr<std::vector<v1::LogLine>> lines = state.ListLogs("job", 0, std::nullopt, 0, 0);
  ASSERT_THAT(lines, IsOk());
  EXPECT_THAT(Sequences(*lines), ElementsAre(3, 4, 5, 6, 7));

  // One call bigger than the bound: all get sequences, only the newest 5 are stored.
  std::vector<v1::LogLine> many;
  for (int i = 0; i < 10; ++i) many.push_back(MakeLine(2, absl::StrCat("many ", i)));
  absl::StatusOr<std::vector<v1::LogLine>> appended = state.AppendLogs("job", std::move(many));
  ASSERT_THAT(appended, IsOk());
  EXPECT_EQ(appended->front().sequence(), 8);
  EXPECT_EQ(appended->back().sequence(), 17);
  lines = state.ListLogs("job", 0, std::nullopt, 0, 0);
  ASSERT_THAT(lines, IsOk());
  EXPECT_THAT(Sequences(*lines), ElementsAre(13, 14, 15, 16, 17));
  EXPECT_EQ(lines->front().text(), "many 5");

  AppendLines(state, "job", 0, 1);
  lines = state.ListLogs("job", 0, std::nullopt, 0, 0);
  ASSERT_THAT(lines, IsOk());
  EXPECT_THAT(Sequences(*lines), ElementsAre(14, 15, 16, 17, 18));

  int stored = 0;  // nothing left behind the reader's back
  ASSERT_THAT(db_.Scan(Table::kLogs, "", "",
                       [&](absl::string_view, absl::string_view) {
                         ++stored;
                         return true;
                       }),
              IsOk());
  EXPECT_EQ(stored, 5);
}

TEST_F(CoordinatorStateTest, UnparsableRecordsAreDataLossNamingTableAndKey) {
  // A length-delimited field claiming 5 bytes with 2 present: no proto parses it.
  const std::string garbage =
      "\x0a\x05"
      "ab";
  PutRaw(Table::kJobs, "broken", garbage);
  EXPECT_THAT(state_.GetJob("broken"),
              StatusIs(absl::StatusCode::kDataLoss,
                       ::testing::AllOf(HasSubstr("jobs"), HasSubstr("broken"))));
  EXPECT_THAT(state_.ListJobs([](const v1::Job&) { return true; }),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("dstrain.v1.Job")));
  EXPECT_THAT(state_.ListJobsPage("", 10),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("broken")));

  PutRaw(Table::kJobEvents, state_keys::EventKey("j", 1), garbage);
  EXPECT_THAT(state_.ListEvents("j", 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("job_events")));
  PutRaw(Table::kWorkers, "w", garbage);
  EXPECT_THAT(state_.GetWorker("w"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("workers")));
  EXPECT_THAT(state_.ListWorkers(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("workers")));
  PutRaw(Table::kCheckpoints, state_keys::CheckpointKey("j", "t"), garbage);
  EXPECT_THAT(state_.RegisterShard("j", "t", 1, MakeShard(0, 1)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checkpoints")));
  EXPECT_THAT(state_.LatestCommitted("j"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checkpoints")));
  PutRaw(Table::kMetrics, state_keys::MetricsKey("j", 0, 1), garbage);
  EXPECT_THAT(state_.ListMetrics("j", 0, 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("metrics")));
  EXPECT_THAT(state_.LatestMetrics("j"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("metrics")));
  PutRaw(Table::kLogs, state_keys::LogKey("j", 1), garbage);
  EXPECT_THAT(state_.ListLogs("j", 0, std::nullopt, 5, 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("logs")));

  // Keys of the wrong shape are bad data too.
  PutRaw(Table::kLogs, "k/short", "");
  EXPECT_THAT(state_.AppendLogs("k", {MakeLine(0, "x")}),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("k/short")));
  PutRaw(Table::kMetrics, "k/short", "");
  EXPECT_THAT(state_.ListMetrics("k", 0, 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("k/short")));
}

TEST_F(CoordinatorStateTest, KvIsAThinKeyValueSpace) {
  ASSERT_THAT(state_.KvPut("job/1/rank0", "addr0"), IsOk());
  ASSERT_THAT(state_.KvPut("job/1/rank1", std::string("a\0b", 3)), IsOk());
  ASSERT_THAT(state_.KvPut("job/2/rank0", "x"), IsOk());
  absl::StatusOr<std::optional<std::string>> value = state_.KvGet("job/1/rank1");
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(*value, std::string("a\0b", 3));

  std::vector<std::string> keys;
  ASSERT_THAT(state_.KvScanPrefix("job/1/",
                                  [&](absl::string_view key, absl::string_view) {
                                    keys.emplace_back(key);
                                    return true;
                                  }),
              IsOk());
  EXPECT_THAT(keys, ElementsAre("job/1/rank0", "job/1/rank1"));

  ASSERT_THAT(state_.KvDelete("job/1/rank1"), IsOk());
  ASSERT_THAT(state_.KvDelete("never"), IsOk());
  value = state_.KvGet("job/1/rank1");
  ASSERT_THAT(value, IsOk());
  EXPECT_FALSE(value->has_value());
}

TEST_F(CoordinatorStateTest, DeleteJobDataRemovesOnlyThatJobsHistory) {
  for (const std::string job : {"a", "a-b"}) {
    const v1::JobEvent event = MakeEvent(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING, "S");
    ASSERT_THAT(state_.PutJob(MakeJob(job), &event), IsOk());
    ASSERT_THAT(state_.RegisterShard(job, "t", 1, MakeShard(0, 1)), IsOk());
    ASSERT_THAT(state_.AppendMetrics(job, MakeMetrics(1, 1)), IsOk());
    AppendLines(state_, job, 0, 2);
  }
  ASSERT_THAT(state_.DeleteJobData("a"), IsOk());

  absl::StatusOr<std::vector<v1::JobEvent>> events = state_.ListEvents("a", 0);
  ASSERT_THAT(events, IsOk());
  EXPECT_THAT(*events, IsEmpty());
  absl::StatusOr<std::vector<v1::Checkpoint>> checkpoints = state_.ListCheckpoints("a");
  ASSERT_THAT(checkpoints, IsOk());
  EXPECT_THAT(*checkpoints, IsEmpty());
  absl::StatusOr<std::vector<v1::StepMetrics>> metrics = state_.ListMetrics("a", 0, 0);
  ASSERT_THAT(metrics, IsOk());
  EXPECT_THAT(*metrics, IsEmpty());
  absl::StatusOr<std::vector<v1::LogLine>> logs = state_.ListLogs("a", 0, std::nullopt, 0, 0);
  ASSERT_THAT(logs, IsOk());
  EXPECT_THAT(*logs, IsEmpty());
  absl::StatusOr<std::optional<v1::Job>> job = state_.GetJob("a");
  ASSERT_THAT(job, IsOk());
  EXPECT_TRUE(job->has_value());

  events = state_.ListEvents("a-b", 0);
  ASSERT_THAT(events, IsOk());
  EXPECT_EQ(events->size(), 1u);
  checkpoints = state_.ListCheckpoints("a-b");
  ASSERT_THAT(checkpoints, IsOk());
  EXPECT_EQ(checkpoints->size(), 1u);
  metrics = state_.ListMetrics("a-b", 0, 0);
  ASSERT_THAT(metrics, IsOk());
  EXPECT_EQ(metrics->size(), 1u);
  logs = state_.ListLogs("a-b", 0, std::nullopt, 0, 0);
  ASSERT_THAT(logs, IsOk());
  EXPECT_EQ(logs->size(), 2u);
}

// Everything written through one RocksKvDb is there after it is destroyed and the directory is
// opened again, and numbering continues where it stopped.
TEST(CoordinatorStateRocksTest, EverythingSurvivesAReopen) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/state_reopen";
  std::filesystem::remove_all(dir);
  const absl::Time commit_time = absl::FromUnixSeconds(1'700'000'500);
  {
    absl::StatusOr<std::unique_ptr<RocksKvDb>> db = RocksKvDb::Open(dir);
    ASSERT_THAT(db, IsOk());
    CoordinatorState state(db->get());
    v1::Job job = MakeJob("job", v1::JOB_STATE_RUNNING);
    const v1::JobEvent e1 = MakeEvent(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING, "S");
    const v1::JobEvent e2 = MakeEvent(v1::JOB_STATE_PENDING, v1::JOB_STATE_RUNNING, "R");
    ASSERT_THAT(state.PutJob(job, &e1), IsOk());
    ASSERT_THAT(state.PutJob(job, &e2), IsOk());
    v1::Worker worker;
    worker.set_worker_id("w0");
    worker.set_hostname("host0");
    ASSERT_THAT(state.PutWorker(worker), IsOk());
    ASSERT_THAT(state.RegisterShard("job", "step_10", 10, MakeShard(0, 5)), IsOk());
    ASSERT_THAT(state.CommitCheckpoint("job", "step_10", 10, "ckpt/step_10", commit_time), IsOk());
    ASSERT_THAT(state.RegisterShard("job", "step_20", 20, MakeShard(0, 6)), IsOk());
    for (int64_t step = 1; step <= 3; ++step) {
      ASSERT_THAT(state.AppendMetrics("job", MakeMetrics(1, step)), IsOk());
    }
    ASSERT_THAT(state.AppendLogs("job", {MakeLine(0, "hello"), MakeLine(1, "world")}), IsOk());
    ASSERT_THAT(state.KvPut("job/1/addr", "10.0.0.1:1234"), IsOk());
  }

  absl::StatusOr<std::unique_ptr<RocksKvDb>> db = RocksKvDb::Open(dir);
  ASSERT_THAT(db, IsOk());
  CoordinatorState state(db->get());

  absl::StatusOr<std::optional<v1::Job>> job = state.GetJob("job");
  ASSERT_THAT(job, IsOk());
  ASSERT_TRUE(job->has_value());
  EXPECT_EQ((*job)->state(), v1::JOB_STATE_RUNNING);
  absl::StatusOr<std::vector<v1::JobEvent>> events = state.ListEvents("job", 0);
  ASSERT_THAT(events, IsOk());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].reason(), "R");
  const v1::JobEvent e3 = MakeEvent(v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED, "Done");
  absl::StatusOr<int64_t> sequence = state.PutJob(**job, &e3);
  ASSERT_THAT(sequence, IsOk());
  EXPECT_EQ(*sequence, 3);

  absl::StatusOr<std::optional<v1::Worker>> worker = state.GetWorker("w0");
  ASSERT_THAT(worker, IsOk());
  ASSERT_TRUE(worker->has_value());
  EXPECT_EQ((*worker)->hostname(), "host0");

  absl::StatusOr<std::vector<v1::Checkpoint>> checkpoints = state.ListCheckpoints("job");
  ASSERT_THAT(checkpoints, IsOk());
  ASSERT_EQ(checkpoints->size(), 2u);
  EXPECT_EQ((*checkpoints)[1].state(), v1::CHECKPOINT_STATE_PENDING);
  absl::StatusOr<std::optional<v1::Checkpoint>> latest = state.LatestCommitted("job");
  ASSERT_THAT(latest, IsOk());
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->path(), "ckpt/step_10");
  EXPECT_EQ((*latest)->commit_time().seconds(), 1'700'000'500);

  absl::StatusOr<std::vector<v1::StepMetrics>> metrics = state.ListMetrics("job", 0, 0);
  ASSERT_THAT(metrics, IsOk());
  EXPECT_THAT(Positions(*metrics), ElementsAre(Pair(1, 1), Pair(1, 2), Pair(1, 3)));

  absl::StatusOr<std::vector<v1::LogLine>> appended =
      state.AppendLogs("job", {MakeLine(0, "again")});
  ASSERT_THAT(appended, IsOk());
  EXPECT_THAT(Sequences(*appended), ElementsAre(3));
  absl::StatusOr<std::vector<v1::LogLine>> lines = state.ListLogs("job", 0, std::nullopt, 0, 0);
  ASSERT_THAT(lines, IsOk());
  EXPECT_THAT(Sequences(*lines), ElementsAre(1, 2, 3));
  EXPECT_EQ((*lines)[1].text(), "world");

  absl::StatusOr<std::optional<std::string>> addr = state.KvGet("job/1/addr");
  ASSERT_THAT(addr, IsOk());
  EXPECT_EQ(*addr, std::optional<std::string>("10.0.0.1:1234"));
}

}  // namespace
}  // namespace dstrain::coordinator
