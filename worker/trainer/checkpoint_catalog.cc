#include "worker/trainer/checkpoint_catalog.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc/grpc_status.h"
#include "common/status/status_macros.h"
#include "worker/env/env.h"

namespace dstrain::trainer {

CheckpointCatalog::CheckpointCatalog(const std::string& coordinator, std::string job_id,
                                     absl::Duration rpc_timeout)
    : coordinator_(coordinator),
      job_id_(std::move(job_id)),
      rpc_timeout_(rpc_timeout),
      stub_(v1::CheckpointService::NewStub(
          grpc::CreateChannel(coordinator, grpc::InsecureChannelCredentials()))) {}

absl::Status CheckpointCatalog::Record(const std::string& dir, const CheckpointManifest& manifest) {
  for (size_t rank = 0; rank < manifest.shards.size(); ++rank) {
    const ShardRecord& shard = manifest.shards[rank];
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + rpc_timeout_));
    v1::RegisterShardRequest request;
    request.set_job_id(job_id_);
    request.set_tag(manifest.tag);
    request.set_step(manifest.step);
    request.set_rank(static_cast<int32_t>(rank));  // shards are listed in rank order
    request.set_path(JoinPath(dir, shard.name));
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
  request.set_manifest_path(JoinPath(dir, std::string(kManifestName)));
  v1::CommitCheckpointResponse response;
  return FromGrpcStatus(
      stub_->CommitCheckpoint(&context, request, &response),
      absl::StrCat("catalog CommitCheckpoint ", manifest.tag, " at ", coordinator_));
}

}  // namespace dstrain::trainer
