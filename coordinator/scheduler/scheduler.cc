#include "coordinator/scheduler/scheduler.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dstrain::coordinator {
namespace {

// The free slots of one kind: worker_id -> its free slot numbers, with the counts the queue
// reasons quote.
struct Pool {
  v1::SlotKind kind;
  std::map<std::string, std::set<int>> free;
  int64_t free_count = 0;
  int64_t registered = 0;

  void Add(const std::string& worker_id, const std::vector<int>& slots, int total) {
    std::set<int>& s = free[worker_id];
    s.insert(slots.begin(), slots.end());
    free_count += static_cast<int64_t>(s.size());
    registered += total;
  }
};

const char* KindName(v1::SlotKind kind) { return kind == v1::SLOT_KIND_GPU ? "GPU" : "CPU"; }

std::string Slots(int64_t n, v1::SlotKind kind) {
  return absl::StrCat(n, " ", KindName(kind), n == 1 ? " slot" : " slots");
}

// "2 registered (1 free)".
std::string Capacity(const Pool& pool) {
  return absl::StrCat(pool.registered, " registered (", pool.free_count, " free)");
}

// The pools a job may take its gang from, in the order it prefers them.
std::vector<Pool*> Candidates(v1::JobDevice device, Pool* gpu, Pool* cpu) {
  switch (device) {
    case v1::JOB_DEVICE_CUDA:
      return {gpu};
    case v1::JOB_DEVICE_CPU:
      return {cpu};
    default:
      return {gpu, cpu};
  }
}

// Why a job of `world` ranks does not fit `pools` (its candidates): what it needs and what
// exists, and whether it could fit at all.
std::string Shortfall(int world, const std::vector<Pool*>& pools) {
  std::string out;
  if (pools.size() == 1) {
    out = absl::StrCat("needs ", Slots(world, pools[0]->kind), "; ", Capacity(*pools[0]));
  } else {
    out = absl::StrCat("needs ", Slots(world, pools[0]->kind), " or ", Slots(world, pools[1]->kind),
                       " (job.device auto); ", KindName(pools[0]->kind), ": ", Capacity(*pools[0]),
                       ", ", KindName(pools[1]->kind), ": ", Capacity(*pools[1]));
  }
  const bool never =
      std::all_of(pools.begin(), pools.end(), [&](const Pool* p) { return p->registered < world; });
  if (never) absl::StrAppend(&out, "; more than the cluster has: it waits for workers to join");
  return out;
}

// The order ranks take slots in (the header comment): rank order, or for S pipeline stages each
// pipeline's stages in turn (rank = stage · D + data rank).
std::vector<int> PlacementOrder(int world_size, int stages) {
  std::vector<int> order;
  order.reserve(world_size);
  const int D = world_size / stages;
  for (int d = 0; d < D; ++d) {
    for (int s = 0; s < stages; ++s) order.push_back(s * D + d);
  }
  return order;
}

// Takes world_size slots from `pool` (which must hold at least that many): workers with the most
// free slots first, ties by worker_id, each filled lowest slot first with ranks in placement
// order. Returns the assignments ordered by rank.
std::vector<v1::RankAssignment> Pack(int world_size, int stages, Pool* pool) {
  std::vector<std::pair<int, const std::string*>> order;
  for (const auto& [id, slots] : pool->free) {
    if (!slots.empty()) order.emplace_back(static_cast<int>(slots.size()), &id);
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first > b.first;
    return *a.second < *b.second;
  });
  const std::vector<int> rank_order = PlacementOrder(world_size, stages);
  std::vector<v1::RankAssignment> ranks(world_size);
  int placed = 0;
  for (const auto& [count, id] : order) {
    std::set<int>& slots = pool->free[*id];
    while (!slots.empty() && placed < world_size) {
      v1::RankAssignment& a = ranks[rank_order[placed++]];
      a.set_rank(rank_order[placed - 1]);
      a.set_worker_id(*id);
      a.set_slot(*slots.begin());
      a.set_slot_kind(pool->kind);
      slots.erase(slots.begin());
    }
    if (placed == world_size) break;
  }
  pool->free_count -= world_size;
  return ranks;
}

}  // namespace

absl::Status Scheduler::Enqueue(absl::string_view job_id, int32_t priority, int world_size,
                                uint64_t submit_seq, v1::JobDevice device, int pipeline_stages) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is empty");
  if (world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("job \"", job_id, "\": world_size must be >= 1, got ", world_size));
  }
  if (pipeline_stages < 1 || world_size % pipeline_stages != 0) {
    return absl::InvalidArgumentError(absl::StrCat("job \"", job_id, "\": pipeline_stages ",
                                                   pipeline_stages, " does not divide world_size ",
                                                   world_size));
  }
  Entry entry{priority, submit_seq, std::string(job_id), world_size, device, pipeline_stages};
  if (!by_id_.emplace(entry.job_id, entry).second) {
    return absl::AlreadyExistsError(absl::StrCat("job \"", job_id, "\" is already queued"));
  }
  queue_.insert(std::move(entry));
  return absl::OkStatus();
}

bool Scheduler::Remove(absl::string_view job_id) {
  auto it = by_id_.find(std::string(job_id));
  if (it == by_id_.end()) return false;
  queue_.erase(it->second);
  by_id_.erase(it);
  reasons_.erase(std::string(job_id));
  return true;
}

bool Scheduler::Contains(absl::string_view job_id) const {
  return by_id_.count(std::string(job_id)) > 0;
}

std::optional<int> Scheduler::Position(absl::string_view job_id) const {
  auto it = by_id_.find(std::string(job_id));
  if (it == by_id_.end()) return std::nullopt;
  return static_cast<int>(std::distance(queue_.begin(), queue_.find(it->second)));
}

std::vector<std::string> Scheduler::PendingIds() const {
  std::vector<std::string> ids;
  ids.reserve(queue_.size());
  for (const Entry& e : queue_) ids.push_back(e.job_id);
  return ids;
}

std::string Scheduler::QueueReason(absl::string_view job_id) const {
  auto it = reasons_.find(std::string(job_id));
  return it == reasons_.end() ? "" : it->second;
}

std::vector<Placement> Scheduler::Schedule(const std::map<std::string, WorkerSlots>& cluster) {
  Pool gpu{v1::SLOT_KIND_GPU};
  Pool cpu{v1::SLOT_KIND_CPU};
  for (const auto& [id, slots] : cluster) {
    gpu.Add(id, slots.free_gpu, slots.gpu);
    cpu.Add(id, slots.free_cpu, slots.cpu);
  }
  reasons_.clear();
  std::vector<Placement> placements;
  // Jobs that do not fit; their reasons quote the slots left once the round is over.
  std::vector<const Entry*> unfit;
  std::string blocker;  // strict: the first job that does not fit
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (!blocker.empty()) {
      reasons_[it->job_id] = absl::StrCat("behind job \"", blocker,
                                          "\", which is first in the queue and does not fit "
                                          "(strict queue order)");
      ++it;
      continue;
    }
    const std::vector<Pool*> pools = Candidates(it->device, &gpu, &cpu);
    const auto fits = std::find_if(pools.begin(), pools.end(),
                                   [&](const Pool* p) { return p->free_count >= it->world_size; });
    if (fits == pools.end()) {
      unfit.push_back(&*it);
      if (!options_.backfill) blocker = it->job_id;
      ++it;
      continue;
    }
    Placement placement;
    placement.job_id = it->job_id;
    placement.ranks = Pack(it->world_size, it->pipeline_stages, *fits);
    by_id_.erase(placement.job_id);
    it = queue_.erase(it);
    placements.push_back(std::move(placement));
  }
  for (const Entry* e : unfit) {
    reasons_[e->job_id] = Shortfall(e->world_size, Candidates(e->device, &gpu, &cpu));
  }
  return placements;
}

}  // namespace dstrain::coordinator
