#include "coordinator/scheduler/scheduler.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dstrain::coordinator {
namespace {

using FreeMap = std::map<std::string, std::set<int>>;

// Takes world_size slots from `free` (which must hold at least that many): workers with the most
// free slots first, ties by worker_id, each filled lowest slot first with consecutive ranks.
std::vector<v1::RankAssignment> Pack(int world_size, FreeMap* free) {
  std::vector<std::pair<int, const std::string*>> order;
  for (const auto& [id, slots] : *free) {
    if (!slots.empty()) order.emplace_back(static_cast<int>(slots.size()), &id);
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first > b.first;
    return *a.second < *b.second;
  });
  std::vector<v1::RankAssignment> ranks;
  ranks.reserve(world_size);
  for (const auto& [count, id] : order) {
    std::set<int>& slots = (*free)[*id];
    while (!slots.empty() && static_cast<int>(ranks.size()) < world_size) {
      v1::RankAssignment& a = ranks.emplace_back();
      a.set_rank(static_cast<int32_t>(ranks.size() - 1));
      a.set_worker_id(*id);
      a.set_slot(*slots.begin());
      slots.erase(slots.begin());
    }
    if (static_cast<int>(ranks.size()) == world_size) break;
  }
  return ranks;
}

}  // namespace

absl::Status Scheduler::Enqueue(absl::string_view job_id, int32_t priority, int world_size,
                                uint64_t submit_seq) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is empty");
  if (world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("job \"", job_id, "\": world_size must be >= 1, got ", world_size));
  }
  Entry entry{priority, submit_seq, std::string(job_id), world_size};
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

std::vector<Placement> Scheduler::Schedule(
    const std::map<std::string, std::vector<int>>& free_slots) {
  FreeMap free;
  int64_t total = 0;
  for (const auto& [id, slots] : free_slots) {
    std::set<int>& s = free[id];
    s.insert(slots.begin(), slots.end());
    total += static_cast<int64_t>(s.size());
  }

  std::vector<Placement> placements;
  for (auto it = queue_.begin(); it != queue_.end() && total > 0;) {
    if (it->world_size > total) {
      if (!options_.backfill) break;  // Strict: the head blocks the jobs behind it.
      ++it;
      continue;
    }
    Placement placement;
    placement.job_id = it->job_id;
    placement.ranks = Pack(it->world_size, &free);
    total -= it->world_size;
    by_id_.erase(placement.job_id);
    it = queue_.erase(it);
    placements.push_back(std::move(placement));
  }
  return placements;
}

}  // namespace dstrain::coordinator
