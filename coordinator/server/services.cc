#include "coordinator/server/services.h"

#include "common/grpc/grpc_status.h"
#include "coordinator/auth/authorizer.h"

namespace dstrain::coordinator {
namespace {

// Runs `call` (returning absl::StatusOr<Response>), stores the response, times the RPC.
template <typename Response, typename Call>
grpc::Status Unary(RpcMetrics* metrics, const char* method, Response* out, Call call) {
  RpcTimer timer(metrics, method);
  auto result = call();
  timer.set_code(result.status().code());
  if (!result.ok()) return ToGrpcStatus(result.status());
  *out = *std::move(result);
  return grpc::Status::OK;
}

template <typename Call>
grpc::Status UnaryStatus(RpcMetrics* metrics, const char* method, Call call) {
  RpcTimer timer(metrics, method);
  const absl::Status status = call();
  timer.set_code(status.code());
  return ToGrpcStatus(status);
}

Caller Who(grpc::ServerContext* context, const TokenTable* tokens) {
  return CallerOf(*context, tokens);
}

}  // namespace

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* context,
                                       const v1::SubmitJobRequest* request,
                                       v1::SubmitJobResponse* response) {
  return Unary(metrics_, "SubmitJob", response,
               [&] { return c_->SubmitJob(*request, Who(context, tokens_)); });
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                    v1::GetJobResponse* response) {
  return Unary(metrics_, "GetJob", response,
               [&] { return c_->GetJob(*request, Who(context, tokens_)); });
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context,
                                      const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  return Unary(metrics_, "ListJobs", response,
               [&] { return c_->ListJobs(*request, Who(context, tokens_)); });
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const v1::CancelJobRequest* request,
                                       v1::CancelJobResponse* response) {
  return Unary(metrics_, "CancelJob", response,
               [&] { return c_->CancelJob(*request, Who(context, tokens_)); });
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context,
                                      const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::WatchJobResponse>* writer) {
  return ToGrpcStatus(c_->WatchJob(
      *request, [writer](const v1::WatchJobResponse& r) { return writer->Write(r); },
      [context] { return context->IsCancelled(); }, Who(context, tokens_)));
}

grpc::Status JobServiceImpl::GetJobLogs(grpc::ServerContext* context,
                                        const v1::GetJobLogsRequest* request,
                                        grpc::ServerWriter<v1::GetJobLogsResponse>* writer) {
  return ToGrpcStatus(c_->GetJobLogs(
      *request, [writer](const v1::GetJobLogsResponse& r) { return writer->Write(r); },
      [context] { return context->IsCancelled(); }, Who(context, tokens_)));
}

grpc::Status JobServiceImpl::DeleteJob(grpc::ServerContext* context,
                                       const v1::DeleteJobRequest* request,
                                       v1::DeleteJobResponse*) {
  return UnaryStatus(metrics_, "DeleteJob",
                     [&] { return c_->DeleteJob(*request, Who(context, tokens_)); });
}

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* context,
                                               const v1::RegisterWorkerRequest* request,
                                               v1::RegisterWorkerResponse* response) {
  return Unary(metrics_, "RegisterWorker", response,
               [&] { return c_->RegisterWorker(*request, Who(context, tokens_)); });
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  return Unary(metrics_, "Heartbeat", response,
               [&] { return c_->Heartbeat(*request, Who(context, tokens_)); });
}

grpc::Status WorkerServiceImpl::StreamAssignments(
    grpc::ServerContext* context, const v1::StreamAssignmentsRequest* request,
    grpc::ServerWriter<v1::StreamAssignmentsResponse>* writer) {
  return ToGrpcStatus(c_->StreamAssignments(
      *request, [writer](const v1::StreamAssignmentsResponse& r) { return writer->Write(r); },
      [context] { return context->IsCancelled(); }, Who(context, tokens_)));
}

grpc::Status WorkerServiceImpl::ReportStatus(grpc::ServerContext* context,
                                             const v1::ReportStatusRequest* request,
                                             v1::ReportStatusResponse*) {
  return UnaryStatus(metrics_, "ReportStatus",
                     [&] { return c_->ReportStatus(*request, Who(context, tokens_)); });
}

grpc::Status WorkerServiceImpl::ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                                            v1::ListWorkersResponse* response) {
  RpcTimer timer(metrics_, "ListWorkers");
  *response = c_->ListWorkers();
  return grpc::Status::OK;
}

grpc::Status CheckpointServiceImpl::RegisterShard(grpc::ServerContext* context,
                                                  const v1::RegisterShardRequest* request,
                                                  v1::RegisterShardResponse*) {
  return UnaryStatus(metrics_, "RegisterShard",
                     [&] { return c_->RegisterShard(*request, Who(context, tokens_)); });
}

grpc::Status CheckpointServiceImpl::CommitCheckpoint(grpc::ServerContext* context,
                                                     const v1::CommitCheckpointRequest* request,
                                                     v1::CommitCheckpointResponse* response) {
  return Unary(metrics_, "CommitCheckpoint", response,
               [&] { return c_->CommitCheckpoint(*request, Who(context, tokens_)); });
}

grpc::Status CheckpointServiceImpl::ListCheckpoints(grpc::ServerContext* context,
                                                    const v1::ListCheckpointsRequest* request,
                                                    v1::ListCheckpointsResponse* response) {
  return Unary(metrics_, "ListCheckpoints", response,
               [&] { return c_->ListCheckpoints(*request, Who(context, tokens_)); });
}

}  // namespace dstrain::coordinator
