// WorkerRegistry on a FakeClock: registration and its validation, heartbeats, lease expiry at
// exactly the lease, lost ranks, slot bookkeeping and restore after a coordinator restart.
#include "coordinator/registry/worker_registry.h"

#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/clock/clock.h"
#include "common/grpc/proto_time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/worker.pb.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

constexpr absl::Duration kLease = absl::Seconds(10);

v1::RegisterWorkerRequest CpuWorker(const std::string& id, int slots) {
  v1::RegisterWorkerRequest request;
  request.set_worker_id(id);
  request.set_hostname(id + ".local");
  request.set_cpu_slots(slots);
  request.set_version("0.1");
  return request;
}

v1::RegisterWorkerRequest GpuWorker(const std::string& id, int gpus) {
  v1::RegisterWorkerRequest request = CpuWorker(id, 0);
  for (int i = 0; i < gpus; ++i) {
    v1::GpuInfo* gpu = request.add_gpus();
    gpu->set_index(i);
    gpu->set_name("NVIDIA H100 80GB HBM3");
  }
  return request;
}

v1::HeartbeatRequest Beat(const std::string& id, std::vector<v1::RankStatus> ranks = {}) {
  v1::HeartbeatRequest request;
  request.set_worker_id(id);
  for (v1::RankStatus& r : ranks) *request.add_ranks() = std::move(r);
  return request;
}

v1::RankStatus Rank(const std::string& job, int attempt, int rank, v1::RankState state,
                    int slot = 0) {
  v1::RankStatus r;
  r.set_job_id(job);
  r.set_attempt(attempt);
  r.set_rank(rank);
  r.set_state(state);
  r.set_slot(slot);
  return r;
}

// (job_id, attempt, rank, slot) of a rank, for compact expectations.
std::string Key(const v1::RankStatus& r) {
  return r.job_id() + "/" + std::to_string(r.attempt()) + "/" + std::to_string(r.rank()) + "@" +
         std::to_string(r.slot());
}

std::vector<std::string> Keys(const std::vector<v1::RankStatus>& ranks) {
  std::vector<std::string> out;
  for (const auto& r : ranks) out.push_back(Key(r));
  return out;
}

std::vector<std::string> Keys(const std::vector<PlacedRank>& ranks) {
  std::vector<std::string> out;
  for (const auto& p : ranks) out.push_back(p.worker_id + ":" + Key(p.rank));
  return out;
}

// Every free slot of each worker, GPU slots and then CPU slots (so ascending).
std::map<std::string, std::vector<int>> AllFree(const std::map<std::string, WorkerSlots>& slots) {
  std::map<std::string, std::vector<int>> out;
  for (const auto& [id, s] : slots) {
    std::vector<int>& all = out[id];
    all = s.free_gpu;
    all.insert(all.end(), s.free_cpu.begin(), s.free_cpu.end());
  }
  return out;
}

class WorkerRegistryTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  WorkerRegistry registry_{&clock_, RegistryOptions{kLease, absl::Seconds(2)}};
};

TEST_F(WorkerRegistryTest, RegisterCreatesReadyRecordWithLease) {
  const absl::Time t0 = clock_.Now();
  auto result = registry_.Register(CpuWorker("w1", 4));
  ASSERT_THAT(result, IsOk());
  EXPECT_FALSE(result->replaced);
  EXPECT_THAT(result->lost_ranks, IsEmpty());
  const v1::Worker& w = result->worker;
  EXPECT_EQ(w.worker_id(), "w1");
  EXPECT_EQ(w.hostname(), "w1.local");
  EXPECT_EQ(w.version(), "0.1");
  EXPECT_EQ(w.state(), v1::WORKER_STATE_READY);
  EXPECT_EQ(FromTimestamp(w.register_time()), t0);
  EXPECT_EQ(FromTimestamp(w.last_heartbeat_time()), t0);
  EXPECT_EQ(FromTimestamp(w.lease_expire_time()), t0 + kLease);
  EXPECT_EQ(SlotCount(w), 4);

  const v1::Worker* found = registry_.Find("w1");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->DebugString(), w.DebugString());
  EXPECT_EQ(registry_.Find("w2"), nullptr);
  EXPECT_THAT(AllFree(registry_.FreeSlots()), ElementsAre(Pair("w1", ElementsAre(0, 1, 2, 3))));
}

TEST_F(WorkerRegistryTest, GpuWorkerHasOneSlotPerGpu) {
  auto result = registry_.Register(GpuWorker("gpu-node-1", 3));
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(SlotCount(result->worker), 3);
  EXPECT_THAT(AllFree(registry_.FreeSlots()),
              ElementsAre(Pair("gpu-node-1", ElementsAre(0, 1, 2))));
  EXPECT_EQ(result->worker.gpus(2).name(), "NVIDIA H100 80GB HBM3");
}

// GPU slots are numbered as the GPUs, the CPU slots follow; FreeSlots and Counts keep the kinds
// apart.
TEST_F(WorkerRegistryTest, GpuSlotsBesideCpuSlots) {
  v1::RegisterWorkerRequest both = GpuWorker("mixed", 2);
  both.set_cpu_slots(3);
  auto result = registry_.Register(both);
  ASSERT_THAT(result, IsOk());
  const v1::Worker& w = result->worker;
  EXPECT_EQ(SlotCount(w), 5);
  EXPECT_EQ(SlotKindOf(w, 0), v1::SLOT_KIND_GPU);
  EXPECT_EQ(SlotKindOf(w, 1), v1::SLOT_KIND_GPU);
  EXPECT_EQ(SlotKindOf(w, 2), v1::SLOT_KIND_CPU);
  EXPECT_EQ(SlotKindOf(w, 4), v1::SLOT_KIND_CPU);
  ASSERT_THAT(registry_.Register(CpuWorker("cpu-only", 2)), IsOk());
  ASSERT_THAT(registry_.Assign("mixed", 1, "job-g", 1, 0), IsOk());
  ASSERT_THAT(registry_.Assign("mixed", 3, "job-c", 1, 0), IsOk());
  ASSERT_THAT(registry_.Assign("cpu-only", 0, "job-c", 1, 1), IsOk());
  EXPECT_THAT(registry_.Assign("mixed", 5, "job-c", 1, 2),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("5 slots")));

  const std::map<std::string, WorkerSlots> free = registry_.FreeSlots();
  ASSERT_EQ(free.size(), 2u);
  const WorkerSlots& m = free.at("mixed");
  EXPECT_THAT(m.free_gpu, ElementsAre(0));
  EXPECT_THAT(m.free_cpu, ElementsAre(2, 4));
  EXPECT_EQ(m.gpu, 2);
  EXPECT_EQ(m.cpu, 3);
  const WorkerSlots& c = free.at("cpu-only");
  EXPECT_THAT(c.free_gpu, IsEmpty());
  EXPECT_THAT(c.free_cpu, ElementsAre(1));
  EXPECT_EQ(c.gpu, 0);
  EXPECT_EQ(c.cpu, 2);

  const RegistryCounts counts = registry_.Counts();
  EXPECT_EQ(counts.total_slots, 7);
  EXPECT_EQ(counts.free_slots, 4);
  EXPECT_EQ(counts.total_gpu_slots, 2);
  EXPECT_EQ(counts.free_gpu_slots, 1);
}

TEST_F(WorkerRegistryTest, ValidationNamesTheField) {
  for (const std::string& bad : {std::string(""), std::string("1abc"), std::string("Abc"),
                                 std::string("a_b"), std::string("a.b"), std::string(64, 'a')}) {
    EXPECT_THAT(registry_.Register(CpuWorker(bad, 1)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("worker_id")))
        << bad;
  }
  EXPECT_THAT(registry_.Register(CpuWorker(std::string(63, 'a'), 1)), IsOk());
  EXPECT_THAT(registry_.Register(CpuWorker("a-0-z", 1)), IsOk());

  EXPECT_THAT(registry_.Register(CpuWorker("w1", 0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cpu_slots")));
  EXPECT_THAT(registry_.Register(CpuWorker("w1", -1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cpu_slots")));
  EXPECT_THAT(registry_.Register(CpuWorker("w1", kMaxSlotsPerWorker + 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cpu_slots")));
  EXPECT_THAT(registry_.Register(CpuWorker("w1", kMaxSlotsPerWorker)), IsOk());

  v1::RegisterWorkerRequest duplicate_index = GpuWorker("w2", 2);
  duplicate_index.mutable_gpus(1)->set_index(0);
  EXPECT_THAT(registry_.Register(duplicate_index),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gpus[1].index")));
  v1::RegisterWorkerRequest index_out_of_range = GpuWorker("w2", 2);
  index_out_of_range.mutable_gpus(0)->set_index(2);
  EXPECT_THAT(registry_.Register(index_out_of_range),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gpus[0].index")));
  v1::RegisterWorkerRequest shuffled = GpuWorker("w2", 2);
  shuffled.mutable_gpus(0)->set_index(1);
  shuffled.mutable_gpus(1)->set_index(0);
  EXPECT_THAT(registry_.Register(shuffled), IsOk());
  v1::RegisterWorkerRequest negative_memory = GpuWorker("w3", 2);
  negative_memory.mutable_gpus(1)->set_memory_bytes(-1);
  EXPECT_THAT(registry_.Register(negative_memory),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gpus[1].memory_bytes")));
  v1::RegisterWorkerRequest long_name = GpuWorker("w3", 1);
  long_name.mutable_gpus(0)->set_name(std::string(kMaxGpuNameBytes + 1, 'x'));
  EXPECT_THAT(registry_.Register(long_name),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gpus[0].name")));
  v1::RegisterWorkerRequest long_uuid = GpuWorker("w3", 1);
  long_uuid.mutable_gpus(0)->set_uuid(std::string(kMaxGpuUuidBytes + 1, 'x'));
  EXPECT_THAT(registry_.Register(long_uuid),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gpus[0].uuid")));
  // GPU and CPU slots together are bounded too.
  v1::RegisterWorkerRequest too_many = GpuWorker("w3", 2);
  too_many.set_cpu_slots(kMaxSlotsPerWorker - 1);
  EXPECT_THAT(registry_.Register(too_many),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("slots per worker")));
  // A GPU worker needs no CPU slots.
  EXPECT_THAT(registry_.Register(GpuWorker("w4", 1)), IsOk());

  // Nothing invalid was recorded.
  EXPECT_EQ(registry_.Counts().ready, 5);
}

TEST_F(WorkerRegistryTest, OptionsValidation) {
  EXPECT_THAT(ValidateRegistryOptions({}), IsOk());
  EXPECT_THAT(ValidateRegistryOptions({absl::ZeroDuration(), absl::Seconds(1)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lease")));
  EXPECT_THAT(ValidateRegistryOptions({absl::Seconds(10), absl::ZeroDuration()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("heartbeat_interval")));
  EXPECT_THAT(ValidateRegistryOptions({absl::Seconds(10), absl::Seconds(10)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("heartbeat_interval")));
}

TEST_F(WorkerRegistryTest, HeartbeatRenewsLease) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 1)), IsOk());
  clock_.Advance(absl::Seconds(9));
  auto beat = registry_.Heartbeat(Beat("w1"));
  ASSERT_THAT(beat, IsOk());
  EXPECT_EQ(beat->lease_expire_time, clock_.Now() + kLease);
  EXPECT_EQ(FromTimestamp(registry_.Find("w1")->last_heartbeat_time()), clock_.Now());
  EXPECT_EQ(FromTimestamp(registry_.Find("w1")->lease_expire_time()), clock_.Now() + kLease);

  // 18 s after registering, but only 9 s after the heartbeat: still leased.
  clock_.Advance(absl::Seconds(9));
  EXPECT_THAT(registry_.ExpireLeases(), IsEmpty());
  clock_.Advance(absl::Seconds(1));
  EXPECT_THAT(registry_.ExpireLeases(), ::testing::SizeIs(1));
}

TEST_F(WorkerRegistryTest, HeartbeatFromUnknownWorkerIsNotFound) {
  EXPECT_THAT(registry_.Heartbeat(Beat("ghost")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("ghost")));
}

TEST_F(WorkerRegistryTest, LeaseLapsesAtExactlyTheLeaseNotBefore) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 1)), IsOk());
  clock_.Advance(kLease - absl::Nanoseconds(1));
  EXPECT_THAT(registry_.ExpireLeases(), IsEmpty());
  EXPECT_EQ(registry_.Find("w1")->state(), v1::WORKER_STATE_READY);
  clock_.Advance(absl::Nanoseconds(1));
  std::vector<LostWorker> lost = registry_.ExpireLeases();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].worker.worker_id(), "w1");
  EXPECT_EQ(lost[0].worker.state(), v1::WORKER_STATE_LOST);
  EXPECT_EQ(registry_.Find("w1")->state(), v1::WORKER_STATE_LOST);
  // A second sweep reports nothing new.
  EXPECT_THAT(registry_.ExpireLeases(), IsEmpty());
}

TEST_F(WorkerRegistryTest, LateHeartbeatBeforeTheSweepStillRenews) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 1)), IsOk());
  clock_.Advance(kLease + absl::Seconds(1));
  EXPECT_THAT(registry_.Heartbeat(Beat("w1")), IsOk());
  EXPECT_THAT(registry_.ExpireLeases(), IsEmpty());
}

TEST_F(WorkerRegistryTest, LostWorkerRefusesHeartbeatUntilItRegistersAgain) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 2)), IsOk());
  clock_.Advance(kLease);
  ASSERT_THAT(registry_.ExpireLeases(), ::testing::SizeIs(1));
  EXPECT_THAT(registry_.Heartbeat(Beat("w1")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("register again")));
  EXPECT_THAT(AllFree(registry_.FreeSlots()), IsEmpty());
  EXPECT_THAT(registry_.Assign("w1", 0, "job-a", 1, 0),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("LOST")));

  clock_.Advance(absl::Seconds(1));
  auto again = registry_.Register(CpuWorker("w1", 2));
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->replaced);
  EXPECT_THAT(again->lost_ranks, IsEmpty());  // Already handed out by ExpireLeases.
  EXPECT_EQ(again->worker.state(), v1::WORKER_STATE_READY);
  EXPECT_EQ(FromTimestamp(again->worker.register_time()), clock_.Now());
  EXPECT_THAT(registry_.Heartbeat(Beat("w1")), IsOk());
  EXPECT_THAT(AllFree(registry_.FreeSlots()), ElementsAre(Pair("w1", ElementsAre(0, 1))));
}

TEST_F(WorkerRegistryTest, ExpiredLeaseReportsTheRanksItHeld) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 4)), IsOk());
  ASSERT_THAT(registry_.Register(CpuWorker("w2", 4)), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 2, "job-a", 1, 1), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 0, "job-a", 1, 0), IsOk());
  ASSERT_THAT(registry_.Assign("w2", 0, "job-a", 1, 2), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 3, "job-b", 2, 0), IsOk());

  clock_.Advance(absl::Seconds(5));
  ASSERT_THAT(registry_.Heartbeat(Beat("w2")), IsOk());
  clock_.Advance(absl::Seconds(5));
  std::vector<LostWorker> lost = registry_.ExpireLeases();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].worker.worker_id(), "w1");
  EXPECT_THAT(lost[0].worker.ranks(), IsEmpty());
  EXPECT_THAT(Keys(lost[0].ranks), ElementsAre("job-a/1/0@0", "job-a/1/1@2", "job-b/2/0@3"));
  EXPECT_THAT(registry_.Find("w1")->ranks(), IsEmpty());
  // w2 keeps its rank; job-a's ranks elsewhere are the caller's to release.
  EXPECT_THAT(Keys(registry_.RanksOf("job-a")), ElementsAre("w2:job-a/1/2@0"));
  EXPECT_THAT(AllFree(registry_.FreeSlots()), ElementsAre(Pair("w2", ElementsAre(1, 2, 3))));
}

TEST_F(WorkerRegistryTest, ReRegistrationReturnsTheOldRanksAsLostAndMayChangeSlots) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 4)), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 1, "job-a", 3, 0), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 0, "job-b", 1, 5), IsOk());
  clock_.Advance(absl::Seconds(3));

  auto again = registry_.Register(GpuWorker("w1", 2));
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->replaced);
  EXPECT_THAT(Keys(again->lost_ranks), ElementsAre("job-b/1/5@0", "job-a/3/0@1"));
  EXPECT_THAT(again->worker.ranks(), IsEmpty());
  EXPECT_EQ(SlotCount(again->worker), 2);
  EXPECT_EQ(FromTimestamp(again->worker.lease_expire_time()), clock_.Now() + kLease);
  EXPECT_THAT(registry_.RanksOf("job-a"), IsEmpty());
  EXPECT_THAT(AllFree(registry_.FreeSlots()), ElementsAre(Pair("w1", ElementsAre(0, 1))));
}

TEST_F(WorkerRegistryTest, FreeSlotsAfterAssignAndRelease) {
  ASSERT_THAT(registry_.Register(CpuWorker("w2", 3)), IsOk());
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 2)), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 0, "job-a", 1, 0), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 1, "job-a", 1, 1), IsOk());
  ASSERT_THAT(registry_.Assign("w2", 1, "job-a", 1, 2), IsOk());
  ASSERT_THAT(registry_.Assign("w2", 2, "job-b", 1, 0), IsOk());
  EXPECT_THAT(AllFree(registry_.FreeSlots()),
              ElementsAre(Pair("w1", IsEmpty()), Pair("w2", ElementsAre(0))));
  RegistryCounts counts = registry_.Counts();
  EXPECT_EQ(counts.ready, 2);
  EXPECT_EQ(counts.lost, 0);
  EXPECT_EQ(counts.total_slots, 5);
  EXPECT_EQ(counts.free_slots, 1);

  EXPECT_THAT(Keys(registry_.RanksOf("job-a")),
              ElementsAre("w1:job-a/1/0@0", "w1:job-a/1/1@1", "w2:job-a/1/2@1"));
  // Another attempt of job-a is untouched by releasing attempt 1, and vice versa.
  EXPECT_THAT(registry_.ReleaseJob("job-a", 2), IsEmpty());
  EXPECT_THAT(Keys(registry_.ReleaseJob("job-a", 1)),
              ElementsAre("w1:job-a/1/0@0", "w1:job-a/1/1@1", "w2:job-a/1/2@1"));
  EXPECT_THAT(registry_.RanksOf("job-a"), IsEmpty());
  EXPECT_THAT(AllFree(registry_.FreeSlots()),
              ElementsAre(Pair("w1", ElementsAre(0, 1)), Pair("w2", ElementsAre(0, 1))));
  EXPECT_THAT(Keys(registry_.RanksOf("job-b")), ElementsAre("w2:job-b/1/0@2"));
  EXPECT_EQ(registry_.Counts().free_slots, 4);
}

TEST_F(WorkerRegistryTest, AssignErrors) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 2)), IsOk());
  ASSERT_THAT(registry_.Register(CpuWorker("w2", 2)), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 0, "job-a", 1, 0), IsOk());
  EXPECT_THAT(registry_.Assign("nope", 0, "job-a", 1, 1),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(registry_.Assign("w1", 2, "job-a", 1, 1),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("slot 2")));
  EXPECT_THAT(registry_.Assign("w1", -1, "job-a", 1, 1),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("slot -1")));
  EXPECT_THAT(registry_.Assign("w1", 0, "job-b", 1, 0),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("job-a")));
  EXPECT_THAT(registry_.Assign("w2", 0, "job-a", 1, 0),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("\"w1\" slot 0")));
  EXPECT_THAT(registry_.Assign("w2", 0, "", 1, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job")));
  EXPECT_THAT(registry_.Assign("w2", 0, "job-a", 1, -1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank -1")));
  // The same rank of another attempt is a different rank.
  EXPECT_THAT(registry_.Assign("w2", 0, "job-a", 2, 0), IsOk());
  EXPECT_EQ(registry_.Counts().free_slots, 2);
}

TEST_F(WorkerRegistryTest, HeartbeatRecordsRankStatesAndReportsStrays) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 3)), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 0, "job-a", 2, 0), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 1, "job-a", 2, 1), IsOk());
  EXPECT_EQ(registry_.Find("w1")->ranks(0).state(), v1::RANK_STATE_STARTING);

  auto beat = registry_.Heartbeat(
      Beat("w1", {Rank("job-a", 2, 0, v1::RANK_STATE_RUNNING, 0),
                  Rank("job-a", 1, 0, v1::RANK_STATE_RUNNING, 2),  // an older attempt: stray
                  Rank("job-c", 1, 3, v1::RANK_STATE_FAILED, 2),   // finished, not placed: ignored
                  Rank("job-a", 2, 1, v1::RANK_STATE_UNSPECIFIED)}));  // keeps its state
  ASSERT_THAT(beat, IsOk());
  EXPECT_THAT(Keys(beat->strays), ElementsAre("job-a/1/0@2"));
  const v1::Worker* w = registry_.Find("w1");
  EXPECT_EQ(w->ranks(0).state(), v1::RANK_STATE_RUNNING);
  EXPECT_EQ(w->ranks(1).state(), v1::RANK_STATE_STARTING);
  EXPECT_EQ(w->ranks_size(), 2);  // Heartbeats never add or remove placements.
}

TEST_F(WorkerRegistryTest, ListIsSortedAndCountsByState) {
  ASSERT_THAT(registry_.Register(CpuWorker("wc", 1)), IsOk());
  ASSERT_THAT(registry_.Register(CpuWorker("wa", 2)), IsOk());
  clock_.Advance(absl::Seconds(5));
  ASSERT_THAT(registry_.Register(CpuWorker("wb", 4)), IsOk());
  clock_.Advance(absl::Seconds(5));
  ASSERT_THAT(registry_.ExpireLeases(), ::testing::SizeIs(2));
  std::vector<std::string> ids;
  for (const v1::Worker& w : registry_.List()) ids.push_back(w.worker_id());
  EXPECT_THAT(ids, ElementsAre("wa", "wb", "wc"));
  RegistryCounts counts = registry_.Counts();
  EXPECT_EQ(counts.ready, 1);
  EXPECT_EQ(counts.lost, 2);
  EXPECT_EQ(counts.total_slots, 4);
  EXPECT_EQ(counts.free_slots, 4);
}

TEST_F(WorkerRegistryTest, RestoreKeepsRecordsAndReArmsLeases) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 2)), IsOk());
  ASSERT_THAT(registry_.Register(CpuWorker("w2", 2)), IsOk());
  ASSERT_THAT(registry_.Register(CpuWorker("w3", 1)), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 1, "job-a", 1, 0), IsOk());
  clock_.Advance(absl::Seconds(4));
  ASSERT_THAT(registry_.Heartbeat(Beat("w1")), IsOk());
  ASSERT_THAT(registry_.Heartbeat(Beat("w2")), IsOk());
  clock_.Advance(absl::Seconds(6));
  ASSERT_THAT(registry_.ExpireLeases(), ::testing::SizeIs(1));  // w3
  const std::vector<v1::Worker> persisted = registry_.List();
  const absl::Time heartbeat_time = clock_.Now() - absl::Seconds(6);

  // The coordinator is down for a minute, far longer than the lease.
  clock_.Advance(absl::Minutes(1));
  WorkerRegistry restarted(&clock_, RegistryOptions{kLease, absl::Seconds(2)});
  ASSERT_THAT(restarted.Restore(persisted), IsOk());
  const absl::Time now = clock_.Now();

  const v1::Worker* w1 = restarted.Find("w1");
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->state(), v1::WORKER_STATE_READY);
  EXPECT_EQ(FromTimestamp(w1->lease_expire_time()), now + kLease);
  EXPECT_EQ(FromTimestamp(w1->last_heartbeat_time()), heartbeat_time);  // As persisted.
  EXPECT_THAT(Keys(restarted.RanksOf("job-a")), ElementsAre("w1:job-a/1/0@1"));
  EXPECT_EQ(restarted.Find("w3")->state(), v1::WORKER_STATE_LOST);
  EXPECT_THAT(AllFree(restarted.FreeSlots()),
              ElementsAre(Pair("w1", ElementsAre(0)), Pair("w2", ElementsAre(0, 1))));

  // Nothing is lost at once; w1 reconnects within its fresh lease, w2 never does.
  EXPECT_THAT(restarted.ExpireLeases(), IsEmpty());
  clock_.Advance(absl::Seconds(9));
  ASSERT_THAT(restarted.Heartbeat(Beat("w1")), IsOk());
  EXPECT_THAT(restarted.Heartbeat(Beat("w3")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("register again")));
  clock_.Advance(absl::Seconds(1));
  std::vector<LostWorker> lost = restarted.ExpireLeases();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].worker.worker_id(), "w2");
}

TEST_F(WorkerRegistryTest, RestoreRejectsInconsistentRecordsAndKeepsState) {
  ASSERT_THAT(registry_.Register(CpuWorker("w1", 2)), IsOk());
  ASSERT_THAT(registry_.Register(CpuWorker("w2", 2)), IsOk());
  ASSERT_THAT(registry_.Assign("w1", 0, "job-a", 1, 0), IsOk());
  const std::vector<v1::Worker> good = registry_.List();

  std::vector<v1::Worker> duplicate_id = good;
  duplicate_id.push_back(good[0]);
  duplicate_id.back().clear_ranks();
  EXPECT_THAT(registry_.Restore(duplicate_id),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));

  std::vector<v1::Worker> slot_out_of_range = good;
  slot_out_of_range[0].mutable_ranks(0)->set_slot(2);
  EXPECT_THAT(registry_.Restore(slot_out_of_range),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("slot 2")));

  std::vector<v1::Worker> rank_twice = good;
  *rank_twice[1].add_ranks() = good[0].ranks(0);
  EXPECT_THAT(registry_.Restore(rank_twice),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("placed twice")));

  std::vector<v1::Worker> lost_with_ranks = good;
  lost_with_ranks[0].set_state(v1::WORKER_STATE_LOST);
  EXPECT_THAT(registry_.Restore(lost_with_ranks),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("LOST")));

  std::vector<v1::Worker> no_state = good;
  no_state[1].set_state(v1::WORKER_STATE_UNSPECIFIED);
  EXPECT_THAT(registry_.Restore(no_state),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("w2")));

  // Every failed Restore left the registry as it was.
  EXPECT_THAT(Keys(registry_.RanksOf("job-a")), ElementsAre("w1:job-a/1/0@0"));
  EXPECT_EQ(registry_.Counts().ready, 2);
}

TEST(ProtoTimeTest, RoundTripsIncludingBeforeTheEpoch) {
  for (absl::Time t : {absl::FromUnixSeconds(1'700'000'000) + absl::Nanoseconds(123),
                       absl::UnixEpoch(), absl::UnixEpoch() - absl::Nanoseconds(1)}) {
    const google::protobuf::Timestamp ts = ToTimestamp(t);
    EXPECT_GE(ts.nanos(), 0);
    EXPECT_LT(ts.nanos(), 1'000'000'000);
    EXPECT_EQ(FromTimestamp(ts), t);
  }
}

}  // namespace
}  // namespace dstrain::coordinator
