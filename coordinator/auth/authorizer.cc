#include "coordinator/auth/authorizer.h"

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/tls/tls.h"

namespace dstrain::coordinator {
namespace {

const std::map<std::string, Rule, std::less<>>& Rules() {
  static const auto* rules = new std::map<std::string, Rule, std::less<>>{
      {"/grpc.health.v1.Health/Check", Rule::kAnyone},
      {"/grpc.health.v1.Health/Watch", Rule::kAnyone},
      // People and tools, by role; which job is theirs the Coordinator decides.
      {"/dstrain.v1.JobService/SubmitJob", Rule::kSubmitter},
      {"/dstrain.v1.JobService/GetJob", Rule::kAnyRole},
      {"/dstrain.v1.JobService/ListJobs", Rule::kAnyRole},
      {"/dstrain.v1.JobService/WatchJob", Rule::kAnyRole},
      {"/dstrain.v1.JobService/GetJobLogs", Rule::kAnyRole},
      {"/dstrain.v1.JobService/CancelJob", Rule::kSubmitter},
      {"/dstrain.v1.JobService/DeleteJob", Rule::kSubmitter},
      {"/dstrain.v1.WorkerService/ListWorkers", Rule::kWorkerOrAnyRole},
      {"/dstrain.v1.CheckpointService/ListCheckpoints", Rule::kWorkerOrAnyRole},
      // Workers and their trainers, by certificate; the store also wants the attempt's token.
      {"/dstrain.v1.WorkerService/RegisterWorker", Rule::kWorker},
      {"/dstrain.v1.WorkerService/Heartbeat", Rule::kWorker},
      {"/dstrain.v1.WorkerService/StreamAssignments", Rule::kWorker},
      {"/dstrain.v1.WorkerService/ReportStatus", Rule::kWorker},
      {"/dstrain.v1.CheckpointService/RegisterShard", Rule::kWorker},
      {"/dstrain.v1.CheckpointService/CommitCheckpoint", Rule::kWorker},
      {"/dstrain.v1.StoreService/Set", Rule::kWorker},
      {"/dstrain.v1.StoreService/Get", Rule::kWorker},
      {"/dstrain.v1.StoreService/Add", Rule::kWorker},
      {"/dstrain.v1.StoreService/CompareSet", Rule::kWorker},
      {"/dstrain.v1.StoreService/Wait", Rule::kWorker},
      {"/dstrain.v1.StoreService/Delete", Rule::kWorker},
  };
  return *rules;
}

std::string View(grpc::string_ref s) { return std::string(s.data(), s.size()); }

}  // namespace

const Rule* RuleFor(absl::string_view method) {
  auto it = Rules().find(method);
  return it == Rules().end() ? nullptr : &it->second;
}

absl::StatusOr<Caller> Identify(const TokenTable& tokens,
                                const std::vector<absl::string_view>& authorization,
                                const grpc::AuthContext& context) {
  Caller caller;
  caller.worker = tls::PeerWorkerId(context);
  if (authorization.empty()) return caller;
  // One header only: with two, a check and a handler could each read a different one.
  if (authorization.size() > 1) {
    return absl::UnauthenticatedError("more than one authorization header");
  }
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(authorization[0], kBearer)) {
    return absl::UnauthenticatedError("the authorization header must be 'Bearer <token>'");
  }
  const TokenTable::Entry* entry = tokens.Find(authorization[0].substr(kBearer.size()));
  if (entry == nullptr) return absl::UnauthenticatedError("the bearer token is not known");
  caller.principal = entry->principal;
  caller.roles = entry->roles;
  return caller;
}

grpc::Status Authorizer::Process(const InputMetadata& metadata, grpc::AuthContext* context,
                                 OutputMetadata*, OutputMetadata*) {
  std::string method;
  std::vector<absl::string_view> authorization;
  for (const auto& [key, value] : metadata) {
    if (key == ":path") method = View(value);
    if (key == "authorization") authorization.emplace_back(value.data(), value.size());
  }
  const Rule* rule = RuleFor(method);
  if (rule == nullptr) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("no access rule for method ", method));
  }
  if (*rule == Rule::kAnyone) return grpc::Status::OK;

  absl::StatusOr<Caller> caller = Identify(*tokens_, authorization, *context);
  if (!caller.ok()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(caller.status().message()));
  }
  const bool worker = !caller->worker.empty();
  if (*rule == Rule::kWorker || (*rule == Rule::kWorkerOrAnyRole && worker)) {
    if (worker) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(method,
                                     " is for workers: present a client certificate "
                                     "(CN worker:<id>) signed by the coordinator's CA"));
  }
  if (caller->principal.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(method, " needs a bearer token (DSTRAIN_TOKEN)"));
  }
  if (*rule == Rule::kSubmitter && (caller->roles & (kSubmitter | kAdmin)) == 0) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat(method, " needs role submitter or admin; ", caller->principal,
                                     " has ", RoleNames(caller->roles)));
  }
  return grpc::Status::OK;
}

Caller CallerOf(const grpc::ServerContext& context, const TokenTable* tokens) {
  if (tokens == nullptr) return Caller::Trusted();
  std::vector<absl::string_view> authorization;
  const auto [begin, end] = context.client_metadata().equal_range("authorization");
  for (auto it = begin; it != end; ++it) {
    authorization.emplace_back(it->second.data(), it->second.size());
  }
  // The Authorizer admitted the call with the same inputs, so this does not fail; if it did, the
  // call goes on as no one (refused by every check that needs someone).
  absl::StatusOr<Caller> caller = Identify(*tokens, authorization, *context.auth_context());
  return caller.ok() ? *std::move(caller) : Caller();
}

}  // namespace dstrain::coordinator
