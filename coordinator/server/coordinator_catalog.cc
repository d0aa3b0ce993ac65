// Coordinator: CheckpointService (docs/wire-api.md, "CheckpointService"): the checkpoint catalog,
// with shards registered per rank, commits once every shard is in, and job.keep_last retention.
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc/proto_time.h"
#include "common/status/status_macros.h"
#include "coordinator/server/coordinator.h"
#include "coordinator/server/coordinator_internal.h"

namespace dstrain::coordinator {
namespace {

// A job's catalog is written by its leading trainer, for every rank's shard: the caller must be
// trusted or a worker that holds a rank of the job's current attempt (PERMISSION_DENIED).
absl::Status HoldsARank(const v1::Job& job, const Caller& caller) {
  if (caller.trusted || internal::HoldsARank(job, caller.worker)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("job ", job.job_id(), ": ", caller.Describe(),
                                                  " holds no rank of its current attempt"));
}

}  // namespace

absl::Status Coordinator::RegisterShard(const v1::RegisterShardRequest& request,
                                        const Caller& caller) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) {
      return internal::NoSuchJob(request.job_id());
    }
    DT_RETURN_IF_ERROR(HoldsARank(it->second.job, caller));
    if (request.rank() < 0 || request.rank() >= it->second.job.world_size()) {
      return absl::InvalidArgumentError(absl::StrCat("rank: ", request.rank(), " outside [0, ",
                                                     it->second.job.world_size(), ")"));
    }
  }
  v1::ShardInfo shard;
  shard.set_rank(request.rank());
  shard.set_path(request.path());
  shard.set_bytes(request.bytes());
  shard.set_crc32c(request.crc32c());
  return state_->RegisterShard(request.job_id(), request.tag(), request.step(), shard);
}

absl::StatusOr<v1::CommitCheckpointResponse> Coordinator::CommitCheckpoint(
    const v1::CommitCheckpointRequest& request, const Caller& caller) {
  int world = 0, keep_last = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) {
      return internal::NoSuchJob(request.job_id());
    }
    DT_RETURN_IF_ERROR(HoldsARank(it->second.job, caller));
    world = it->second.job.world_size();
    keep_last = it->second.keep_last;
  }
  // Committed only when every rank's shard is recorded (the shard count is the world size the
  // checkpoint was written at, which a resharded restart may differ from).
  DT_ASSIGN_OR_RETURN(std::vector<v1::Checkpoint> all, state_->ListCheckpoints(request.job_id()));
  for (const v1::Checkpoint& c : all) {
    if (c.tag() == request.tag() && c.shards_size() != world) {
      return absl::FailedPreconditionError(absl::StrCat("checkpoint ", request.tag(), " has ",
                                                        c.shards_size(), " of ", world,
                                                        " shards registered"));
    }
  }
  std::string dir = request.manifest_path();
  if (const size_t slash = dir.rfind('/'); slash != std::string::npos) dir.resize(slash);
  DT_ASSIGN_OR_RETURN(v1::Checkpoint committed,
                      state_->CommitCheckpoint(request.job_id(), request.tag(), request.step(), dir,
                                               clock_->Now()));
  // Retention as the trainer's (job.keep_last): the catalog lists what is on disk. Older
  // records go, committed beyond the newest keep_last and pending ones older than this commit
  // (saves that never finished).
  if (keep_last > 0) {
    DT_ASSIGN_OR_RETURN(std::vector<v1::Checkpoint> now, state_->ListCheckpoints(request.job_id()));
    int newer_committed = 0;
    for (auto it = now.rbegin(); it != now.rend(); ++it) {  // newest first
      const bool committed_one = it->state() == v1::CHECKPOINT_STATE_COMMITTED;
      const bool keep =
          committed_one ? ++newer_committed <= keep_last : it->step() >= committed.step();
      if (!keep) DT_RETURN_IF_ERROR(state_->DeleteCheckpoint(request.job_id(), it->tag()));
    }
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it != jobs_.end() && committed.step() >= it->second.last_checkpoint_step) {
      it->second.last_checkpoint_step = committed.step();
      it->second.last_checkpoint_time = FromTimestamp(committed.commit_time());
    }
  }
  v1::CommitCheckpointResponse response;
  *response.mutable_checkpoint() = std::move(committed);
  return response;
}

absl::StatusOr<v1::ListCheckpointsResponse> Coordinator::ListCheckpoints(
    const v1::ListCheckpointsRequest& request, const Caller& caller) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) return internal::NoSuchJob(request.job_id());
    DT_RETURN_IF_ERROR(caller.worker.empty()
                           ? caller.MaySee(request.job_id(), it->second.job.owner())
                           : HoldsARank(it->second.job, caller));
  }
  DT_ASSIGN_OR_RETURN(std::vector<v1::Checkpoint> all, state_->ListCheckpoints(request.job_id()));
  v1::ListCheckpointsResponse response;
  for (v1::Checkpoint& c : all) *response.add_checkpoints() = std::move(c);
  return response;
}

}  // namespace dstrain::coordinator
