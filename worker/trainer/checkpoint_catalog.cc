#include "worker/trainer/checkpoint_catalog.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/clock/clock.h"
#include "common/grpc/grpc_status.h"
#include "common/retry/retry.h"
#include "common/status/status_macros.h"
#include "worker/env/env.h"

namespace dstrain::trainer {
namespace {

// A record waits for a restarting coordinator without a deadline (training never waits on it;
// the destructor stops it), tried again at least every 2 s so it lands soon after the restart.
retry::RetryOptions CatalogRetry() {
  retry::RetryOptions options;
  options.backoff.initial = absl::Milliseconds(100);
  options.backoff.max = absl::Seconds(2);
  return options;
}

// Waits on the catalog's mutex, so that stopping the catalog ends a wait at once.
class StopSleeper final : public retry::Sleeper {
 public:
  StopSleeper(absl::Mutex* mu, const bool* stop) : mu_(mu), stop_(stop) {}
  bool Sleep(absl::Duration d) override {
    absl::MutexLock lock(mu_);
    return !mu_->AwaitWithTimeout(absl::Condition(stop_), d);
  }

 private:
  absl::Mutex* const mu_;
  const bool* const stop_;
};

}  // namespace

CheckpointCatalog::CheckpointCatalog(const std::string& coordinator,
                                     std::shared_ptr<grpc::ChannelCredentials> credentials,
                                     std::string job_id, std::FILE* log, absl::Duration rpc_timeout)
    : coordinator_(coordinator),
      job_id_(std::move(job_id)),
      log_(log),
      rpc_timeout_(rpc_timeout),
      stub_(
          v1::CheckpointService::NewStub(grpc::CreateChannel(coordinator, std::move(credentials)))),
      thread_([this] { Loop(); }) {}

CheckpointCatalog::~CheckpointCatalog() {
  Flush(absl::ZeroDuration());
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void CheckpointCatalog::Record(const std::string& dir,
                               const checkpoint::CheckpointManifest& manifest) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(Item{dir, manifest});
}

bool CheckpointCatalog::Flush(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && !busy_; };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

void CheckpointCatalog::Loop() {
  StopSleeper sleeper(&mu_, &stop_);
  while (true) {
    Item item;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](CheckpointCatalog* c)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return c->stop_ || !c->queue_.empty(); },
          this));
      if (stop_) return;
      item = queue_.front();
      busy_ = true;
    }
    // While the coordinator is restarting or unreachable, the same record again, a little later.
    const absl::Status sent =
        retry::Retry(CatalogRetry(), *RealClock::Default(), sleeper, [&] { return Send(item); });
    // Still transient: the catalog stopped while waiting, and the record is given up.
    if (retry::IsTransient(sent)) return;
    if (!sent.ok()) absl::FPrintF(log_, "warning: %s\n", sent.message());
    absl::MutexLock lock(&mu_);
    queue_.pop_front();
    busy_ = false;
  }
}

absl::Status CheckpointCatalog::Send(const Item& item) {
  const checkpoint::CheckpointManifest& manifest = item.manifest;
  for (size_t rank = 0; rank < manifest.shards.size(); ++rank) {
    const checkpoint::ShardRecord& shard = manifest.shards[rank];
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + rpc_timeout_));
    v1::RegisterShardRequest request;
    request.set_job_id(job_id_);
    request.set_tag(manifest.tag);
    request.set_step(manifest.step);
    request.set_rank(static_cast<int32_t>(rank));  // shards are listed in rank order
    request.set_path(env::JoinPath(item.dir, shard.name));
    request.set_bytes(static_cast<int64_t>(shard.bytes));
    request.set_crc32c(shard.crc32c);
    v1::RegisterShardResponse response;
    DT_RETURN_IF_ERROR(FromGrpcStatus(stub_->RegisterShard(&context, request, &response),
                                      absl::StrCat("catalog RegisterShard ", manifest.tag, "/",
                                                   shard.name, " at ", coordinator_)));
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + rpc_timeout_));
  v1::CommitCheckpointRequest request;
  request.set_job_id(job_id_);
  request.set_tag(manifest.tag);
  request.set_step(manifest.step);
  request.set_manifest_path(env::JoinPath(item.dir, std::string(checkpoint::kManifestName)));
  v1::CommitCheckpointResponse response;
  return FromGrpcStatus(
      stub_->CommitCheckpoint(&context, request, &response),
      absl::StrCat("catalog CommitCheckpoint ", manifest.tag, " at ", coordinator_));
}

}  // namespace dstrain::trainer
