#include "coordinator/registry/worker_registry.h"

#include <algorithm>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc/proto_time.h"
#include "common/status/status_macros.h"

namespace dstrain::coordinator {
namespace {

constexpr size_t kMaxIdLength = 63;

// The id as it appears in error messages: quoted, and cut short when it is absurdly long (it came
// from the network).
std::string Quoted(absl::string_view id) {
  if (id.size() > kMaxIdLength + 1) {
    return absl::StrCat("\"", id.substr(0, kMaxIdLength), "...\"");
  }
  return absl::StrCat("\"", id, "\"");
}

bool SameRank(const v1::RankStatus& a, const v1::RankStatus& b) {
  return a.job_id() == b.job_id() && a.attempt() == b.attempt() && a.rank() == b.rank();
}

bool IsLive(v1::RankState state) {
  return state == v1::RANK_STATE_STARTING || state == v1::RANK_STATE_RUNNING;
}

void SortBySlot(v1::Worker* worker) {
  auto* ranks = worker->mutable_ranks();
  std::sort(ranks->pointer_begin(), ranks->pointer_end(),
            [](const v1::RankStatus* a, const v1::RankStatus* b) { return a->slot() < b->slot(); });
}

}  // namespace

absl::Status ValidateRegistryOptions(const RegistryOptions& options) {
  if (options.lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease must be > 0, got ", absl::FormatDuration(options.lease)));
  }
  if (options.heartbeat_interval <= absl::ZeroDuration() ||
      options.heartbeat_interval >= options.lease) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heartbeat_interval must be > 0 and < lease (", absl::FormatDuration(options.lease),
        "), got ", absl::FormatDuration(options.heartbeat_interval)));
  }
  return absl::OkStatus();
}

bool IsValidId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength) return false;
  if (id[0] < 'a' || id[0] > 'z') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

absl::Status ValidateRegisterRequest(const v1::RegisterWorkerRequest& request) {
  if (!IsValidId(request.worker_id())) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker_id ", Quoted(request.worker_id()),
                     ": must be 1 to 63 characters of [a-z0-9-] starting with a letter"));
  }
  if (request.cpu_slots() < 0 || request.cpu_slots() > kMaxSlotsPerWorker) {
    return absl::InvalidArgumentError(absl::StrCat("cpu_slots must be in [0, ", kMaxSlotsPerWorker,
                                                   "], got ", request.cpu_slots()));
  }
  const int n = request.gpus_size();
  if (n == 0 && request.cpu_slots() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu_slots must be >= 1 on a worker without gpus, got ", request.cpu_slots()));
  }
  if (n + request.cpu_slots() > kMaxSlotsPerWorker) {
    return absl::InvalidArgumentError(absl::StrCat("gpus: ", n, " gpus and ", request.cpu_slots(),
                                                   " cpu_slots are more than ", kMaxSlotsPerWorker,
                                                   " slots per worker"));
  }
  // GPU i is slot i, so the indices must be exactly 0..n-1.
  std::vector<bool> seen(n, false);
  for (int i = 0; i < n; ++i) {
    const v1::GpuInfo& gpu = request.gpus(i);
    const std::string field = absl::StrCat("gpus[", i, "]");
    const int32_t index = gpu.index();
    if (index < 0 || index >= n || seen[index]) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".index ", index, ": the indices of ",
                                                     n, " gpus must be 0..", n - 1, ", each once"));
    }
    seen[index] = true;
    if (gpu.memory_bytes() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".memory_bytes must be >= 0, got ", gpu.memory_bytes()));
    }
    if (gpu.name().size() > kMaxGpuNameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".name: at most ", kMaxGpuNameBytes, " bytes"));
    }
    if (gpu.uuid().size() > kMaxGpuUuidBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".uuid: at most ", kMaxGpuUuidBytes, " bytes"));
    }
  }
  return absl::OkStatus();
}

int SlotCount(const v1::Worker& worker) { return worker.gpus_size() + worker.cpu_slots(); }

v1::SlotKind SlotKindOf(const v1::Worker& worker, int slot) {
  return slot < worker.gpus_size() ? v1::SLOT_KIND_GPU : v1::SLOT_KIND_CPU;
}

WorkerRegistry::WorkerRegistry(const Clock* clock, RegistryOptions options)
    : clock_(clock), options_(options) {
  DT_CHECK(clock_ != nullptr);
  DT_CHECK(ValidateRegistryOptions(options_).ok());
}

absl::StatusOr<RegisterResult> WorkerRegistry::Register(const v1::RegisterWorkerRequest& request) {
  DT_RETURN_IF_ERROR(ValidateRegisterRequest(request));
  const absl::Time now = clock_->Now();

  v1::Worker worker;
  worker.set_worker_id(request.worker_id());
  worker.set_hostname(request.hostname());
  worker.set_cpu_slots(request.cpu_slots());
  *worker.mutable_gpus() = request.gpus();
  *worker.mutable_labels() = request.labels();
  worker.set_metrics_address(request.metrics_address());
  worker.set_version(request.version());
  worker.set_state(v1::WORKER_STATE_READY);
  *worker.mutable_register_time() = ToTimestamp(now);
  *worker.mutable_last_heartbeat_time() = ToTimestamp(now);
  *worker.mutable_lease_expire_time() = ToTimestamp(now + options_.lease);

  RegisterResult result;
  auto it = workers_.find(request.worker_id());
  if (it != workers_.end()) {
    result.replaced = true;
    result.lost_ranks.assign(it->second.ranks().begin(), it->second.ranks().end());
    it->second = worker;
  } else {
    workers_.emplace(request.worker_id(), worker);
  }
  result.worker = std::move(worker);
  return result;
}

absl::StatusOr<HeartbeatResult> WorkerRegistry::Heartbeat(const v1::HeartbeatRequest& request) {
  auto it = workers_.find(request.worker_id());
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker ", Quoted(request.worker_id()), " is not registered"));
  }
  v1::Worker& worker = it->second;
  if (worker.state() != v1::WORKER_STATE_READY) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", Quoted(request.worker_id()), " lost its lease (it expired at ",
                     absl::FormatTime(FromTimestamp(worker.lease_expire_time())),
                     ") and its ranks were released; it must register again"));
  }
  const absl::Time now = clock_->Now();
  *worker.mutable_last_heartbeat_time() = ToTimestamp(now);
  *worker.mutable_lease_expire_time() = ToTimestamp(now + options_.lease);

  HeartbeatResult result;
  result.lease_expire_time = now + options_.lease;
  for (const v1::RankStatus& reported : request.ranks()) {
    auto placed = std::find_if(worker.mutable_ranks()->begin(), worker.mutable_ranks()->end(),
                               [&](const v1::RankStatus& r) { return SameRank(r, reported); });
    if (placed != worker.mutable_ranks()->end()) {
      if (reported.state() != v1::RANK_STATE_UNSPECIFIED) placed->set_state(reported.state());
    } else if (IsLive(reported.state())) {
      result.strays.push_back(reported);
    }
  }
  return result;
}

std::vector<LostWorker> WorkerRegistry::ExpireLeases() {
  const absl::Time now = clock_->Now();
  std::vector<LostWorker> lost;
  for (auto& [id, worker] : workers_) {
    if (worker.state() != v1::WORKER_STATE_READY) continue;
    if (now < FromTimestamp(worker.lease_expire_time())) continue;
    worker.set_state(v1::WORKER_STATE_LOST);
    LostWorker entry;
    entry.ranks.assign(worker.ranks().begin(), worker.ranks().end());
    worker.clear_ranks();
    entry.worker = worker;
    lost.push_back(std::move(entry));
  }
  return lost;
}

std::map<std::string, WorkerSlots> WorkerRegistry::FreeSlots() const {
  std::map<std::string, WorkerSlots> out;
  for (const auto& [id, worker] : workers_) {
    if (worker.state() != v1::WORKER_STATE_READY) continue;
    std::vector<bool> taken(SlotCount(worker), false);
    for (const v1::RankStatus& r : worker.ranks()) taken[r.slot()] = true;
    WorkerSlots& slots = out[id];
    slots.gpu = worker.gpus_size();
    slots.cpu = worker.cpu_slots();
    for (int s = 0; s < static_cast<int>(taken.size()); ++s) {
      if (taken[s]) continue;
      (SlotKindOf(worker, s) == v1::SLOT_KIND_GPU ? slots.free_gpu : slots.free_cpu).push_back(s);
    }
  }
  return out;
}

absl::Status WorkerRegistry::Assign(absl::string_view worker_id, int slot, absl::string_view job_id,
                                    int32_t attempt, int32_t rank) {
  if (job_id.empty() || attempt < 0 || rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot assign job ", Quoted(job_id), " attempt ", attempt, " rank ", rank));
  }
  auto it = workers_.find(std::string(worker_id));
  if (it == workers_.end()) {
    return absl::NotFoundError(absl::StrCat("worker ", Quoted(worker_id), " is not registered"));
  }
  v1::Worker& worker = it->second;
  if (worker.state() != v1::WORKER_STATE_READY) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", Quoted(worker_id), " is LOST and takes no ranks"));
  }
  if (slot < 0 || slot >= SlotCount(worker)) {
    return absl::OutOfRangeError(absl::StrCat("slot ", slot, " of worker ", Quoted(worker_id),
                                              ": it has ", SlotCount(worker), " slots"));
  }
  for (const v1::RankStatus& r : worker.ranks()) {
    if (r.slot() == slot) {
      return absl::AlreadyExistsError(absl::StrCat("slot ", slot, " of worker ", Quoted(worker_id),
                                                   " already runs job ", Quoted(r.job_id()),
                                                   " attempt ", r.attempt(), " rank ", r.rank()));
    }
  }
  v1::RankStatus placed;
  placed.set_job_id(std::string(job_id));
  placed.set_attempt(attempt);
  placed.set_rank(rank);
  placed.set_slot(slot);
  placed.set_state(v1::RANK_STATE_STARTING);
  for (const auto& [other_id, other] : workers_) {
    for (const v1::RankStatus& r : other.ranks()) {
      if (SameRank(r, placed)) {
        return absl::AlreadyExistsError(absl::StrCat("job ", Quoted(job_id), " attempt ", attempt,
                                                     " rank ", rank, " already runs on worker ",
                                                     Quoted(other_id), " slot ", r.slot()));
      }
    }
  }
  *worker.add_ranks() = std::move(placed);
  SortBySlot(&worker);
  return absl::OkStatus();
}

std::vector<PlacedRank> WorkerRegistry::ReleaseJob(absl::string_view job_id, int32_t attempt) {
  std::vector<PlacedRank> released;
  for (auto& [id, worker] : workers_) {
    auto* ranks = worker.mutable_ranks();
    int keep = 0;
    for (int i = 0; i < ranks->size(); ++i) {
      const v1::RankStatus& r = ranks->Get(i);
      if (r.job_id() == job_id && r.attempt() == attempt) {
        released.push_back(PlacedRank{id, r});
      } else {
        // Compaction by swaps keeps the kept ranks in slot order.
        if (keep != i) ranks->SwapElements(keep, i);
        ++keep;
      }
    }
    ranks->DeleteSubrange(keep, ranks->size() - keep);
  }
  std::sort(released.begin(), released.end(),
            [](const PlacedRank& a, const PlacedRank& b) { return a.rank.rank() < b.rank.rank(); });
  return released;
}

std::vector<PlacedRank> WorkerRegistry::RanksOf(absl::string_view job_id) const {
  std::vector<PlacedRank> out;
  for (const auto& [id, worker] : workers_) {
    for (const v1::RankStatus& r : worker.ranks()) {
      if (r.job_id() == job_id) out.push_back(PlacedRank{id, r});
    }
  }
  std::sort(out.begin(), out.end(), [](const PlacedRank& a, const PlacedRank& b) {
    return std::make_pair(a.rank.attempt(), a.rank.rank()) <
           std::make_pair(b.rank.attempt(), b.rank.rank());
  });
  return out;
}

absl::Status WorkerRegistry::Restore(std::vector<v1::Worker> workers) {
  const absl::Time now = clock_->Now();
  std::map<std::string, v1::Worker> restored;
  std::set<std::tuple<std::string, int32_t, int32_t>> placed;
  for (v1::Worker& worker : workers) {
    const std::string id = worker.worker_id();
    auto invalid = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat("restoring worker ", Quoted(id), ": ", what));
    };
    if (!IsValidId(id)) return invalid("invalid worker_id");
    if (restored.count(id) > 0) return invalid("worker_id appears twice");
    if (worker.state() != v1::WORKER_STATE_READY && worker.state() != v1::WORKER_STATE_LOST) {
      return invalid(absl::StrCat("state ", v1::WorkerState_Name(worker.state())));
    }
    const int slots = SlotCount(worker);
    if (slots < 1 || slots > kMaxSlotsPerWorker) {
      return invalid(absl::StrCat(slots, " slots"));
    }
    if (worker.state() == v1::WORKER_STATE_LOST && !worker.ranks().empty()) {
      return invalid("a LOST worker holds ranks");
    }
    std::vector<bool> taken(slots, false);
    for (const v1::RankStatus& r : worker.ranks()) {
      if (r.slot() < 0 || r.slot() >= slots) {
        return invalid(absl::StrCat("rank in slot ", r.slot(), " of ", slots));
      }
      if (taken[r.slot()]) return invalid(absl::StrCat("two ranks in slot ", r.slot()));
      taken[r.slot()] = true;
      if (!placed.emplace(r.job_id(), r.attempt(), r.rank()).second) {
        return invalid(absl::StrCat("job ", Quoted(r.job_id()), " attempt ", r.attempt(), " rank ",
                                    r.rank(), " is placed twice"));
      }
    }
    if (worker.state() == v1::WORKER_STATE_READY) {
      *worker.mutable_lease_expire_time() = ToTimestamp(now + options_.lease);
    }
    SortBySlot(&worker);
    restored.emplace(id, std::move(worker));
  }
  workers_ = std::move(restored);
  return absl::OkStatus();
}

const v1::Worker* WorkerRegistry::Find(absl::string_view worker_id) const {
  auto it = workers_.find(std::string(worker_id));
  return it == workers_.end() ? nullptr : &it->second;
}

std::vector<v1::Worker> WorkerRegistry::List() const {
  std::vector<v1::Worker> out;
  out.reserve(workers_.size());
  for (const auto& [id, worker] : workers_) out.push_back(worker);
  return out;
}

RegistryCounts WorkerRegistry::Counts(const std::set<std::string>& not_free) const {
  RegistryCounts counts;
  for (const auto& [id, worker] : workers_) {
    if (worker.state() == v1::WORKER_STATE_READY) {
      ++counts.ready;
      counts.total_slots += SlotCount(worker);
      counts.total_gpu_slots += worker.gpus_size();
      if (not_free.count(id) > 0) continue;
      counts.free_slots += SlotCount(worker) - worker.ranks_size();
      counts.free_gpu_slots += worker.gpus_size();
      for (const v1::RankStatus& r : worker.ranks()) {
        if (SlotKindOf(worker, r.slot()) == v1::SLOT_KIND_GPU) --counts.free_gpu_slots;
      }
    } else {
      ++counts.lost;
    }
  }
  return counts;
}

}  // namespace dstrain::coordinator
