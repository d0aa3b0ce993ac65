// The scheduler and the worker registry driven the way the server drives them, under one lock:
// registry.FreeSlots() -> scheduler.Schedule() -> registry.Assign() for every rank, with jobs
// finishing (ReleaseJob), workers lost (ExpireLeases) and agents restarting (Register) in
// between. Workers offer GPU slots, CPU slots or both, and jobs ask for cuda, cpu or auto. Every
// Assign must succeed: a placement the scheduler returns is always applicable, on slots of the
// one kind the job may take.
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/clock/clock.h"
#include "common/status/status_matchers.h"
#include "coordinator/registry/worker_registry.h"
#include "coordinator/scheduler/scheduler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;

TEST(SchedulerRegistryTest, PlacementsAlwaysApplyToTheRegistry) {
  FakeClock clock;
  WorkerRegistry registry(&clock, RegistryOptions{absl::Seconds(10), absl::Seconds(2)});
  Scheduler scheduler;
  std::mt19937 rng(42);
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  std::map<std::string, int> attempt_of;   // running job -> attempt
  std::map<std::string, int> world_of;     // job -> world size
  std::map<std::string, uint64_t> seq_of;  // job -> submit seq
  std::map<std::string, int> attempts;     // job -> gang schedulings so far
  std::map<std::string, v1::JobDevice> device_of;
  uint64_t seq = 0;
  int placed_jobs = 0;
  std::map<v1::SlotKind, int> placed_on;  // ranks placed, by slot kind
  int restarts = 0;

  // A lost rank fails its attempt: the rest of the gang is released and the job queued again
  // with its original seq (the server's RESTARTING path).
  auto restart = [&](const std::string& job) {
    auto it = attempt_of.find(job);
    if (it == attempt_of.end()) return;
    registry.ReleaseJob(job, it->second);
    attempt_of.erase(it);
    ASSERT_THAT(scheduler.Enqueue(job, 0, world_of[job], seq_of[job], device_of[job]), IsOk());
    ++restarts;
  };

  for (int round = 0; round < 1000; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    clock.Advance(absl::Seconds(1));
    // Agents register (or restart, losing their ranks) and most heartbeat.
    const std::string worker = "w" + std::to_string(uniform(0, 7));
    if (uniform(0, 5) == 0) {
      v1::RegisterWorkerRequest request;
      request.set_worker_id(worker);
      const int gpus = uniform(0, 3);
      request.set_cpu_slots(uniform(gpus > 0 ? 0 : 1, 6));
      for (int i = 0; i < gpus; ++i) request.add_gpus()->set_index(i);
      auto result = registry.Register(request);
      ASSERT_THAT(result, IsOk());
      std::set<std::string> jobs;
      for (const v1::RankStatus& r : result->lost_ranks) jobs.insert(r.job_id());
      for (const std::string& job : jobs) restart(job);
    }
    for (const v1::Worker& w : registry.List()) {
      if (w.state() == v1::WORKER_STATE_READY && uniform(0, 14) != 0) {
        v1::HeartbeatRequest beat;
        beat.set_worker_id(w.worker_id());
        ASSERT_THAT(registry.Heartbeat(beat), IsOk());
      }
    }
    for (const LostWorker& lost : registry.ExpireLeases()) {
      std::set<std::string> jobs;
      for (const v1::RankStatus& r : lost.ranks) jobs.insert(r.job_id());
      for (const std::string& job : jobs) restart(job);
    }
    // Jobs arrive and finish.
    if (uniform(0, 1) == 0) {
      const std::string job = "job-" + std::to_string(seq);
      world_of[job] = uniform(1, 10);
      seq_of[job] = seq;
      device_of[job] = static_cast<v1::JobDevice>(uniform(0, 3));
      ASSERT_THAT(scheduler.Enqueue(job, uniform(0, 2), world_of[job], seq++, device_of[job]),
                  IsOk());
    }
    if (!attempt_of.empty() && uniform(0, 2) == 0) {
      auto it = std::next(attempt_of.begin(), uniform(0, attempt_of.size() - 1));
      EXPECT_EQ(static_cast<int>(registry.ReleaseJob(it->first, it->second).size()),
                world_of[it->first]);
      attempt_of.erase(it);
    }

    for (const Placement& p : scheduler.Schedule(registry.FreeSlots())) {
      const int attempt = ++attempts[p.job_id];
      const v1::SlotKind kind = p.ranks.front().slot_kind();
      const v1::JobDevice device = device_of[p.job_id];
      if (device == v1::JOB_DEVICE_CUDA) {
        ASSERT_EQ(kind, v1::SLOT_KIND_GPU) << p.job_id;
      } else if (device == v1::JOB_DEVICE_CPU) {
        ASSERT_EQ(kind, v1::SLOT_KIND_CPU) << p.job_id;
      }
      for (const v1::RankAssignment& a : p.ranks) {
        ASSERT_EQ(a.slot_kind(), kind) << p.job_id << " is split across kinds";
        ASSERT_THAT(registry.Assign(a.worker_id(), a.slot(), p.job_id, attempt, a.rank()), IsOk());
        ASSERT_EQ(SlotKindOf(*registry.Find(a.worker_id()), a.slot()), kind);
        ++placed_on[kind];
      }
      attempt_of[p.job_id] = attempt;
      ++placed_jobs;
      ASSERT_EQ(static_cast<int>(registry.RanksOf(p.job_id).size()), world_of[p.job_id]);
    }

    // The registry's slot accounting matches the jobs that run.
    int running_ranks = 0;
    for (const auto& [job, attempt] : attempt_of) running_ranks += world_of[job];
    const RegistryCounts counts = registry.Counts();
    ASSERT_EQ(counts.total_slots - counts.free_slots, running_ranks);
  }
  EXPECT_GT(placed_jobs, 100);
  EXPECT_GT(placed_on[v1::SLOT_KIND_GPU], 100);
  EXPECT_GT(placed_on[v1::SLOT_KIND_CPU], 100);
  EXPECT_GT(restarts, 0);
}

}  // namespace
}  // namespace dstrain::coordinator
