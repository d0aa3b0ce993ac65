// Service mode: rank 0 tells the coordinator's checkpoint catalog (CheckpointService) about every
// checkpoint it committed, so `dstrain checkpoints JOB` and restarts know them without reading
// the file system. Called only after the commit protocol finished: the catalog then records the
// shards and marks the checkpoint COMMITTED (DESIGN.md §5: ... rename → fsync dir → catalog).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "proto/checkpoint.grpc.pb.h"
#include "worker/checkpoint/commit.h"

namespace dstrain::trainer {

class CheckpointCatalog {
 public:
  // `coordinator` is HOST:PORT; each RPC gets `rpc_timeout`.
  CheckpointCatalog(const std::string& coordinator, std::string job_id,
                    absl::Duration rpc_timeout = absl::Seconds(30));

  // Registers every shard of the committed checkpoint in `dir` (described by `manifest`), then
  // commits it in the catalog.
  absl::Status Record(const std::string& dir, const CheckpointManifest& manifest);

 private:
  const std::string coordinator_;
  const std::string job_id_;
  const absl::Duration rpc_timeout_;
  std::unique_ptr<v1::CheckpointService::Stub> stub_;
};

}  // namespace dstrain::trainer
