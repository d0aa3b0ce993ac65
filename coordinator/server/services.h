// The gRPC face of the Coordinator: JobService, WorkerService and CheckpointService as thin
// adapters (request → Coordinator call → response, absl::Status → gRPC status). StoreService is
// coordinator/store's. Each handler's latency is observed in RpcMetrics.
//
// `tokens`: the token table of the Authorizer that runs on the port (TLS, docs/security.md); each
// call reaches the Coordinator with the Caller it admitted. Null (an --insecure coordinator,
// tests) makes every caller Caller::Trusted().
#pragma once

#include "coordinator/auth/token_table.h"
#include "coordinator/server/coordinator.h"
#include "coordinator/server/rpc_metrics.h"
#include "proto/checkpoint.grpc.pb.h"
#include "proto/job.grpc.pb.h"
#include "proto/worker.grpc.pb.h"

namespace dstrain::coordinator {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(Coordinator* c, RpcMetrics* metrics, const TokenTable* tokens = nullptr)
      : c_(c), metrics_(metrics), tokens_(tokens) {}
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest*,
                         v1::SubmitJobResponse*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::GetJobResponse*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*,
                        v1::ListJobsResponse*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*,
                         v1::CancelJobResponse*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*,
                        grpc::ServerWriter<v1::WatchJobResponse>*) override;
  grpc::Status GetJobLogs(grpc::ServerContext*, const v1::GetJobLogsRequest*,
                          grpc::ServerWriter<v1::GetJobLogsResponse>*) override;
  grpc::Status DeleteJob(grpc::ServerContext*, const v1::DeleteJobRequest*,
                         v1::DeleteJobResponse*) override;

 private:
  Coordinator* const c_;
  RpcMetrics* const metrics_;
  const TokenTable* const tokens_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Coordinator* c, RpcMetrics* metrics, const TokenTable* tokens = nullptr)
      : c_(c), metrics_(metrics), tokens_(tokens) {}
  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest*,
                              v1::RegisterWorkerResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::Status StreamAssignments(grpc::ServerContext*, const v1::StreamAssignmentsRequest*,
                                 grpc::ServerWriter<v1::StreamAssignmentsResponse>*) override;
  grpc::Status ReportStatus(grpc::ServerContext*, const v1::ReportStatusRequest*,
                            v1::ReportStatusResponse*) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                           v1::ListWorkersResponse*) override;

 private:
  Coordinator* const c_;
  RpcMetrics* const metrics_;
  const TokenTable* const tokens_;
};

class CheckpointServiceImpl final : public v1::CheckpointService::Service {
 public:
  CheckpointServiceImpl(Coordinator* c, RpcMetrics* metrics, const TokenTable* tokens = nullptr)
      : c_(c), metrics_(metrics), tokens_(tokens) {}
  grpc::Status RegisterShard(grpc::ServerContext*, const v1::RegisterShardRequest*,
                             v1::RegisterShardResponse*) override;
  grpc::Status CommitCheckpoint(grpc::ServerContext*, const v1::CommitCheckpointRequest*,
                                v1::CommitCheckpointResponse*) override;
  grpc::Status ListCheckpoints(grpc::ServerContext*, const v1::ListCheckpointsRequest*,
                               v1::ListCheckpointsResponse*) override;

 private:
  Coordinator* const c_;
  RpcMetrics* const metrics_;
  const TokenTable* const tokens_;
};

}  // namespace dstrain::coordinator
