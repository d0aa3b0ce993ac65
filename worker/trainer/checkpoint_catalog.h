// Service mode: rank 0 tells the coordinator's checkpoint catalog (CheckpointService) about every
// checkpoint it committed, so `dstrain checkpoints JOB` lists them. Called only after the commit
// protocol finished: the catalog then records the shards and marks the checkpoint COMMITTED, the
// protocol's last step (docs/checkpoints.md, "The commit protocol"). Loading reads the file
// system, not the catalog.
//
// Recording runs on a thread of its own, in order, and retries while the coordinator is away
// (a transient error as common/retry classifies it, such as a coordinator restart) so training
// never waits on it; other errors are logged and the record is dropped. Flush() at the end of
// training waits, bounded, for the last records to land.
#pragma once

#include <grpcpp/security/credentials.h>

#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/checkpoint.grpc.pb.h"
#include "worker/checkpoint/commit.h"

namespace dstrain::trainer {

class CheckpointCatalog {
 public:
  // `coordinator` is HOST:PORT, reached with `credentials`; each RPC gets `rpc_timeout`. Problems
  // are written to `log`.
  CheckpointCatalog(const std::string& coordinator,
                    std::shared_ptr<grpc::ChannelCredentials> credentials, std::string job_id,
                    std::FILE* log, absl::Duration rpc_timeout = absl::Seconds(10));
  ~CheckpointCatalog();  // Flush(0): records not sent by then are given up

  // Queues the committed checkpoint in `dir` (described by `manifest`): every shard registered,
  // then the checkpoint committed in the catalog.
  void Record(const std::string& dir, const checkpoint::CheckpointManifest& manifest);
  // Waits until every queued record landed or `timeout` passed; false on timeout.
  bool Flush(absl::Duration timeout);

 private:
  struct Item {
    std::string dir;
    checkpoint::CheckpointManifest manifest;
  };
  void Loop();
  // One attempt at one record: OK, a transient error, or another one.
  absl::Status Send(const Item& item);

  const std::string coordinator_;
  const std::string job_id_;
  std::FILE* const log_;
  const absl::Duration rpc_timeout_;
  std::unique_ptr<v1::CheckpointService::Stub> stub_;

  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // the front item is being sent
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace dstrain::trainer
