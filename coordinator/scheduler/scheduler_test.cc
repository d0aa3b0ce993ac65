// Scheduler: queue order, gang all-or-none placement, head-of-line blocking (and backfill),
// packing onto the fewest workers, and a randomized property test.
#include "coordinator/scheduler/scheduler.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using FreeSlots = std::map<std::string, std::vector<int>>;

// Workers with CPU slots only, these free.
std::map<std::string, WorkerSlots> Cpu(const FreeSlots& free) {
  std::map<std::string, WorkerSlots> cluster;
  for (const auto& [id, slots] : free) {
    cluster[id].free_cpu = slots;
    cluster[id].cpu = static_cast<int>(slots.size());
  }
  return cluster;
}

// "worker:slot" per rank, in rank order.
std::vector<std::string> Where(const Placement& p) {
  std::vector<std::string> out;
  for (size_t i = 0; i < p.ranks.size(); ++i) {
    EXPECT_EQ(p.ranks[i].rank(), static_cast<int>(i));
    out.push_back(p.ranks[i].worker_id() + ":" + std::to_string(p.ranks[i].slot()));
  }
  return out;
}

std::vector<std::string> Ids(const std::vector<Placement>& placements) {
  std::vector<std::string> out;
  for (const Placement& p : placements) out.push_back(p.job_id);
  return out;
}

TEST(SchedulerTest, HigherPriorityFirstThenFifo) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("a", 0, 1, 1), IsOk());
  ASSERT_THAT(s.Enqueue("b", 5, 1, 2), IsOk());
  ASSERT_THAT(s.Enqueue("c", 0, 1, 3), IsOk());
  ASSERT_THAT(s.Enqueue("d", 5, 1, 4), IsOk());
  ASSERT_THAT(s.Enqueue("e", -3, 1, 0), IsOk());
  EXPECT_THAT(s.PendingIds(), ElementsAre("b", "d", "a", "c", "e"));
  EXPECT_EQ(s.Position("b"), 0);
  EXPECT_EQ(s.Position("c"), 3);
  EXPECT_EQ(s.Position("e"), 4);
  EXPECT_EQ(s.size(), 5u);

  // Two free slots: the two highest-priority jobs, oldest first.
  std::vector<Placement> placed = s.Schedule(Cpu({{"w1", {0, 1}}}));
  EXPECT_THAT(Ids(placed), ElementsAre("b", "d"));
  EXPECT_THAT(Where(placed[0]), ElementsAre("w1:0"));
  EXPECT_THAT(Where(placed[1]), ElementsAre("w1:1"));
  EXPECT_THAT(s.PendingIds(), ElementsAre("a", "c", "e"));
  EXPECT_EQ(s.Position("a"), 0);
  EXPECT_EQ(s.Position("b"), std::nullopt);
}

TEST(SchedulerTest, EnqueueErrors) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("a", 0, 2, 1), IsOk());
  EXPECT_THAT(s.Enqueue("a", 1, 2, 2),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("\"a\"")));
  EXPECT_THAT(s.Enqueue("b", 0, 0, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("world_size")));
  EXPECT_THAT(s.Enqueue("", 0, 1, 4),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job_id")));
  EXPECT_THAT(s.PendingIds(), ElementsAre("a"));
}

TEST(SchedulerTest, RemoveAndPosition) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("a", 0, 1, 1), IsOk());
  ASSERT_THAT(s.Enqueue("b", 0, 1, 2), IsOk());
  ASSERT_THAT(s.Enqueue("c", 0, 1, 3), IsOk());
  EXPECT_TRUE(s.Contains("b"));
  EXPECT_TRUE(s.Remove("b"));
  EXPECT_FALSE(s.Remove("b"));
  EXPECT_FALSE(s.Contains("b"));
  EXPECT_EQ(s.Position("b"), std::nullopt);
  EXPECT_EQ(s.Position("c"), 1);
  EXPECT_THAT(s.PendingIds(), ElementsAre("a", "c"));
  EXPECT_EQ(s.size(), 2u);
  // A removed job may come back (e.g. a restart) and keeps its place among equals by its seq.
  ASSERT_THAT(s.Enqueue("b", 0, 1, 2), IsOk());
  EXPECT_THAT(s.PendingIds(), ElementsAre("a", "b", "c"));
  EXPECT_TRUE(s.Remove("a"));
  EXPECT_TRUE(s.Remove("b"));
  EXPECT_TRUE(s.Remove("c"));
  EXPECT_TRUE(s.empty());
}

TEST(SchedulerTest, GangIsAllOrNone) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("big", 0, 4, 1), IsOk());
  FreeSlots free = {{"w1", {0}}, {"w2", {0}}, {"w3", {0}}};
  EXPECT_THAT(s.Schedule(Cpu(free)), IsEmpty());
  EXPECT_THAT(s.PendingIds(), ElementsAre("big"));

  free["w4"] = {0};
  std::vector<Placement> placed = s.Schedule(Cpu(free));
  ASSERT_EQ(placed.size(), 1u);
  EXPECT_EQ(placed[0].job_id, "big");
  EXPECT_THAT(Where(placed[0]), ElementsAre("w1:0", "w2:0", "w3:0", "w4:0"));
  EXPECT_TRUE(s.empty());
}

TEST(SchedulerTest, JobLargerThanTheClusterWaitsUntilWorkersJoin) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("huge", 0, 16, 1), IsOk());
  EXPECT_THAT(s.Schedule(Cpu({})), IsEmpty());
  EXPECT_THAT(s.Schedule(Cpu({{"w1", {0, 1, 2, 3, 4, 5, 6, 7}}})), IsEmpty());
  std::vector<Placement> placed =
      s.Schedule(Cpu({{"w1", {0, 1, 2, 3, 4, 5, 6, 7}}, {"w2", {0, 1, 2, 3, 4, 5, 6, 7}}}));
  ASSERT_EQ(placed.size(), 1u);
  EXPECT_EQ(placed[0].ranks.size(), 16u);
}

TEST(SchedulerTest, StrictHeadOfLineBlocking) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("head", 1, 4, 1), IsOk());
  ASSERT_THAT(s.Enqueue("small", 0, 1, 2), IsOk());
  ASSERT_THAT(s.Enqueue("smaller-prio", -1, 2, 3), IsOk());
  const FreeSlots three = {{"w1", {0, 1, 2}}};
  // "small" would fit, but the head does not: nothing starts.
  EXPECT_THAT(s.Schedule(Cpu(three)), IsEmpty());
  EXPECT_THAT(s.PendingIds(), ElementsAre("head", "small", "smaller-prio"));

  // Once the head fits it goes first, and the rest follow while they fit.
  std::vector<Placement> placed = s.Schedule(Cpu({{"w1", {0, 1, 2}}, {"w2", {0, 1}}}));
  EXPECT_THAT(Ids(placed), ElementsAre("head", "small"));
  EXPECT_THAT(s.PendingIds(), ElementsAre("smaller-prio"));
}

TEST(SchedulerTest, BackfillLetsSmallerJobsPassAHeadThatDoesNotFit) {
  Scheduler s(SchedulerOptions{/*backfill=*/true});
  ASSERT_THAT(s.Enqueue("head", 1, 4, 1), IsOk());
  ASSERT_THAT(s.Enqueue("two", 0, 2, 2), IsOk());
  ASSERT_THAT(s.Enqueue("also-two", 0, 2, 3), IsOk());
  ASSERT_THAT(s.Enqueue("one", 0, 1, 4), IsOk());
  std::vector<Placement> placed = s.Schedule(Cpu({{"w1", {0, 1, 2}}}));
  // In queue order, each one that still fits: "two" (3 -> 1 free), then "one".
  EXPECT_THAT(Ids(placed), ElementsAre("two", "one"));
  EXPECT_THAT(s.PendingIds(), ElementsAre("head", "also-two"));
}

TEST(SchedulerTest, PacksOntoFewestWorkersWithConsecutiveRanks) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("five", 0, 5, 1), IsOk());
  std::vector<Placement> placed =
      s.Schedule(Cpu({{"a", {0, 1}}, {"b", {0, 1, 2, 3}}, {"c", {0, 1, 2}}}));
  ASSERT_EQ(placed.size(), 1u);
  // b (4 free) takes ranks 0-3, c (3 free) rank 4; a is not used.
  EXPECT_THAT(Where(placed[0]), ElementsAre("b:0", "b:1", "b:2", "b:3", "c:0"));
}

// A pipelined job's ranks are laid out rank = stage · D + data rank. Placed pipeline by pipeline,
// the 2 stages of each data rank share a worker; in rank order, 2 stages x 2 data ranks on two
// 2-slot workers would put each stage's data ranks together and every pipeline across workers.
TEST(SchedulerTest, PipelineStagesOfADataRankShareAWorker) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("pipe", 0, 4, 1, v1::JOB_DEVICE_CPU, /*pipeline_stages=*/2), IsOk());
  std::vector<Placement> placed = s.Schedule(Cpu({{"a", {0, 1}}, {"b", {0, 1}}}));
  ASSERT_EQ(placed.size(), 1u);
  // Ranks 0 (stage 0, data 0) and 2 (stage 1, data 0) on a; 1 and 3 on b.
  EXPECT_THAT(Where(placed[0]), ElementsAre("a:0", "b:0", "a:1", "b:1"));
  for (int r = 0; r < 4; ++r) EXPECT_EQ(placed[0].ranks[r].rank(), r);

  // 4 stages x 2 data ranks on workers of 3 and 5 slots: the larger takes pipeline 0 whole and
  // pipeline 1's first stage; the smaller the rest of pipeline 1.
  ASSERT_THAT(s.Enqueue("deep", 0, 8, 2, v1::JOB_DEVICE_CPU, 4), IsOk());
  placed = s.Schedule(Cpu({{"x", {0, 1, 2}}, {"y", {0, 1, 2, 3, 4}}}));
  ASSERT_EQ(placed.size(), 1u);
  // rank = stage * 2 + data rank: data rank 0 is ranks 0, 2, 4, 6; data rank 1 is 1, 3, 5, 7.
  EXPECT_THAT(Where(placed[0]),
              ElementsAre("y:0", "y:4", "y:1", "x:0", "y:2", "x:1", "y:3", "x:2"));

  EXPECT_THAT(s.Enqueue("bad", 0, 6, 3, v1::JOB_DEVICE_CPU, 4),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not divide")));
}

TEST(SchedulerTest, TiesGoToTheSmallerWorkerIdAndLowSlotsFirst) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("three", 0, 3, 1), IsOk());
  ASSERT_THAT(s.Enqueue("two", 0, 2, 2), IsOk());
  // Free slots need not be contiguous or sorted; duplicates count once.
  std::vector<Placement> placed = s.Schedule(Cpu({{"y", {7, 2, 5, 5}}, {"x", {3, 1, 0}}}));
  ASSERT_EQ(placed.size(), 2u);
  EXPECT_THAT(Where(placed[0]), ElementsAre("x:0", "x:1", "x:3"));
  // x is full now; y has the most free slots.
  EXPECT_THAT(Where(placed[1]), ElementsAre("y:2", "y:5"));
}

TEST(SchedulerTest, SeveralJobsInOneCallNeverShareASlot) {
  Scheduler s;
  for (int i = 0; i < 4; ++i) {
    ASSERT_THAT(s.Enqueue("j" + std::to_string(i), 0, 3, i), IsOk());
  }
  std::vector<Placement> placed = s.Schedule(Cpu({{"w1", {0, 1, 2, 3}}, {"w2", {0, 1, 2, 3, 4}}}));
  ASSERT_EQ(placed.size(), 3u);
  EXPECT_THAT(Where(placed[0]), ElementsAre("w2:0", "w2:1", "w2:2"));
  EXPECT_THAT(Where(placed[1]), ElementsAre("w1:0", "w1:1", "w1:2"));
  // One left on w1, two on w2: w2 first, then w1.
  EXPECT_THAT(Where(placed[2]), ElementsAre("w2:3", "w2:4", "w1:3"));
  EXPECT_THAT(s.PendingIds(), ElementsAre("j3"));
}

TEST(SchedulerTest, NothingToDo) {
  Scheduler s;
  EXPECT_THAT(s.Schedule(Cpu({{"w1", {0}}})), IsEmpty());
  ASSERT_THAT(s.Enqueue("a", 0, 1, 1), IsOk());
  EXPECT_THAT(s.Schedule(Cpu({})), IsEmpty());
  EXPECT_THAT(s.Schedule(Cpu({{"w1", {}}})), IsEmpty());
  EXPECT_EQ(s.size(), 1u);
}

// A worker with `gpus` GPU slots (0..gpus-1) and `cpus` CPU slots after them; `busy` slots hold
// ranks already.
WorkerSlots Mixed(int gpus, int cpus, std::set<int> busy = {}) {
  WorkerSlots w;
  w.gpu = gpus;
  w.cpu = cpus;
  for (int s = 0; s < gpus + cpus; ++s) {
    if (busy.count(s) > 0) continue;
    (s < gpus ? w.free_gpu : w.free_cpu).push_back(s);
  }
  return w;
}

std::set<v1::SlotKind> Kinds(const Placement& p) {
  std::set<v1::SlotKind> kinds;
  for (const v1::RankAssignment& r : p.ranks) kinds.insert(r.slot_kind());
  return kinds;
}

TEST(SchedulerDeviceTest, CudaJobsTakeGpuSlotsOnly) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("gpu", 0, 3, 1, v1::JOB_DEVICE_CUDA), IsOk());
  // Plenty of CPU slots, two free GPUs of four: it waits.
  std::map<std::string, WorkerSlots> cluster = {{"a", Mixed(2, 8)}, {"b", Mixed(2, 0, {0, 1})}};
  EXPECT_THAT(s.Schedule(cluster), IsEmpty());
  EXPECT_EQ(s.QueueReason("gpu"), "needs 3 GPU slots; 4 registered (2 free)");
  // A GPU of b frees up: one rank per GPU, the fuller worker first.
  cluster["b"] = Mixed(2, 0, {0});
  std::vector<Placement> placed = s.Schedule(cluster);
  ASSERT_EQ(placed.size(), 1u);
  EXPECT_THAT(Where(placed[0]), ElementsAre("a:0", "a:1", "b:1"));
  EXPECT_THAT(Kinds(placed[0]), ElementsAre(v1::SLOT_KIND_GPU));
  EXPECT_EQ(s.QueueReason("gpu"), "");
}

TEST(SchedulerDeviceTest, CpuJobsTakeCpuSlotsOnly) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("cpu", 0, 2, 1, v1::JOB_DEVICE_CPU), IsOk());
  EXPECT_THAT(s.Schedule({{"g", Mixed(4, 3, {5, 6})}}), IsEmpty());
  EXPECT_EQ(s.QueueReason("cpu"), "needs 2 CPU slots; 3 registered (1 free)");
  std::vector<Placement> placed = s.Schedule({{"g", Mixed(4, 3, {6})}});
  ASSERT_EQ(placed.size(), 1u);
  // The CPU slots follow the GPU slots.
  EXPECT_THAT(Where(placed[0]), ElementsAre("g:4", "g:5"));
  EXPECT_THAT(Kinds(placed[0]), ElementsAre(v1::SLOT_KIND_CPU));
}

TEST(SchedulerDeviceTest, AutoPrefersGpusWhenTheWholeGangFitsThere) {
  Scheduler s;
  ASSERT_THAT(s.Enqueue("fits-gpus", 0, 2, 1), IsOk());  // JOB_DEVICE_AUTO by default
  ASSERT_THAT(s.Enqueue("too-big-for-gpus", 0, 3, 2, v1::JOB_DEVICE_AUTO), IsOk());
  ASSERT_THAT(s.Enqueue("old-record", 0, 1, 3, v1::JOB_DEVICE_UNSPECIFIED), IsOk());
  std::vector<Placement> placed = s.Schedule({{"g", Mixed(3, 4)}});
  ASSERT_EQ(placed.size(), 3u);
  EXPECT_THAT(Where(placed[0]), ElementsAre("g:0", "g:1"));
  EXPECT_THAT(Kinds(placed[0]), ElementsAre(v1::SLOT_KIND_GPU));
  // One GPU left: never part GPU, part CPU.
  EXPECT_THAT(Where(placed[1]), ElementsAre("g:3", "g:4", "g:5"));
  EXPECT_THAT(Kinds(placed[1]), ElementsAre(v1::SLOT_KIND_CPU));
  // Unspecified is auto: the last GPU.
  EXPECT_THAT(Where(placed[2]), ElementsAre("g:2"));
  EXPECT_THAT(Kinds(placed[2]), ElementsAre(v1::SLOT_KIND_GPU));
}

TEST(SchedulerDeviceTest, AGangIsNeverSplitAcrossKinds) {
  for (bool backfill : {false, true}) {
    SCOPED_TRACE(backfill);
    Scheduler s(SchedulerOptions{backfill});
    ASSERT_THAT(s.Enqueue("auto", 0, 4, 1, v1::JOB_DEVICE_AUTO), IsOk());
    ASSERT_THAT(s.Enqueue("cuda", 0, 4, 2, v1::JOB_DEVICE_CUDA), IsOk());
    ASSERT_THAT(s.Enqueue("cpu", 0, 4, 3, v1::JOB_DEVICE_CPU), IsOk());
    // 2 GPU and 2 CPU slots on each of two workers: 4 of each kind.
    std::vector<Placement> placed = s.Schedule({{"a", Mixed(2, 2)}, {"b", Mixed(2, 2)}});
    ASSERT_EQ(placed.size(), backfill ? 2u : 1u);
    EXPECT_EQ(placed[0].job_id, "auto");
    EXPECT_THAT(Where(placed[0]), ElementsAre("a:0", "a:1", "b:0", "b:1"));
    for (const Placement& p : placed) EXPECT_EQ(Kinds(p).size(), 1u) << p.job_id;
    // The cuda job finds no GPU left; the strict queue holds the cpu job behind it.
    EXPECT_EQ(s.QueueReason("cuda"), "needs 4 GPU slots; 4 registered (0 free)");
    if (backfill) {
      EXPECT_THAT(Where(placed[1]), ElementsAre("a:2", "a:3", "b:2", "b:3"));
      EXPECT_THAT(Kinds(placed[1]), ElementsAre(v1::SLOT_KIND_CPU));
      EXPECT_THAT(s.PendingIds(), ElementsAre("cuda"));
    } else {
      EXPECT_THAT(s.PendingIds(), ElementsAre("cuda", "cpu"));
      EXPECT_EQ(s.QueueReason("cpu"),
                "behind job \"cuda\", which is first in the queue and does not fit (strict "
                "queue order)");
    }
  }
  // 2 free GPU and 2 free CPU slots hold no 4-rank gang of either kind.
  Scheduler s;
  ASSERT_THAT(s.Enqueue("four", 0, 4, 1), IsOk());
  EXPECT_THAT(s.Schedule({{"a", Mixed(2, 2)}}), IsEmpty());
  EXPECT_EQ(s.QueueReason("four"),
            "needs 4 GPU slots or 4 CPU slots (job.device auto); GPU: 2 registered (2 free), CPU: "
            "2 registered (2 free); more than the cluster has: it waits for workers to join");
}

TEST(SchedulerDeviceTest, QueueReasons) {
  Scheduler s(SchedulerOptions{/*backfill=*/true});
  ASSERT_THAT(s.Enqueue("never", 2, 4, 1, v1::JOB_DEVICE_CUDA), IsOk());
  ASSERT_THAT(s.Enqueue("auto", 1, 6, 2, v1::JOB_DEVICE_AUTO), IsOk());
  ASSERT_THAT(s.Enqueue("one-cpu", 0, 1, 3, v1::JOB_DEVICE_CPU), IsOk());
  EXPECT_EQ(s.QueueReason("never"), "") << "no Schedule has seen it yet";
  EXPECT_THAT(s.Schedule({{"a", Mixed(2, 3, {3})}}),
              ElementsAre(::testing::Field(&Placement::job_id, "one-cpu")));
  EXPECT_EQ(s.QueueReason("never"),
            "needs 4 GPU slots; 2 registered (2 free); more than the cluster has: it waits for "
            "workers to join");
  EXPECT_EQ(s.QueueReason("auto"),
            "needs 6 GPU slots or 6 CPU slots (job.device auto); GPU: 2 registered (2 free), CPU: "
            "3 registered (1 free); more than the cluster has: it waits for workers to join");
  EXPECT_EQ(s.QueueReason("one-cpu"), "");
  // With nothing registered at all.
  EXPECT_THAT(s.Schedule({}), IsEmpty());
  EXPECT_EQ(s.QueueReason("never"),
            "needs 4 GPU slots; 0 registered (0 free); more than the cluster has: it waits for "
            "workers to join");
  ASSERT_THAT(s.Enqueue("single", 0, 1, 4, v1::JOB_DEVICE_CUDA), IsOk());
  EXPECT_THAT(s.Schedule({{"c", Mixed(0, 1, {0})}}), IsEmpty());
  EXPECT_EQ(s.QueueReason("single"),
            "needs 1 GPU slot; 0 registered (0 free); more than the cluster has: it waits for "
            "workers to join");
  // A cancelled job has no reason any more.
  EXPECT_TRUE(s.Remove("never"));
  EXPECT_EQ(s.QueueReason("never"), "");
}

// Random clusters and jobs over many rounds against a model of which slots are busy. Every round
// checks: each placement has exactly world_size distinct slots, all free before the call and not
// handed to another job; ranks are 0..world_size-1, consecutive per worker, on the fewest
// workers possible; jobs are placed in queue order under the policy (strict: a prefix of the
// queue, stopping at a head that does not fit; backfill: every job passed over did not fit).
class RandomRounds {
 public:
  RandomRounds(bool backfill, uint32_t seed)
      : backfill_(backfill), rng_(seed), s_(SchedulerOptions{backfill}) {}

  void Run() {
    for (int round = 0; round < 1000; ++round) {
      SCOPED_TRACE(::testing::Message() << "round " << round);
      ChangeCluster();
      ASSERT_NO_FATAL_FAILURE(ChangeJobs());

      int total_free = 0;
      const FreeSlots free = Free(&total_free);
      const std::vector<std::string> before = s_.PendingIds();
      ASSERT_EQ(before.size(), world_sizes_.size());

      const std::vector<Placement> placed = s_.Schedule(Cpu(free));

      ASSERT_NO_FATAL_FAILURE(CheckRound(before, free, placed, total_free));
    }
    EXPECT_GT(placements_, 100);
  }

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  void EndJob(const std::string& job) {
    for (const auto& ws : running_[job]) busy_.erase(ws);
    running_.erase(job);
  }

  // Workers join, and now and then one is lost with its jobs.
  void ChangeCluster() {
    if (worker_slots_.size() < 3 || Uniform(0, 9) == 0) {
      worker_slots_["w" + std::to_string(next_worker_++)] = Uniform(1, 8);
    }
    if (worker_slots_.size() > 3 && Uniform(0, 14) == 0) {
      auto victim = std::next(worker_slots_.begin(), Uniform(0, worker_slots_.size() - 1));
      std::vector<std::string> hit;
      for (const auto& [job, slots] : running_) {
        for (const auto& ws : slots) {
          if (ws.first == victim->first) hit.push_back(job);
        }
      }
      for (const std::string& job : hit) {
        if (running_.count(job) > 0) EndJob(job);
      }
      worker_slots_.erase(victim);
    }
  }

  // Jobs arrive, finish and get cancelled.
  void ChangeJobs() {
    for (int n = Uniform(0, 2); n > 0; --n) {
      const std::string job = "job-" + std::to_string(next_job_++);
      const int world = Uniform(0, 5) == 0 ? Uniform(9, 24) : Uniform(1, 8);
      ASSERT_THAT(s_.Enqueue(job, Uniform(0, 3), world, seq_++), IsOk());
      world_sizes_[job] = world;
    }
    if (!running_.empty() && Uniform(0, 1) == 0) {
      EndJob(std::next(running_.begin(), Uniform(0, running_.size() - 1))->first);
    }
    if (!world_sizes_.empty() && Uniform(0, 19) == 0) {
      auto it = std::next(world_sizes_.begin(), Uniform(0, world_sizes_.size() - 1));
      ASSERT_TRUE(s_.Remove(it->first));
      world_sizes_.erase(it);
    }
  }

  // Every worker's free slots, in random order; their count in *total.
  FreeSlots Free(int* total) {
    FreeSlots free;
    for (const auto& [worker, slots] : worker_slots_) {
      std::vector<int>& f = free[worker];
      for (int slot = 0; slot < slots; ++slot) {
        if (busy_.count({worker, slot}) == 0) f.push_back(slot);
      }
      std::shuffle(f.begin(), f.end(), rng_);
      *total += static_cast<int>(f.size());
    }
    return free;
  }

  // Queue order under the policy, replayed against a running count of free slots.
  void CheckRound(const std::vector<std::string>& before, const FreeSlots& free,
                  const std::vector<Placement>& placed, int total_free) {
    std::map<std::string, int> remaining;
    for (const auto& [worker, f] : free) remaining[worker] = static_cast<int>(f.size());
    size_t next_placed = 0;
    std::vector<std::string> left;
    bool blocked = false;
    for (const std::string& job : before) {
      const int world = world_sizes_.at(job);
      if (next_placed < placed.size() && placed[next_placed].job_id == job) {
        ASSERT_FALSE(blocked) << job << " was placed behind a head that did not fit";
        ASSERT_NO_FATAL_FAILURE(CheckPlacement(job, world, placed[next_placed++], &remaining));
        total_free -= world;
        world_sizes_.erase(job);
        ++placements_;
      } else {
        // Behind a blocking head nothing starts; otherwise a job is passed over only when it
        // does not fit.
        if (!blocked) {
          ASSERT_GT(world, total_free) << job << " fits but was not placed";
        }
        if (!backfill_) blocked = true;
        left.push_back(job);
      }
    }
    ASSERT_EQ(next_placed, placed.size()) << "a placement out of queue order";
    ASSERT_EQ(s_.PendingIds(), left);
    int capacity = 0;
    for (const auto& [worker, slots] : worker_slots_) capacity += slots;
    ASSERT_EQ(total_free, capacity - static_cast<int>(busy_.size()));
  }

  // One placement of `job`, made with `remaining` free slots per worker; books its slots.
  void CheckPlacement(const std::string& job, int world, const Placement& p,
                      std::map<std::string, int>* remaining) {
    ASSERT_EQ(static_cast<int>(p.ranks.size()), world) << job;
    // Fewest workers: the k largest free counts are needed anyway.
    std::vector<int> counts;
    for (const auto& [worker, n] : *remaining) counts.push_back(n);
    std::sort(counts.rbegin(), counts.rend());
    int fewest = 0;
    int covered = 0;
    while (covered < world) covered += counts[fewest++];
    std::set<std::string> used_workers;
    std::string previous_worker;
    for (int r = 0; r < world; ++r) {
      const v1::RankAssignment& a = p.ranks[r];
      ASSERT_EQ(a.rank(), r);
      const std::pair<std::string, int> ws{a.worker_id(), a.slot()};
      ASSERT_EQ(worker_slots_.count(a.worker_id()), 1u) << a.worker_id();
      ASSERT_GE(a.slot(), 0);
      ASSERT_LT(a.slot(), worker_slots_.at(a.worker_id()));
      ASSERT_EQ(busy_.count(ws), 0u) << "slot double-booked: " << a.worker_id() << ":" << a.slot();
      busy_.insert(ws);
      running_[job].push_back(ws);
      // Consecutive ranks per worker: once the placement leaves a worker it never returns.
      if (a.worker_id() != previous_worker) {
        ASSERT_TRUE(used_workers.insert(a.worker_id()).second)
            << job << " returns to " << a.worker_id();
        previous_worker = a.worker_id();
      }
      --(*remaining)[a.worker_id()];
    }
    ASSERT_EQ(static_cast<int>(used_workers.size()), fewest) << job;
  }

  const bool backfill_;
  std::mt19937 rng_;
  Scheduler s_;
  std::map<std::string, int> worker_slots_;                                  // worker -> slot count
  std::set<std::pair<std::string, int>> busy_;                               // (worker, slot)
  std::map<std::string, std::vector<std::pair<std::string, int>>> running_;  // job -> its slots
  std::map<std::string, int> world_sizes_;  // queued job -> world size
  uint64_t seq_ = 0;
  int next_worker_ = 0;
  int next_job_ = 0;
  int placements_ = 0;
};

void CheckRandomRounds(bool backfill, uint32_t seed) { RandomRounds(backfill, seed).Run(); }

TEST(SchedulerPropertyTest, StrictRandomRounds) { CheckRandomRounds(/*backfill=*/false, 1); }
TEST(SchedulerPropertyTest, StrictRandomRoundsOtherSeed) {
  CheckRandomRounds(/*backfill=*/false, 20240917);
}
TEST(SchedulerPropertyTest, BackfillRandomRounds) { CheckRandomRounds(/*backfill=*/true, 7); }

}  // namespace
}  // namespace dstrain::coordinator
